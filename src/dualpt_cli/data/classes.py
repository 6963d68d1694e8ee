"""Classes: the class list file, folder names and their readable prompt names, and which classes a command scores.

A class is a :class:`ClassEntry` (ImageFolder folder, readable name). The class list (classes.txt) maps
folders to names; ImageFolder folders without one get :func:`readable_name`; a prompt file's trained classes
are matched to other class sets by :func:`find_trained` (same folder, or same name ignoring case).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.project import read_user_text
from ..errors import DataError, first_names
from .images import hidden

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ClassEntry:
    """One class: the ImageFolder folder name and the readable name used in prompts."""

    folder: str  # sub-folder name in an ImageFolder, e.g. "n01440764" or "golden_retriever"
    name: str  # name used in prompts and LLM queries, e.g. "golden retriever"


def readable_name(folder: str) -> str:
    """Default prompt name for a folder: underscores become spaces (``golden_retriever``)."""
    return " ".join(folder.replace("_", " ").split())


MAX_FOLDER_BYTES = 255  # the longest file name on common file systems


def folder_name_problem(folder: str) -> str | None:
    """Why ``folder`` can never name a class sub-folder (scanned as ImageFolder), or None."""
    if folder in (".", ".."):
        return "it names a folder itself"
    if "/" in folder or "\\" in folder:
        return "it contains a path separator"
    if hidden(folder):
        return "hidden folders are not scanned"
    if any(not ch.isprintable() for ch in folder):
        return "it contains control characters"
    if len(folder.encode("utf-8")) > MAX_FOLDER_BYTES:
        return f"longer than {MAX_FOLDER_BYTES} bytes"
    return None


def parse_class_list(path: str | os.PathLike) -> list[ClassEntry]:
    """Parse classes.txt: one class a line, ``#`` comments and blank lines ignored.

    A line is either ``name`` (folder and prompt name alike) or ``folder_name: readable name``.
    """
    path = Path(path)
    text = read_user_text(path, "class list")
    if "\x00" in text:
        raise DataError(f"class list {path} looks binary; pass a text file with one class per line")

    entries: list[ClassEntry] = []
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if ":" in line:
            folder, _, name = line.partition(":")
            folder, name = folder.strip(), " ".join(name.split())
            if not folder or not name:
                raise DataError(f"{path}:{lineno}: expected 'folder_name: readable name', got {line!r}")
        else:
            folder, name = line, " ".join(line.split())
        problem = folder_name_problem(folder)
        if problem:
            raise DataError(
                f"{path}:{lineno}: {folder[:60]!r}{'...' if len(folder) > 60 else ''} cannot be an "
                f"image folder name ({problem}); use 'folder_name: readable name'"
            )
        for key, value in (("folder", folder), ("name", name.casefold())):
            if (key, value) in seen:
                raise DataError(f"{path}:{lineno}: duplicate class {value!r} (first on line {seen[key, value]})")
            seen[key, value] = lineno
        entries.append(ClassEntry(folder=folder, name=name))
    if not entries:
        raise DataError(f"class list {path} has no classes; write one class name per line")
    return entries


def class_entries(folders: list[str], known: list[ClassEntry] | None) -> list[ClassEntry]:
    """Class entries for ImageFolder folders, with readable names from the project's class list.

    Two folders that would get the same prompt name (ignoring case) are an error naming both.
    """
    by_folder = {c.folder: c for c in known or []}
    entries = [by_folder.get(f) or ClassEntry(folder=f, name=readable_name(f)) for f in folders]
    first: dict[str, ClassEntry] = {}
    for entry in entries:
        other = first.setdefault(entry.name.casefold(), entry)
        if other is not entry:
            raise DataError(
                f"folders {other.folder!r} and {entry.folder!r} both map to the class name "
                f"{entry.name!r}; give them different names (in the class list for dualpt describe, "
                "or by renaming a folder)"
            )
    return entries


def unmatched(folders: list[str], known: list[ClassEntry] | None) -> list[str]:
    """Folders of ``known`` classes (described earlier) that have no image folder here."""
    present = set(folders)
    return [c.folder for c in known or [] if c.folder not in present]


def find_trained(entry: ClassEntry, trained: list[ClassEntry]) -> int | None:
    """Index of the trained class ``entry`` names (same folder, or same name ignoring case), else None."""
    for i, t in enumerate(trained):
        if entry.folder == t.folder or entry.name.casefold() == t.name.casefold():
            return i
    return None


def class_set(
    folders: list[str], trained: list[ClassEntry] | None, extra: list[ClassEntry], source: str
) -> tuple[list[ClassEntry], list[int], torch.Tensor | None]:
    """Classes to score, each folder's class index, and the base mask (None when nothing is new).

    With a prompt file, the classes are the trained ones plus the new ones of ``--classes``; without one,
    the ``--classes`` list or else the folders with readable names.
    """
    if trained is not None:
        classes = trained + [c for c in extra if find_trained(c, trained) is None]
    else:
        classes = extra or class_entries(folders, None)
    found = [find_trained(entry, classes) for entry in class_entries(folders, None)]
    unknown = [f for f, i in zip(folders, found) if i is None]
    if unknown:
        shown = first_names(unknown)
        raise DataError(
            f"folder(s) {shown} are not among the classes of {source}; list them in a class file "
            "and pass it with --classes (new classes are encoded from the learned context)"
        )
    base = None
    if trained is not None and len(classes) > len(trained):
        import torch  # here, so that reading a class list needs no torch (dualpt --help, describe)

        base = torch.tensor([i < len(trained) for i in range(len(classes))])
    index = [i for i in found if i is not None]  # all of them, after the check above
    return classes, index, base
