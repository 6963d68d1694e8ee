"""The README's first session runs as written and prints what the README shows, up to the numbers.

The commands and their shown output are read from README.md itself (the section "A first session"), so
README and code cannot drift apart. Each command runs in a fresh folder that sees the repository's
``examples/`` (as a fresh clone would), offline. Numbers change with the training recipe, so they are
compared as placeholders; table rows are compared by their first cell and their number of columns (the
other cells are results), JSON lines by their keys; every other shown line must appear in the output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## A first session"
NUMBER = re.compile(r"[-+]?\d[\d,.]*(?:e[-+]?\d+)?%?")
ROW_SEPARATORS = "│┃"


def first_session(readme: str) -> list[tuple[str, list[str]]]:
    """(command, shown output lines) for every ``$ `` line of the code blocks of the first-session section."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end >= 0 else len(readme)]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```\n(.*?)^```", section, flags=re.S | re.M):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps and line.strip() and line.strip() != "...":  # "..." elides lines
                steps[-1][1].append(line)
    return steps


def normalise(text: str) -> str:
    """Numbers become '#', whitespace runs one space."""
    return " ".join(NUMBER.sub("#", text).split())


def row_signature(line: str) -> tuple[str, int] | None:
    """(first cell, number of cells) of a table row; None for any other line."""
    if not any(sep in line for sep in ROW_SEPARATORS):
        return None
    cells = re.split(f"[{ROW_SEPARATORS}]", line.strip().strip(ROW_SEPARATORS))
    return normalise(cells[0]), len(cells)


def is_border(line: str) -> bool:
    return bool(line.strip()) and set(line.strip()) <= set("━─┏┓┗┛┌┐└┘┡┩┢┪╇╈┳┻┯┷┼┬┴╿╽═")


def json_keys(obj) -> object:
    """The key structure of a JSON value (lists reduced to their first element's)."""
    if isinstance(obj, dict):
        return {k: json_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_keys(obj[0])] if obj else []
    return None


def check_output(command: str, shown: list[str], output: str) -> None:
    lines = output.splitlines()
    rows = {sig for sig in map(row_signature, lines) if sig}
    text = normalise(output)
    for line in shown:
        if is_border(line):
            continue
        if line.startswith("{"):
            got = [json_keys(json.loads(x)) for x in lines if x.startswith("{")]
            assert json_keys(json.loads(line)) in got, f"{command}: no JSON line with the keys of {line}"
        elif (sig := row_signature(line)) is not None:
            assert sig in rows, f"{command}: no table row {sig[0]!r} with {sig[1]} cells in:\n{output}"
        else:
            assert normalise(line) in text, f"{command}: {line!r} not in the output:\n{output}"


def test_first_session_is_found():
    steps = first_session((ROOT / "README.md").read_text(encoding="utf-8"))
    commands = [cmd.split()[:2] for cmd, _ in steps]
    for expected in (["dualpt", "describe"], ["dualpt", "train"], ["dualpt", "predict"], ["dualpt", "eval"]):
        assert expected in commands
    assert all(shown for _, shown in steps), "every command of the first session shows its output"


def test_checker_catches_a_changed_line():
    shown = ["gain from training: -1.2 points top-1", "│ DUAL-PT        │ 92.5% │ 100.0% │"]
    check_output("x", shown, "│ DUAL-PT │ 90.0% │ 99.0% │\ngain from training: +3.4 points top-1\n")
    with pytest.raises(AssertionError):
        check_output("x", shown, "│ DUAL-PT │ 90.0% │ 99.0% │\nloss from training: 3.4 points\n")
    with pytest.raises(AssertionError):
        check_output("x", shown, "│ DUAL-PT │ 90.0% │\ngain from training: +3.4 points top-1\n")


@pytest.mark.slow
def test_first_session_runs_as_written(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUALPT_", "OPENAI_", "OLLAMA_", "XDG_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HOME=str(tmp_path / "home"),
        DUALPT_CACHE=str(tmp_path / "cache"),
        COLUMNS="100",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # this environment's dualpt
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
    )
    for command, shown in first_session((ROOT / "README.md").read_text(encoding="utf-8")):
        proc = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{command} exited with {proc.returncode}:\n{output}"
        assert str(tmp_path) not in output, f"{command} printed an absolute path:\n{output}"
        check_output(command, shown, output)
