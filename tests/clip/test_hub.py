"""Loading weights without a network: cached weights load offline, missing ones fail fast and say what to do."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip import hub
from dualpt_cli.clip.load import ModelSpec, _load_failure_message, _root_log_records

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_info_without_network_fails_fast_with_one_clean_line(tmp_path):
    """No HF_HUB_OFFLINE and a hub that cannot be reached: no minute of retries, no logger noise."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        HF_HOME=str(tmp_path / "hf"),
        HOME=str(tmp_path / "home"),
        COLUMNS="1000",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "dualpt_cli", "info", "--model", "ViT-B-16"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: the weights of ViT-B-16 (openai)"), proc.stderr
    for part in (
        "timm/vit_base_patch16_clip_224.openai",
        "cannot be reached",
        "dualpt info --model ViT-B-16",
        "--model local-dir:DIR",
        "--model ViT-B-16 --pretrained FILE",
    ):
        assert part in lines[0]
    assert proc.stdout == ""
    assert elapsed < 30, f"took {elapsed:.0f} s"  # huggingface_hub's retries alone take about 50 s


def test_offline_env_names_the_variable():
    result = runner.invoke(app, ["info", "--model", "ViT-B-16"])
    assert result.exit_code == 2
    assert "HF_HUB_OFFLINE is set" in result.output and "timm/vit_base_patch16_clip_224.openai" in result.output
    assert "ERROR" not in result.output and "Traceback" not in result.output


def test_hf_hub_model_offline_names_the_repository():
    result = runner.invoke(app, ["info", "--model", "hf-hub:someone/some-clip"])
    assert result.exit_code == 2
    assert (
        "repository someone/some-clip" in result.output
        and "dualpt info --model hf-hub:someone/some-clip" in result.output
    )


def test_cached_weights_without_network_load_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "cached", lambda download: True)
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.PROBE_TIMEOUT_S: False)
    hub.ensure_reachable(hub.Download(label="RN50 (openai)", retry="", repo_id="timm/resnet50_clip.openai"))
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_missing_weights_with_a_reachable_hub_go_ahead(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "cached", lambda download: False)
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.PROBE_TIMEOUT_S: True)
    hub.ensure_reachable(hub.Download(label="RN50 (openai)", retry="", repo_id="timm/resnet50_clip.openai"))


def test_reachable_probes_a_local_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not hub.reachable(f"http://127.0.0.1:{closed_port()}")
    assert not hub.reachable("not a url")


@pytest.mark.parametrize(("value", "offline"), [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_offline_by_env(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.offline_by_env() is offline


def test_long_upstream_errors_are_cut_between_words():
    message = _load_failure_message(ModelSpec("RN50"), RuntimeError("wordy " * 100))
    quoted = message.split(": ", 1)[1].split(" ...")[0]
    assert set(quoted.split()) == {"wordy"} and " ..." in message


def test_open_clip_root_logs_are_kept_not_printed(capsys):
    with _root_log_records() as records:
        logging.error("Failed to download weights")
    assert [r.getMessage() for r in records] == ["Failed to download weights"]
    assert "Failed" not in capsys.readouterr().err
