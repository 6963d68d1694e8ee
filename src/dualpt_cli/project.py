"""The project folder where describe, train and predict meet, and safe file writing.

Layout of a project folder (default ``./dualpt-project``, else ``$DUALPT_PROJECT`` or ``--project``)::

    descriptions.json     class list + LLM phrases (describe)
    prompts.safetensors   learned prompts + metadata (train); all that predict needs
    run_config.json       the resolved training config
    train_log.jsonl       one line per epoch
    split.json            the exact few-shot files used for training (and validation)
    checkpoint/           the last end-of-epoch state, for --resume
    runs/NAME/            a copy of every run's files, plus result.json and eval.json (see runs.py)

Frozen CLIP features of the training views live in one cache per user, shared by all projects
(:func:`user_cache_dir`: ``$DUALPT_CACHE``, else ``$XDG_CACHE_HOME/dualpt``, else ``~/.cache/dualpt``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError, DualptError, ProjectError

PROJECT_ENV = "DUALPT_PROJECT"
DEFAULT_PROJECT = "dualpt-project"
CACHE_ENV = "DUALPT_CACHE"


def user_cache_dir() -> Path:
    """dualpt's per-user cache: ``$DUALPT_CACHE``, else ``$XDG_CACHE_HOME/dualpt``, else ``~/.cache/dualpt``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "dualpt"


@dataclass(frozen=True)
class Project:
    """Paths inside one project folder."""

    root: Path

    @property
    def descriptions(self) -> Path:
        return self.root / "descriptions.json"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.safetensors"

    @property
    def run_config(self) -> Path:
        return self.root / "run_config.json"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoint"

    @property
    def cache_dir(self) -> Path:
        """The feature cache: per user, shared with every other project (content-addressed, so that is safe)."""
        return user_cache_dir() / "features"

    def ensure(self) -> Project:
        """Create the folder (and parents) if needed; a clear error if that is impossible."""
        if self.root.exists() and not self.root.is_dir():
            raise ProjectError(f"project path {self.root} exists but is not a folder; pass --project DIR")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"cannot create project folder {self.root}: {exc.strerror}") from None
        return self


def resolve_project(path: str | os.PathLike | None = None) -> Project:
    """``--project`` wins, then ``$DUALPT_PROJECT``, then ``./dualpt-project``."""
    chosen = path or os.environ.get(PROJECT_ENV) or DEFAULT_PROJECT
    return Project(Path(chosen).expanduser())


# ---------------------------------------------------------------------------------------------------------
# atomic writes: a reader sees the old file or the new one, never half of one


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file the project wrote; a clear error names the file if it is damaged."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"{path} does not exist ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProjectError(f"{path} is not valid JSON ({what}): {exc}; delete it or re-create it") from None


def read_user_text(path: Path, what: str) -> str:
    """A UTF-8 text file the user named (a BOM is dropped); :class:`DataError` naming it otherwise."""
    try:
        return read_user_file(path, what, DataError).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not UTF-8 text; save it as UTF-8") from None


def read_user_file(path: Path, what: str, error: type[DualptError]) -> bytes:
    """The bytes of a file the user named; ``error`` with one clear line (``what`` and the path) if unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder; pass the file itself") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------------------
# class lists


@dataclass(frozen=True)
class ClassEntry:
    """One class: the ImageFolder folder name and the readable name used in prompts."""

    folder: str  # sub-folder name in an ImageFolder, e.g. "n01440764" or "golden_retriever"
    name: str  # name used in prompts and LLM queries, e.g. "golden retriever"


def readable_name(folder: str) -> str:
    """Default prompt name for a folder: underscores become spaces (``golden_retriever``)."""
    return " ".join(folder.replace("_", " ").split())


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
        for key, value in (("folder", folder), ("name", name.casefold())):
            if (key, value) in seen:
                raise DataError(f"{path}:{lineno}: duplicate class {value!r} (first on line {seen[key, value]})")
            seen[key, value] = lineno
        entries.append(ClassEntry(folder=folder, name=name))
    if not entries:
        raise DataError(f"class list {path} has no classes; write one class name per line")
    return entries
