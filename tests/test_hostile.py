"""Regression suite of issue 12: what a deliberately hostile session found, each at the CLI where users meet it.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.load import ModelSpec, load_backbone, select_device
from dualpt_cli.core.project import Project
from dualpt_cli.data import images as data_mod
from dualpt_cli.describe import ask as describe_mod
from dualpt_cli.describe.ask import RetryPolicy
from dualpt_cli.errors import ModelLoadError
from dualpt_cli.promptfile.io import PROMPT_FORMAT, load_prompt_file, read_safetensors, write_safetensors
from imagegen import make_image_folder, write_corrupt_image
from llm_server import Reply
from tiny_models import build_tiny_model

runner = CliRunner()
KEY = "sk-hostile-SECRET-4242"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch, use_retry):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # the fake server is on 127.0.0.1
    use_retry(RetryPolicy(attempts=3, base=0.01, cap=0.02, retry_after_cap=1))


@pytest.fixture
def images(tmp_path):
    return make_image_folder(tmp_path / "images", per_class=4)


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def train(model: str, *args, images="images", project="proj"):
    return invoke(
        "train",
        images,
        "--model",
        model,
        "--pretrained",
        "",
        "--shots",
        "1",
        "--epochs",
        "1",
        "--aug-views",
        "1",
        "--batch-size",
        "4",
        "--ctx-len",
        "4",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--project",
        project,
        *args,
    )


def one_line_error(result, *words: str, code: int = 2) -> str:
    """The single error line of a failed command, checked for the exit code, no traceback and ``words``."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
# High 1: describe --force keeps earlier phrases until new ones replace them


def _described(fake, tmp_path, monkeypatch) -> tuple[Path, dict]:
    (tmp_path / "classes.txt").write_text("tiger\nzebra\n")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert invoke("describe", "classes.txt", "--provider", "openai", "--base-url", f"{fake.url}/v1").exit_code == 0
    path = tmp_path / "dualpt-project" / "descriptions.json"
    return path, json.loads(path.read_text())


def test_force_with_dead_server_keeps_phrases(fake, tmp_path, monkeypatch):
    path, before = _described(fake, tmp_path, monkeypatch)
    result = invoke(
        "describe",
        "classes.txt",
        "--force",
        "--provider",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{closed_port()}/v1",
    )
    one_line_error(result, "cannot connect")
    assert json.loads(path.read_text()) == before  # nothing lost


def test_force_with_failing_server_keeps_phrases(fake, tmp_path, monkeypatch):
    path, before = _described(fake, tmp_path, monkeypatch)
    fake.default = lambda cls: Reply(500)
    result = invoke("describe", "classes.txt", "--force", "--provider", "openai", "--base-url", f"{fake.url}/v1")
    one_line_error(result, "2 of 2 classes failed", code=1)
    assert "earlier phrases kept" in result.stdout
    assert json.loads(path.read_text()) == before


def test_force_interrupted_keeps_phrases(fake, tmp_path, monkeypatch):
    path, before = _described(fake, tmp_path, monkeypatch)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(describe_mod, "describe_class", ctrl_c)
    result = invoke("describe", "classes.txt", "--force", "--provider", "openai", "--base-url", f"{fake.url}/v1")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert json.loads(path.read_text()) == before


def test_force_replaces_class_by_class(fake, tmp_path, monkeypatch):
    path, _ = _described(fake, tmp_path, monkeypatch)
    fake.script("tiger", Reply(content="- orange fur\n- black stripes"))
    fake.default = lambda cls: Reply(500)
    result = invoke("describe", "classes.txt", "--force", "--provider", "openai", "--base-url", f"{fake.url}/v1")
    assert result.exit_code == 1
    entries = {e["folder"]: e for e in json.loads(path.read_text())["classes"]}
    assert entries["tiger"]["phrases"] == ["orange fur", "black stripes"]
    assert entries["zebra"]["status"] == "ok" and entries["zebra"]["phrases"]  # the old ones


# ---------------------------------------------------------------------------------------------------------
# High 2: non-finite options, diverging training, NaN prompt files


