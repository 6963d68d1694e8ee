"""What the CLI tests share: invoking the app in-process, a quick tiny ``train``, the one-line error check, a closed
port, a folder snapshot.

Moved from tests/test_hostile.py and tests/test_hostile_outputs.py when their cases went beside the features
they attack (tests/<package>/test_<package>_hostile*.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from dualpt_cli.cli.app import app

runner = CliRunner()
KEY = "sk-hostile-SECRET-4242"
CPU = ["--device", "cpu", "--precision", "fp32"]
TINY = ["--shots", "1", "--epochs", "1", "--aug-views", "1", "--batch-size", "4", "--ctx-len", "4"]


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def tiny_train(model: str, *args, images="images", project: str | Path | None = None) -> object:
    """``dualpt train images`` at its quickest (one shot, one epoch, one view, 4 context tokens) on the CPU in fp32,
    with ``--project project`` when given (else the CLI's default project); ``args`` come last, so they win."""
    where = [] if project is None else ["--project", project]
    return invoke("train", images, "--model", model, "--pretrained", "", *TINY, *CPU, *where, *args)


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
