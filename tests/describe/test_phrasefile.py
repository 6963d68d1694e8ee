"""``dualpt describe --phrases FILE``: phrases from a JSON or YAML file, merged into descriptions.json."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.core.project import resolve_project
from dualpt_cli.data.descriptions import load_descriptions, phrases_by_folder


@pytest.fixture
def classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("tiger\nhouse_cat: house cat\nzebra\n", encoding="utf-8")
    return path


def invoke(*args):
    return CliRunner().invoke(app, ["describe", *map(str, args)])


def stored(tmp_path) -> dict[str, dict]:
    return {e["folder"]: e for e in load_descriptions(resolve_project(tmp_path / "dualpt-project"))}


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_file_by_folder_or_name_with_provenance(classes, tmp_path):
    phrases = write(
        tmp_path,
        "phrases.json",
        json.dumps(
            {
                "tiger": ["orange fur", "black stripes, white belly"],
                "House Cat": "Here are some features:\n1. **Whiskers**\n2. pointed ears; a long tail\n3. a house cat",
            }
        ),
    )
    result = invoke(classes, "--phrases", phrases)
    assert result.exit_code == 0, result.output
    entries = stored(tmp_path)
    assert entries["tiger"]["phrases"] == ["orange fur", "black stripes", "white belly"]
    assert entries["house_cat"]["phrases"] == ["Whiskers", "pointed ears", "a long tail"]
    assert entries["zebra"]["status"] == "none" and entries["zebra"]["phrases"] == []
    prov = entries["tiger"]["provenance"]
    assert prov["provider"] == "file" and prov["file"] == str(phrases) and prov["model"] is None
    assert entries["tiger"]["status"] == "ok"


def test_yaml_file(classes, tmp_path):
    phrases = write(tmp_path, "phrases.yaml", "zebra:\n  - black and white stripes\n  - a short mane\n")
    assert invoke(classes, "--phrases", phrases).exit_code == 0
    assert phrases_by_folder(list(stored(tmp_path).values()))["zebra"] == ["black and white stripes", "a short mane"]


def test_phrases_are_added_to_llm_phrases_and_force_replaces(classes, tmp_path):
    assert invoke(classes, "--phrases", write(tmp_path, "a.json", '{"tiger": ["orange fur"]}')).exit_code == 0
    # pretend the first entry came from an LLM: the file's phrases are added to it, with provenance
    doc = json.loads((tmp_path / "dualpt-project" / "descriptions.json").read_text())
    doc["classes"][0]["provenance"] = {"provider": "openai", "model": "gpt-4o-mini"}
    (tmp_path / "dualpt-project" / "descriptions.json").write_text(json.dumps(doc))
    more = write(tmp_path, "b.json", '{"tiger": ["Orange fur", "stripes"]}')
    assert invoke("--phrases", more).exit_code == 0  # the stored classes, no class list needed
    tiger = stored(tmp_path)["tiger"]
    assert tiger["phrases"] == ["orange fur", "stripes"]
    assert tiger["provenance"]["provider"] == "openai"
    assert [a["file"] for a in tiger["provenance"]["added"]] == [str(more)]
    assert invoke("--phrases", more, "--force").exit_code == 0
    assert stored(tmp_path)["tiger"]["phrases"] == ["Orange fur", "stripes"]


def test_training_reads_file_phrases(classes, tmp_path):
    assert invoke(classes, "--phrases", write(tmp_path, "p.json", '{"zebra": ["stripes"]}')).exit_code == 0
    assert phrases_by_folder(load_descriptions(resolve_project(None)))["zebra"] == ["stripes"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.json", '{"tigre": ["orange fur"]}', "names classes not in the class list: tigre"),
        ("p.json", '{"tiger": ["orange fur"]', "is not valid JSON (line 1"),
        ("p.json", '["orange fur"]', "must map class names to phrases"),
        ("p.json", '{"tiger": [1, 2]}', "the value of 'tiger' must be a list of phrases or a text"),
        ("p.yaml", "tiger: [orange fur\n", "is not valid YAML"),
        ("missing.json", None, "does not exist"),
    ],
)
def test_bad_phrases_files_are_one_clean_line(classes, tmp_path, name, text, message):
    if text is not None:
        write(tmp_path, name, text)
    result = invoke(classes, "--phrases", tmp_path / name)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()  # nothing half-written


def test_phrases_without_class_list_or_stored_classes(tmp_path):
    result = invoke("--phrases", write(tmp_path, "p.json", '{"tiger": ["x y"]}'))
    assert result.exit_code == 2 and "pass the class list too" in result.output


def test_phrases_refuse_a_provider(classes, tmp_path):
    result = invoke(classes, "--phrases", write(tmp_path, "p.json", '{"tiger": ["x y"]}'), "--provider", "openai")
    assert result.exit_code == 2 and "--phrases asks no LLM" in result.output
