"""``descriptions.json``: the class descriptions file that describe writes and training reads.

One file per project, rewritten atomically after every change::

    {"format": "dualpt-descriptions/1",
     "classes": [{"folder": str, "name": str, "phrases": [str, ...], "status": "ok" | "failed" | "none",
                  "error": str | null,
                  "provenance": {"provider", "model", "temperature", "samples", "query", "time", ...}}, ...]}

Classes follow the order of the class list; a class appears once it is finished (ok, failed or none).
The provenance says where the phrases came from: an LLM (:mod:`describe`) or a file (:mod:`phrasefile`).
Who asks the LLM lives in :mod:`describe`; this module only reads, writes and merges the file.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..core.project import Project, atomic_write_json, read_json
from ..errors import DataError, ProjectError
from .classes import ClassEntry

FORMAT = "dualpt-descriptions/1"
STATUSES = ("ok", "failed", "none")


def load_descriptions(project: Project) -> list[dict] | None:
    """The stored classes of ``project`` (see the module doc), None if nothing was described yet."""
    path = project.descriptions
    if not path.exists():
        return None
    data = read_json(path, "class descriptions")
    damaged = f"{path} is damaged or not a dualpt descriptions file; re-run `dualpt describe ... --force`"
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or data.get("format") != FORMAT:
        raise ProjectError(damaged)
    for entry in data["classes"]:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("folder"), str)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("phrases"), list)
            and all(isinstance(p, str) for p in entry["phrases"])
            and entry.get("status") in STATUSES
        ):
            raise ProjectError(f"{damaged} (bad entry {str(entry)[:80]})")
    return classes


def find_descriptions(project: Project, name: str | None = None) -> list[dict]:
    """The stored entries, all or one class (matched by folder or name, ignoring case); errors say what to run."""
    entries = load_descriptions(project)
    if entries is None:
        raise ProjectError(
            f"no descriptions in {project.root} yet; run `dualpt describe classes.txt` (or pass --project DIR)"
        )
    if name is None:
        return entries
    key = name.strip().casefold()
    entries = [e for e in entries if key in (e["folder"].casefold(), e["name"].casefold())]
    if not entries:
        raise DataError(f"class {name!r} is not in {project.descriptions}; `dualpt describe --show` lists them")
    return entries


def phrases_by_folder(entries: list[dict] | None) -> dict[str, list[str]]:
    """``{folder: phrases}`` for training; classes without phrases (failed, none) map to ``[]``."""
    return {e["folder"]: list(e["phrases"]) if e["status"] == "ok" else [] for e in entries or []}


def save_descriptions(project: Project, classes: list[ClassEntry], done: dict[str, dict]) -> None:
    """Write the entries of ``done`` (folder -> entry) in the order of ``classes``; others are dropped."""
    entries = [done[c.folder] for c in classes if c.folder in done]
    atomic_write_json(project.descriptions, {"format": FORMAT, "classes": entries})


def make_entry(cls: ClassEntry, phrases: list[str], status: str, error: str | None, provenance: dict[str, Any]) -> dict:
    """One ``classes`` entry of the file (see the module doc)."""
    return {
        "folder": cls.folder,
        "name": cls.name,
        "phrases": phrases,
        "status": status,
        "error": error,
        "provenance": provenance,
    }


def merge_phrases(*lists: list[str]) -> list[str]:
    """Concatenate phrase lists, keeping the first spelling of each phrase (compared ignoring case)."""
    seen: set[str] = set()
    merged: list[str] = []
    for phrases in lists:
        for phrase in phrases:
            key = phrase.casefold()
            if key not in seen:
                seen.add(key)
                merged.append(phrase)
    return merged


def utc_now() -> str:
    """The provenance time stamp: UTC, seconds, ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
