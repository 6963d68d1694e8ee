"""The README's first session: run its commands as a new user would, and keep README.md's output blocks true.

    python tests/readme_session.py            # run the session; list the blocks that differ (exit 1 if any)
    python tests/readme_session.py --write    # run the session and write its output into README.md
    python tests/readme_session.py --save out.json          # also keep each command's output as it finishes
    python tests/readme_session.py --write --saved out.json # write a saved run's output (nothing is run)

The commands are the ``$ `` lines of the code blocks of the section "## A first session" of README.md; the
lines after each command, up to the next one, are its shown output. Each command runs in a fresh folder that
sees the repository's ``examples/`` (as a fresh clone does), offline, at 100 columns, with stdout and stderr
in one stream as a terminal shows them. ``--write`` replaces every shown output by the real one, with long
runs of epoch lines cut to their first and last (:func:`elide`). ``tests/e2e/test_readme.py`` runs the session
too and fails when its output differs from README.md beyond the volatile fields (:func:`mask`: run times,
run names and the padding of the table cells that hold them).

The section says which precision ``--precision auto`` ran where the output was recorded (:data:`RECORDED`). On
a CPU where it runs another (bf16 where AMX or AVX-512 bf16 is there, else fp32), the numbers cannot be the
same: there every line's words must still be, and each number must be close (:func:`close`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## A first session"
BLOCK = re.compile(r"^```\n(.*?)^```", flags=re.S | re.M)
ELISION = "..."
EPOCH = re.compile(r"^epoch +\d+ ")
PROGRESS = re.compile(r"━+ +\d+/\d+ ")  # a progress bar's last frame: "describing ━━━━ 6/6 0:00:00"
# what changes from run to run (and machine to machine) without changing what the tool says
VOLATILE = (
    (re.compile(r"\b\d{8}-\d{6}-"), "<run>-"),  # run names start with their time stamp
    (re.compile(r"\b\d+\.\d+ ?s\b"), "<time>"),  # "26.5 s", "0.0s"
    (re.compile(r"[─━]+"), "─"),  # table borders, whose width follows the cells above
    (re.compile(r"[ \t]+"), " "),  # the padding of the cells
)

Step = tuple[str, list[str]]  # (command, shown output lines)

RECORDED = re.compile(r"(recorded on a CPU where\s+`--precision auto` runs )(\w+)")
NUMBER = re.compile(r"(\d+(?:\.\d+)?)")
# another precision (bf16 against fp32), measured on the demo session: losses and probabilities moved by up to
# 0.5% past their last digit, and borderline images flipped: one of a class's 40 moves its accuracy 2.5 points
PERCENT_POINTS = 3.0
RELATIVE = 0.02


def section_span(readme: str) -> tuple[int, int]:
    """Start and end offsets of the first-session section."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    return start, end if end >= 0 else len(readme)


def parse_block(block: str) -> list[Step]:
    """The steps of one code block: each ``$ `` line and the non-blank lines after it ("..." included)."""
    steps: list[Step] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    return steps


def first_session(readme: str) -> list[list[Step]]:
    """The steps of every code block of the first-session section, block by block."""
    start, end = section_span(readme)
    return [parse_block(block) for block in BLOCK.findall(readme[start:end])]


def elide(lines: list[str]) -> list[str]:
    """More than two epoch lines in a row become the first, "...", and the last."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and EPOCH.match(lines[j]):
            j += 1
        if j - i > 2:
            out += [lines[i], ELISION, lines[j - 1]]
            i = j
        else:
            out.append(lines[i])
            i += 1
    return out


def shown(output: str | list[str]) -> list[str]:
    """The lines the README shows of a command's output: no blank lines, no trailing spaces, no progress bars
    (a terminal clears them; a pipe gets their last frame), epochs elided."""
    lines = output.splitlines() if isinstance(output, str) else output
    return elide([line.rstrip() for line in lines if line.strip() and not PROGRESS.search(line)])


def mask(lines: list[str]) -> list[str]:
    """``lines`` with the volatile fields replaced, for comparing a fresh run with the README."""
    out = []
    for line in lines:
        for pattern, placeholder in VOLATILE:
            line = pattern.sub(placeholder, line)
        out.append(line.strip())
    return out


def session_env(folder: Path) -> dict[str, str]:
    """A new user's environment: no dualpt or LLM variables, offline, this checkout's dualpt first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUALPT_", "OPENAI_", "OLLAMA_", "XDG_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HOME=str(folder / "home"),
        DUALPT_CACHE=str(folder / "cache"),
        COLUMNS="100",
        PYTHONUNBUFFERED="1",  # stdout and stderr in the order they were written
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # this environment's dualpt
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
    )
    return env


def run_step(command: str, folder: Path, env: dict[str, str]) -> str:
    """The output (stdout and stderr as they interleave) of one command; an error if it fails."""
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=3600,  # a training command of the session takes minutes, more on a loaded machine
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{command} exited with {proc.returncode}:\n{proc.stdout}")
    if str(folder) in proc.stdout:
        raise RuntimeError(f"{command} printed an absolute path:\n{proc.stdout}")
    return proc.stdout