@pytest.mark.parametrize(
    "option, value", [("--lr", "inf"), ("--lr", "nan"), ("--alpha", "nan"), ("--lambda", "inf"), ("--beta", "nan")]
)
def test_non_finite_train_options(option, value, images, tiny_rn, tmp_path):
    one_line_error(train(tiny_rn, option, value), option, "finite")
    assert not (tmp_path / "proj").exists() or not (tmp_path / "proj" / "prompts.safetensors").exists()


def test_non_finite_describe_options(tmp_path):
    (tmp_path / "classes.txt").write_text("tiger\n")
    one_line_error(invoke("describe", "classes.txt", "--provider", "none", "--timeout", "inf"), "--timeout", "finite")
    result = invoke("describe", "classes.txt", "--provider", "none", "--temperature", "nan")  # refused by its range
    assert result.exit_code == 2 and "--temperature" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()


def test_diverging_training_stops_and_keeps_the_good_prompt_file(images, tiny_rn, tmp_path):
    assert train(tiny_rn).exit_code == 0
    good = (tmp_path / "proj" / "prompts.safetensors").read_bytes()
    result = train(tiny_rn, "--lr", "1e30", "--epochs", "3")
    one_line_error(result, "diverged", "--lr")
    assert (tmp_path / "proj" / "prompts.safetensors").read_bytes() == good
    ckpt = load_file(str(tmp_path / "proj" / "checkpoint" / "state.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in ckpt.values())  # the last good epoch, not a NaN one
    log = [json.loads(ln) for ln in (tmp_path / "proj" / "train_log.jsonl").read_text().splitlines()]
    assert all(rec["loss"] == rec["loss"] for rec in log)  # no NaN line


def test_nan_prompt_file_is_refused(prompts, test_images, tmp_path):
    tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    tensors["class_features"] = tensors["class_features"].clone()
    tensors["class_features"][0, 0, 0] = float("nan")
    write_safetensors(tmp_path / "nan.safetensors", tensors, PROMPT_FORMAT, meta)  # checksum is valid
    one_line_error(
        invoke("predict", test_images, "--prompt-file", tmp_path / "nan.safetensors", "--format", "jsonl"), "NaN"
    )
    one_line_error(invoke("eval", test_images, "--prompt-file", tmp_path / "nan.safetensors"), "NaN")


# ---------------------------------------------------------------------------------------------------------
# High 3: unreadable files are not drawn into the sample


def _truncated_png(path: Path) -> None:
    """A PNG whose header is fine but whose pixel data is cut off: passes the header check, fails to decode."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[:60])


def test_bad_files_are_replaced_in_the_sample(images, tiny_rn, tmp_path):
    for i in range(3):
        write_corrupt_image(images / "red" / f"bad_{i}.png")
    _truncated_png(images / "red" / "cut.png")
    bad = {"red/bad_0.png", "red/bad_1.png", "red/bad_2.png", "red/cut.png"}
    for seed in range(1, 7):
        result = train(tiny_rn, "--seed", seed)
        assert result.exit_code == 0, (seed, result.output)
        split = json.loads((tmp_path / "proj" / "split.json").read_text())
        assert len(split["train"]["red"]) == 1 and not bad & set(split["train"]["red"])
    result = train(tiny_rn, "--shots", "4", "--seed", "3", "--val-shots", "0")  # all 4 sampled go to training
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert len(split["train"]["red"]) == 4 and not bad & set(split["train"]["red"])


def test_class_with_only_bad_files(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=2)
    for p in (images / "red").iterdir():
        write_corrupt_image(p)
    one_line_error(train(tiny_rn), "'red'", "decoded")
    assert not (tmp_path / "proj" / "prompts.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------
# High 4: one writer per project


def test_second_writer_is_refused(images, tiny_rn, tmp_path):
    from dualpt_cli.core.project import project_lock

    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\n")
    project = Project(tmp_path / "proj")
    with project_lock(project, "train"):
        holder = json.loads(project.lock_file.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "train"
        one_line_error(train(tiny_rn), "in use", f"pid {os.getpid()}", "train")
        one_line_error(invoke("describe", "classes.txt", "--provider", "none", "--project", "proj"), "in use")
        assert sorted(p.name for p in project.root.iterdir()) == [".lock"]  # nothing else was written
    assert train(tiny_rn).exit_code == 0  # released


def test_stale_lock_is_taken_over(images, tiny_rn, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / ".lock").write_text(json.dumps({"pid": dead.pid, "command": "train"}))
    result = train(tiny_rn)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "proj" / ".lock").read_text() == ""  # released after the run


@pytest.mark.slow
def test_two_train_processes(images, tiny_rn, tmp_path):
    """A real second process: the first holds the project, the second exits 2 with one line."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    args = [
        sys.executable,
        "-m",
        "dualpt_cli",
        "train",
        "images",
        "--model",
        tiny_rn,
        "--pretrained",
        "",
        "--shots",
        "1",
        "--aug-views",
        "1",
        "--ctx-len",
        "4",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--project",
        "proj",
    ]
    first = subprocess.Popen([*args, "--epochs", "400"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / "proj" / ".lock"
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.exists() and str(first.pid) in lock.read_text()):
            time.sleep(0.2)
        assert str(first.pid) in lock.read_text()
        second = subprocess.run([*args, "--epochs", "1"], env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()
    result = train(tiny_rn)  # the killed holder's lock is stale: taken over
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------------------
# High 5: one decoder, one behaviour (malformed EXIF)


def _bad_exif_jpeg(path: Path) -> None:
    """A JPEG whose EXIF block makes PIL's exif_transpose raise struct.error."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "hello world description"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    data[data.find(b"Exif\x00\x00") + 6 + 11] = 0  # a tag number the writer cannot pack
    path.write_bytes(bytes(data))


def test_malformed_exif_is_skipped_everywhere(images, tiny_rn, tmp_path, prompts):
    _bad_exif_jpeg(images / "red" / "exif.jpg")
    result = train(tiny_rn, "--shots", "all")
    assert result.exit_code == 0, result.output
    assert "exif.jpg" in result.stderr and "EXIF" in result.stderr
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert "red/exif.jpg" not in split["train"]["red"] and len(split["train"]["red"]) == 4
    rows = invoke("predict", images / "red" / "exif.jpg", "--prompt-file", prompts, "--format", "jsonl")
    assert rows.exit_code == 1 and "EXIF" in json.loads(rows.stdout)["error"]


# ---------------------------------------------------------------------------------------------------------
# High 6: two folders, one prompt name


def test_duplicate_prompt_names_are_refused(images, tiny_rn, tmp_path):
    (images / "blue").rename(images / "blue_square")
    (tmp_path / "classes.txt").write_text("red: blue square\ngreen\n")
    assert invoke("describe", "classes.txt", "--provider", "none", "--project", "proj").exit_code == 0
    one_line_error(train(tiny_rn), "'red'", "'blue_square'", "blue square")
    assert not (tmp_path / "proj" / "prompts.safetensors").exists()


def test_case_insensitive_duplicate_folders(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=2)
    shutil.copytree(images / "red", images / "RED")
    one_line_error(train(tiny_rn), "'RED'", "'red'")


# ---------------------------------------------------------------------------------------------------------
# Medium: model checks


def _swap_image_tower(folder: Path, donor: Path) -> None:
    """Give ``folder``'s model the image tower of ``donor`` (same text tower)."""
    weights = load_file(str(folder / "open_clip_model.safetensors"))
    other = load_file(str(donor / "open_clip_model.safetensors"))
    weights.update({k: v for k, v in other.items() if k.startswith("visual.")})
    save_file(weights, str(folder / "open_clip_model.safetensors"))


def test_other_image_tower_is_refused(prompts, test_images, tmp_path):
    base = build_tiny_model("rn", tmp_path / "base", seed=0)  # the tiny_rn weights (same seed)
    donor = build_tiny_model("rn", tmp_path / "donor", seed=1)
    _swap_image_tower(base, donor)
    result = invoke("predict", test_images, "--prompt-file", prompts, "--model", f"local-dir:{base}", "--device", "cpu")
    one_line_error(result, "image tower")


def test_model_folder_changed_in_place(images, tmp_path):
    model = build_tiny_model("rn", tmp_path / "model", seed=0)
    assert train(f"local-dir:{model}").exit_code == 0
    _swap_image_tower(model, build_tiny_model("rn", tmp_path / "donor", seed=1))
    one_line_error(invoke("predict", images / "red", "--project", "proj", "--device", "cpu"), "image tower")


def test_prompt_file_without_fingerprint_still_loads(prompts, test_images, tmp_path):
    tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    assert meta.get("image_fingerprint")
    del meta["image_fingerprint"]
    write_safetensors(tmp_path / "old.safetensors", tensors, PROMPT_FORMAT, meta)
    result = invoke("predict", test_images, "--prompt-file", tmp_path / "old.safetensors", "--format", "jsonl")
    assert result.exit_code == 0, result.output


def test_pretrained_file_with_folder_model(images, tiny_rn, tmp_path):
    one_line_error(train(tiny_rn, "--pretrained", tmp_path / "nope.safetensors"), "nope.safetensors", "does not exist")
    other = build_tiny_model("rn", tmp_path / "other", seed=3) / "open_clip_model.safetensors"
    bb = load_backbone(ModelSpec(tiny_rn, str(other)), device="cpu", precision="fp32")
    assert torch.equal(bb.model.token_embedding.weight.cpu(), load_file(str(other))["token_embedding.weight"])
    result = invoke("info", "--model", tiny_rn, "--pretrained", other, "--device", "cpu", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["pretrained"] == str(other)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(n_prompts="four"), "'n_prompts'"),
        (lambda m: m.pop("class_names"), "'class_names'"),
        (lambda m: m.update(logit_scale="x"), "'logit_scale'"),
        (lambda m: m.update(class_folders=["a"]), "class folders"),
        (lambda m: m.update(alpha=float("nan")), "'alpha'"),
    ],
    ids=["n_prompts", "no-class-names", "logit-scale", "folders", "nan-alpha"],
)
def test_bad_metadata_is_refused(change, message, prompts, test_images, tmp_path):
    tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    change(meta)
    write_safetensors(tmp_path / "bad.safetensors", tensors, PROMPT_FORMAT, meta)
    one_line_error(invoke("predict", test_images, "--prompt-file", tmp_path / "bad.safetensors"), "metadata", message)


# ---------------------------------------------------------------------------------------------------------
# Medium: LLM servers that answer garbage, refuse connections, or carry credentials in the URL


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_non_json_200_body_is_a_failed_answer(api, fake, tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("tiger\n")
    fake.default = lambda cls: Reply(raw=b"<html><body>gateway says hi</body></html>")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    where = ["--base-url", f"{fake.url}/v1"] if api == "openai" else ["--host", fake.url]
    result = invoke("describe", "classes.txt", "--provider", api, *where)
    one_line_error(result, "1 of 1 classes failed", code=1)
    assert "not a chat" in result.output  # the class's own reason is shown
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()  # nothing described: no file


@pytest.mark.parametrize(
    "answer",
    ["<html>\x00\x01 {{{", "\x00\x01\x02\x03", "<div>orange fur</div>", "{{ template }}", "\ufffd\ufffd\ufffd"],
)
def test_garbage_answers_are_not_phrases(answer, fake, tmp_path):
    (tmp_path / "classes.txt").write_text("tiger\n")
    fake.default = lambda cls: Reply(content=answer)
    result = invoke("describe", "classes.txt", "--provider", "ollama", "--host", fake.url)
    one_line_error(result, "1 of 1 classes failed", code=1)
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()  # no phrase came out of it


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_connection_refused_fails_fast(api, tmp_path, monkeypatch, use_retry):
    use_retry(RetryPolicy())  # the real backoff: retries would take minutes
    (tmp_path / "classes.txt").write_text("tiger\nzebra\nlion\n")
    url = f"http://127.0.0.1:{closed_port()}"
    where = ["--base-url", f"{url}/v1"] if api == "openai" else ["--host", url]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    t0 = time.perf_counter()
    result = invoke("describe", "classes.txt", "--provider", api, *where)
    assert time.perf_counter() - t0 < 10
    one_line_error(result, "cannot connect", "refused")


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_unknown_host_fails_fast(api, tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("tiger\nzebra\n")
    url = "http://dualpt-test.invalid:8080"  # .invalid never resolves (RFC 2606)
    where = ["--base-url", f"{url}/v1"] if api == "openai" else ["--host", url]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    result = invoke("describe", "classes.txt", "--provider", api, *where)
    one_line_error(result, "cannot connect", "unknown host")  # exit 2 for the run, not a failure per class


def test_credentials_in_urls_are_redacted(fake, tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("tiger\n")
    fake.default = lambda cls: Reply(418)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    url = fake.url.replace("http://", "http://alice:pa55word@") + "/v1"
    result = invoke("describe", "classes.txt", "--provider", "openai", "--base-url", url)
    assert result.exit_code == 1
    assert "HTTP 418" in result.output and "alice:***@" in result.output  # the class's error, redacted
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()
    printed = invoke("describe", "classes.txt", "--provider", "openai", "--base-url", url + "?api-key=SECRETQ")
    one_line_error(printed, "api-key=***")  # the server has no such route: a run-stopping error, printed
    refused = f"http://bob:hunter22@127.0.0.1:{closed_port()}"
    failed = invoke("describe", "classes.txt", "--provider", "ollama", "--host", refused, "--force")
    one_line_error(failed, "bob:***@")
    stored = "".join(f.read_text(errors="replace") for f in tmp_path.rglob("*") if f.is_file())
    for secret in ("pa55word", "SECRETQ", "hunter22", KEY):
        assert secret not in stored + result.output + printed.output + failed.output


# ---------------------------------------------------------------------------------------------------------
# Medium: read-only project, full disk


def test_full_disk_is_one_line_and_keeps_files(tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("tiger\nzebra\n")
    assert invoke("describe", "classes.txt", "--provider", "none").exit_code == 0
    before = snapshot(tmp_path / "dualpt-project")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    result = invoke("describe", "classes.txt", "--provider", "none", "--force")
    one_line_error(result, "descriptions.json", "No space left")
    assert snapshot(tmp_path / "dualpt-project") == before  # old file intact, no temp file left


def test_full_disk_while_writing_predictions(prompts, test_images, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("earlier predictions\n")
    real_replace = os.replace

    def full(src, dst):
        if Path(dst) == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    one_line_error(
        invoke("predict", test_images, "--prompt-file", prompts, "--output", out), "out.csv", "No space left"
    )
    assert out.read_text() == "earlier predictions\n" and sorted(p.name for p in tmp_path.glob(".out.csv*")) == []


def test_read_only_project_is_one_line(images, tiny_rn, tmp_path, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    (tmp_path / "proj").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    one_line_error(train(tiny_rn), "proj", "Read-only file system")
    assert [p.name for p in (tmp_path / "proj").rglob("*") if p.is_file()] == [".lock"]


# ---------------------------------------------------------------------------------------------------------
# Medium: project inside the image folder; option validation; fewer than two classes


def test_project_inside_image_folder(images, tiny_rn, tmp_path, monkeypatch):
    monkeypatch.chdir(images)
    for _ in range(2):  # the second run used to fail on the project folder created by the first
        result = train(tiny_rn, images=".", project="dualpt-project")
        assert result.exit_code == 0, result.output
        assert "inside the image folder" in result.stderr
    meta = load_prompt_file(images / "dualpt-project" / "prompts.safetensors")[1]
    assert sorted(meta["class_folders"]) == ["blue", "green", "red"]
    result = invoke("eval", ".", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dualpt"]["images"] == 12


@pytest.mark.parametrize(
    "args, words",
    [
        (["--text-chunk", "-1"], ["--text-chunk"]),
        (["--ctx-len", "100"], ["--ctx-len 100", "77-token"]),
    ],
)
def test_option_validation(args, words, images, tiny_rn):
    one_line_error(train(tiny_rn, *args), *words)


def test_device_meta_in_predict(prompts, test_images):
    """The CLI refuses it while parsing (click's usage error); the library (the Python API) says so too."""
    result = invoke("predict", test_images, "--prompt-file", prompts, "--device", "meta")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'meta' is not one of" in " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    with pytest.raises(ModelLoadError, match="unknown device 'meta'"):
        select_device("meta")


def test_one_class_is_refused(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", classes=["red"], per_class=3)
    one_line_error(train(tiny_rn), "at least two classes", "red")
    assert not (tmp_path / "proj" / "prompts.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------
# Low: --output


def test_output_to_stdout_and_odd_targets(prompts, test_images, tmp_path):
    for target in ("-", "/dev/stdout"):
        result = invoke("predict", test_images, "--prompt-file", prompts, "--format", "jsonl", "--output", target)
        assert result.exit_code == 0, result.output
        assert len([json.loads(ln) for ln in result.stdout.splitlines()]) == 6
    (tmp_path / "real.csv").write_text("keep me\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    one_line_error(
        invoke("predict", test_images, "--prompt-file", prompts, "--output", tmp_path / "link.csv"), "symbolic link"
    )
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text() == "keep me\n"
    one_line_error(
        invoke("predict", test_images, "--prompt-file", prompts, "--output", "/dev/null"), "not a regular file"
    )
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (tmp_path / "afile").write_text("x")
    one_line_error(
        invoke("predict", test_images, "--prompt-file", prompts, "--output", tmp_path / "afile" / "out.csv"),
        "afile is a file, not a folder",
    )


def test_written_files_follow_the_umask(prompts, test_images, tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "classes.txt").write_text("tiger\n")
        assert invoke("describe", "classes.txt", "--provider", "none").exit_code == 0
        result = invoke("predict", test_images, "--prompt-file", prompts, "--output", tmp_path / "out.csv")
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    for path in (tmp_path / "dualpt-project" / "descriptions.json", tmp_path / "out.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ---------------------------------------------------------------------------------------------------------
# Low: class names, hidden folders, huge images, the describe report


@pytest.mark.parametrize(
    "line, why",
    [("a/b", "path separator"), ("..", "names a folder"), ("x" * 5000, "255 bytes"), (".hidden: hidden", "hidden")],
)
def test_impossible_folder_names(line, why, tmp_path):
    (tmp_path / "classes.txt").write_text(f"tiger\n{line}\n")
    one_line_error(invoke("describe", "classes.txt", "--provider", "none"), "classes.txt:2", why)
    assert not (tmp_path / "dualpt-project").exists()


def test_described_class_without_folder_is_reported(images, tiny_rn, tmp_path):
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\nzebra\n")
    assert invoke("describe", "classes.txt", "--provider", "none", "--project", "proj").exit_code == 0
    result = train(tiny_rn)
    assert result.exit_code == 0 and "zebra" in result.stderr and "no image folder" in result.stderr


def test_hidden_sub_folders_are_left_out_everywhere(images, tiny_rn, tmp_path):
    hidden = images / "red" / ".thumbnails"
    hidden.mkdir()
    Image.new("RGB", (64, 64), (0, 0, 0)).save(hidden / "thumb.png")
    result = train(tiny_rn, "--shots", "all")
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert len(split["train"]["red"]) == 4 and not any(".thumbnails" in p for p in split["train"]["red"])
    result = invoke("eval", images, "--project", "proj", "--device", "cpu", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["dualpt"]["images"] == 12


def test_huge_images_have_a_limit(prompts, tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "MAX_PIXELS", 1000)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "big.png")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "big.jpg")
    result = invoke(
        "predict",
        tmp_path / "big.png",
        tmp_path / "big.jpg",
        "--prompt-file",
        prompts,
        "--format",
        "jsonl",
        "--workers",
        "0",
    )
    png, jpg = (json.loads(ln) for ln in result.stdout.splitlines())
    assert result.exit_code == 1 and "megapixels" in png["error"]
    assert jpg["error"] is None  # a JPEG is decoded at a reduced scale instead
    assert data_mod.load_image(tmp_path / "big.jpg").size == (16, 16)


def test_describe_report_when_nothing_is_asked(fake, tmp_path):
    (tmp_path / "classes.txt").write_text("tiger\n")
    assert invoke("describe", "classes.txt", "--provider", "ollama", "--host", fake.url).exit_code == 0
    result = invoke("describe", "classes.txt", "--provider", "ollama", "--host", fake.url)
    assert result.exit_code == 0
    assert "(-)" not in result.stdout and "nothing was asked" in result.stdout
