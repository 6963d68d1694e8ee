"""The README's first session runs as written and prints exactly what the README shows, but for volatile fields.

The commands and their shown output are read from README.md itself (the section "A first session"), so
README and code cannot drift apart; ``python tests/readme_session.py --write`` writes a fresh run's output
into the README. The slow test runs the session in a fresh folder that sees the repository's ``examples/``
(as a fresh clone would), offline, and fails on any difference beyond run times, run names and the padding
of the table cells that hold them.
"""

from __future__ import annotations

import re

import pytest

from readme_session import (
    README,
    auto_precision,
    differences,
    elide,
    first_session,
    mask,
    near,
    recorded_precision,
    run_session,
    with_blocks,
)


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_first_session_is_found():
    steps = [step for block in first_session(_readme()) for step in block]
    commands = [cmd.split()[:2] for cmd, _ in steps]
    for expected in (["dualpt", "describe"], ["dualpt", "train"], ["dualpt", "predict"], ["dualpt", "eval"]):
        assert expected in commands
    assert all(shown for _, shown in steps), "every command of the first session shows its output"


def test_writing_the_shown_output_again_changes_nothing():
    """--write of an unchanged run leaves README.md as it is: blocks are parsed and rendered alike."""
    readme = _readme()
    assert with_blocks(readme, first_session(readme)) == readme


def test_long_runs_of_epoch_lines_are_elided():
    epochs = [f"epoch {e:4d}  loss 0.5  acc 90.0%  lr 1e-3  0.1s" for e in (5, 10, 15)]
    assert elide(["a", *epochs, "b"]) == ["a", epochs[0], "...", epochs[2], "b"]
    assert elide(epochs[:2]) == epochs[:2]


def _train_output_edited(blocks: list, pattern: str, repl) -> list:
    """``blocks`` with ``re.sub(pattern, repl)`` applied to the shown output of the session's first train."""
    cmd = next(block[0][0] for block in blocks if block[0][0].startswith("dualpt train"))
    return [[(c, [re.sub(pattern, repl, x) for x in s]) if c == cmd else (c, s) for c, s in b] for b in blocks]


def test_only_volatile_fields_may_differ():
    readme = _readme()
    blocks = first_session(readme)

    def fresh_with(pattern: str, repl: str) -> list:
        return _train_output_edited(blocks, pattern, repl)

    assert not differences(readme, blocks)
    slower = fresh_with(r"(\d+\.\d) s\b", r"10\1 s")  # longer times: wider cells
    renamed = fresh_with(r"\b\d{8}-\d{6}-", "20990101-000000-")
    for volatile in (slower, renamed):
        assert volatile != blocks and not differences(readme, volatile)
    changed = fresh_with(r"(\d)%", r"\1.01%")  # a percentage changes
    assert changed != blocks and len(differences(readme, changed)) == 1
    assert mask(["│ time  │ 26.5 s │"]) == mask(["│ time │ 3.0 s  │"])
    assert mask(["acc 95.8%"]) != mask(["acc 95.9%"])


def test_another_precision_may_move_numbers_not_words():
    """Where --precision auto runs another precision than the recorded one, numbers may move a little (an
    image or two flips between bf16 and fp32); words, and numbers that move far, still count."""
    readme = _readme()
    blocks = first_session(readme)
    recorded = recorded_precision(readme)
    other = {"bf16": "fp32", "fp32": "bf16"}[recorded]

    def fresh_with(pattern: str, repl) -> list:
        return _train_output_edited(blocks, pattern, repl)

    def moved(by: float):  # every percentage of the train step moved by ``by`` points
        return fresh_with(r"(\d+\.\d)%", lambda m: f"{float(m.group(1)) + by:.1f}%")

    loss = fresh_with(r"loss (\d\.\d+)", lambda m: f"loss {float(m.group(1)) * 1.01:.4f}")
    for near_enough in (moved(2.5), loss):
        assert near_enough != blocks
        assert len(differences(readme, near_enough, recorded)) == 1  # the recorded precision: exact
        assert not differences(readme, near_enough, other)
    worded = fresh_with(r"classifier kept", "classifier held")
    for far in (moved(5.0), fresh_with(r"loss (\d\.\d+)", lambda m: f"loss {float(m.group(1)) * 1.1:.4f}"), worded):
        assert len(differences(readme, far, other)) == 1
    assert near(["acc 95.8%", "x 2.06"], ["acc 93.4%", "x 2.09"])
    assert not near(["acc 95.8%"], ["acc 95.8%", "more"])


@pytest.mark.slow
def test_first_session_prints_what_the_readme_shows(tmp_path):
    readme = _readme()
    found = differences(readme, run_session(tmp_path, readme), auto_precision())
    assert not found, "\n\n".join(found) + "\n\n(python tests/readme_session.py --write writes the fresh output)"