def run_session(folder: Path, readme: str, save: Path | None = None) -> list[list[Step]]:
    """Every block of the first session with the output of a fresh run of its commands in ``folder``; with
    ``save``, the blocks so far are written there (JSON) after every command."""
    (folder / "examples").symlink_to(ROOT / "examples")
    env = session_env(folder)
    fresh: list[list[Step]] = []
    for block in first_session(readme):
        fresh.append([])
        for cmd, _ in block:
            fresh[-1].append((cmd, shown(run_step(cmd, folder, env))))
            if save is not None:
                save.write_text(json.dumps(fresh, indent=1, ensure_ascii=False), encoding="utf-8")
    return fresh


def render(block: list[Step]) -> str:
    """The text of a code block: each command, its output, and a blank line between steps."""
    return "\n\n".join("\n".join([f"$ {cmd}", *lines]) for cmd, lines in block) + "\n"


def with_blocks(readme: str, blocks: list[list[Step]]) -> str:
    """``readme`` with the code blocks of the first session replaced, in order, by ``blocks``."""
    start, end = section_span(readme)
    texts = iter(blocks)
    section = BLOCK.sub(lambda m: "```\n" + render(next(texts)) + "```", readme[start:end])
    return readme[:start] + section + readme[end:]


def recorded_precision(readme: str) -> str:
    """The precision ``--precision auto`` ran where the first session's output was recorded."""
    start, end = section_span(readme)
    found = RECORDED.search(readme[start:end])
    if found is None:
        raise ValueError(f"{README.name}: the first session does not say which precision recorded it")
    return found.group(2)


def auto_precision() -> str:
    """The precision ``--precision auto`` runs on this machine's CPU."""
    import torch

    from dualpt_cli.clip.load import select_precision

    return select_precision("auto", torch.device("cpu"))


def close(shown: str, fresh: str) -> bool:
    """Two numbers (not percentages) a run in another precision may print for the same thing: within one
    unit of the shown one's last digit plus :data:`RELATIVE` of it."""
    a, b = float(shown), float(fresh)
    return abs(a - b) <= 10 ** -len(shown.partition(".")[2]) + RELATIVE * abs(a)


def near(shown: list[str], fresh: list[str]) -> bool:
    """``fresh`` says what ``shown`` says (masked) but for numbers that are :func:`close`."""
    if len(shown) != len(fresh):
        return False
    for old, new in zip(mask(shown), mask(fresh)):
        a, b = NUMBER.split(old), NUMBER.split(new)
        if len(a) != len(b) or a[::2] != b[::2]:
            return False
        for i, (x, y) in enumerate(zip(a[1::2], b[1::2])):
            percent = a[2 * i + 2].startswith("%")
            if x != y and not (abs(float(x) - float(y)) <= PERCENT_POINTS if percent else close(x, y)):
                return False
    return True


def differences(readme: str, fresh: list[list[Step]], precision: str | None = None) -> list[str]:
    """One message per step whose shown output differs from the fresh one beyond the volatile fields; when
    ``precision`` (the one the fresh run had) is not the recorded one, beyond :func:`near`."""
    same = precision is None or precision == recorded_precision(readme)
    out = []
    for block, new in zip(first_session(readme), fresh):
        for (cmd, old), (_, lines) in zip(block, new):
            if mask(old) != mask(lines) if same else not near(old, lines):
                want = "\n".join(f"    {line}" for line in lines)
                out.append(f"$ {cmd}: README.md shows other output; a fresh run prints\n{want}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the fresh output into README.md")
    parser.add_argument("--save", type=Path, help="keep each command's output in this JSON file as it finishes")
    parser.add_argument("--saved", type=Path, help="use the output a --save run kept instead of running")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    if args.saved:
        fresh = [[(cmd, shown(lines)) for cmd, lines in block] for block in json.loads(args.saved.read_text("utf-8"))]
        if [[c for c, _ in b] for b in fresh] != [[c for c, _ in b] for b in first_session(readme)]:
            sys.exit(f"{args.saved} holds other commands than README.md's first session (or not all of them)")
    else:
        with tempfile.TemporaryDirectory(prefix="dualpt-readme-") as tmp:
            fresh = run_session(Path(tmp), readme, args.save)
    if args.write:
        tmp = README.with_name(README.name + ".tmp")
        written = with_blocks(readme, fresh)
        start, end = section_span(written)
        section = RECORDED.sub(r"\g<1>" + auto_precision(), written[start:end])
        tmp.write_text(written[:start] + section + written[end:], encoding="utf-8")
        tmp.replace(README)
        print(f"wrote the output of {sum(map(len, fresh))} commands into {README}")
        return 0
    found = differences(readme, fresh, auto_precision())
    print("\n\n".join(found) if found else "README.md shows what a fresh run prints")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
