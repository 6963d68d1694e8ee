"""Issue 23's hostile inputs, the cases that attack describe: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clihelpers import invoke, one_line_error
from dualpt_cli.core.project import resolve_project
from dualpt_cli.data.descriptions import load_descriptions

DEEP = "[" * 100_000


# ---------------------------------------------------------------------------------------------------------
# 11, 12, 18. phrase files: alias bombs, deep nesting, duplicate keys, YAML's yes/no


@pytest.fixture
def classes(tmp_path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("tiger\nno\nyes\n")
    return path


def phrases(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _nothing_described() -> bool:
    return not Path("dualpt-project/descriptions.json").exists()


def test_yaml_alias_bomb_is_refused(classes, tmp_path):
    text = "a: &x " + "s" * 200_000 + "\ntiger: [" + ", ".join(["*x"] * 100) + "]\n"
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, "bomb.yaml", text))
    one_line_error(result, "bomb.yaml", "expands to more than")
    assert _nothing_described()


@pytest.mark.parametrize("name", ["deep.json", "deep.yaml"])
def test_deeply_nested_phrase_file_is_refused(classes, tmp_path, name):
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, name, DEEP))
    one_line_error(result, name)
    assert _nothing_described()


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("dup.json", '{"tiger": ["a"], "tiger": ["b"]}', ["'tiger' twice"]),
        ("dup.yaml", "tiger: [a]\ntiger: [b]\n", ["'tiger' twice"]),
        ("case.json", '{"tiger": ["a"], "TIGER": ["b"]}', ["'tiger' twice", "'TIGER'"]),
    ],
)
def test_duplicate_classes_in_a_phrase_file_are_refused(classes, tmp_path, name, text, words):
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, name, text))
    one_line_error(result, name, *words)
    assert _nothing_described()


def test_yaml_yes_and_no_keys_are_class_names(classes, tmp_path):
    text = "no: [round ears]\nyes: [long tail]\ntiger: [stripes]\n"
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, "yn.yaml", text))
    assert result.exit_code == 0, result.output
    stored = {e["folder"]: e["phrases"] for e in load_descriptions(resolve_project("dualpt-project"))}
    assert stored == {"tiger": ["stripes"], "no": ["round ears"], "yes": ["long tail"]}


# ---------------------------------------------------------------------------------------------------------
# a phrase file on a fresh project: the summary counts what it described


def test_phrase_file_counts_on_a_fresh_project(classes, tmp_path):
    text = '{"tiger": ["stripes"], "no": ""}'  # "no": nothing left once parsed
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, "some.json", text))
    assert result.exit_code == 0, result.output
    assert "1 described, 0 kept from earlier runs, 2 without phrases" in " ".join(result.stdout.split())
    assert "(kept)" not in result.stdout
