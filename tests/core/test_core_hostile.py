"""Issue 12's hostile session, the cases that attack core: moved from tests/test_hostile.py.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from clihelpers import invoke, one_line_error, snapshot, tiny_train
from dualpt_cli.core.project import Project

pytestmark = pytest.mark.usefixtures("fast_retries")
train = partial(tiny_train, project="proj")  # these cases train into ./proj


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
    src = str(Path(__file__).resolve().parents[2] / "src")
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
