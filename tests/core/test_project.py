"""The project folder, atomic writes and class lists (project.py)."""

from __future__ import annotations

import json
import os

import pytest

from dualpt_cli.core.project import atomic_write_json, read_json, resolve_project
from dualpt_cli.data.classes import ClassEntry, parse_class_list, readable_name
from dualpt_cli.errors import DataError, ProjectError


def write(tmp_path, text: str | bytes, name: str = "classes.txt"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# class lists


def test_class_list_plain_names_comments_blanks_and_whitespace(tmp_path):
    path = write(tmp_path, "# my classes\n\n  tiger  \n\tzebra\n   \n# done\ngolden retriever\n")
    assert parse_class_list(path) == [
        ClassEntry("tiger", "tiger"),
        ClassEntry("zebra", "zebra"),
        ClassEntry("golden retriever", "golden retriever"),
    ]


def test_class_list_folder_to_name_mapping(tmp_path):
    path = write(tmp_path, "n01440764: tench\nred_circle :  red   circle \nplain\n")
    assert parse_class_list(path) == [
        ClassEntry("n01440764", "tench"),
        ClassEntry("red_circle", "red circle"),
        ClassEntry("plain", "plain"),
    ]


def test_class_list_unicode_bom_and_crlf(tmp_path):
    path = write(tmp_path, "\ufeffcafé_crème: café crème\r\n猫\r\n".encode())
    assert parse_class_list(path) == [ClassEntry("café_crème", "café crème"), ClassEntry("猫", "猫")]


def test_readable_name():
    assert readable_name("golden__retriever_") == "golden retriever"


@pytest.mark.parametrize(
    "text, message",
    [
        ("tiger\nzebra\ntiger\n", r"classes.txt:3: duplicate class 'tiger' \(first on line 1\)"),
        ("a_cat: Cat\nb_cat: cat\n", r"classes.txt:2: duplicate class 'cat'"),
        ("", "has no classes"),
        ("# only comments\n\n   \n", "has no classes"),
        ("tiger\n: no folder\n", r"classes.txt:2: expected 'folder_name: readable name'"),
        ("folder_only:\n", r"classes.txt:1: expected 'folder_name: readable name'"),
    ],
    ids=["duplicate-folder", "duplicate-name-any-case", "empty", "comments-only", "no-folder", "no-name"],
)
def test_class_list_errors(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        parse_class_list(write(tmp_path, text))


@pytest.mark.parametrize(
    "data, message",
    [(b"caf\xe9\n", "is not UTF-8 text"), (b"tiger\x00\x01\x02", "looks binary")],
    ids=["latin-1", "binary"],
)
def test_class_list_unreadable_encodings(tmp_path, data, message):
    with pytest.raises(DataError, match=message):
        parse_class_list(write(tmp_path, data))


def test_class_list_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        parse_class_list(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a folder"):
        parse_class_list(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# project folder


def test_resolve_project_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("DUALPT_PROJECT", raising=False)
    assert resolve_project().root.name == "dualpt-project"
    monkeypatch.setenv("DUALPT_PROJECT", str(tmp_path / "env"))
    assert resolve_project().root == tmp_path / "env"
    assert resolve_project(tmp_path / "flag").root == tmp_path / "flag"
    assert resolve_project(tmp_path / "flag").descriptions == tmp_path / "flag" / "descriptions.json"


def test_project_ensure(tmp_path):
    project = resolve_project(tmp_path / "a" / "b").ensure()
    assert project.root.is_dir()
    write(tmp_path, "x", "file")
    with pytest.raises(ProjectError, match="not a folder"):
        resolve_project(tmp_path / "file").ensure()


def test_atomic_write_json_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "d.json"
    atomic_write_json(path, {"name": "café", "n": 1})
    atomic_write_json(path, {"name": "猫"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"name": "猫"}
    assert "猫" in path.read_text(encoding="utf-8")  # not \\u escaped
    assert os.listdir(path.parent) == ["d.json"]


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "d.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})  # fails while serializing
    assert json.loads(path.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["d.json"]


def test_read_json_errors(tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        read_json(tmp_path / "missing.json", "test file")
    with pytest.raises(ProjectError, match="is not valid JSON"):
        read_json(write(tmp_path, "{oops", "bad.json"), "test file")
