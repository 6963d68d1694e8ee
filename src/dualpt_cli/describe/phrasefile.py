"""Descriptions without an LLM: phrases from a file (a paper, an expert, another tool) into descriptions.json.

The file maps classes to phrases, in JSON or YAML (``.yaml``/``.yml``)::

    {"tiger": ["orange fur", "black stripes"], "house cat": "- whiskers\\n- pointed ears, long tail"}

Keys are class folders or readable names (any case). A value is a list of phrases or one text (an LLM
answer pasted as is); both go through :func:`phrases.parse_phrases`, the parser of LLM answers. Phrases
are added to what is stored for the class (``--force``: replace it); the entry's provenance records the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.project import Project, project_lock, read_user_text
from ..data.classes import ClassEntry, parse_class_list
from ..data.descriptions import load_descriptions, make_entry, merge_phrases, save_descriptions, utc_now
from ..errors import DataError
from .phrases import parse_phrases

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class PhrasesReport:
    """What one ``describe --phrases`` run did, for the summary table or ``--json``."""

    provider: str  # "file", shown like a provider
    model: None
    path: Path  # descriptions.json
    entries: list[dict]  # all stored classes, in class-list order
    asked: list[str]  # folders that got phrases from the file
    dropped: list[str]  # always empty: a phrases file never drops stored classes
    failed_kept: list[dict] = field(default_factory=list)  # always empty: no class fails (as describe's report has)
    unnamed: list[str] = field(default_factory=list)  # listed classes that got no phrases and had none stored

    @property
    def failed(self) -> list[dict]:
        return []


EXPANDED_CAP = 16 << 20  # characters of text a phrase file may expand to through YAML aliases


def read_phrases_file(path: str | Path) -> dict[str, list[str]]:
    """``{key: [item, ...]}`` from a JSON or YAML mapping; one clear error for anything else.

    Every YAML scalar is read as text (``no:`` is the class "no", not False); a key given twice, text that
    aliases expand past :data:`EXPANDED_CAP` characters, or nesting too deep for the parser is refused.
    """
    path = Path(path)
    text = read_user_text(path, "phrases file")
    try:
        data = _load_yaml(text, path) if path.suffix.lower() in YAML_SUFFIXES else _load_json(text, path)
    except RecursionError:
        raise DataError(f"phrases file {path} is nested too deeply; expected 'class: [phrase, ...]'") from None
    if not isinstance(data, dict) or not data:
        raise DataError(
            f'phrases file {path} must map class names to phrases, e.g. {{"tiger": ["orange fur", "black stripes"]}}'
        )
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise DataError(f"phrases file {path}: the value of {key!r} must be a list of phrases or a text")
        out[str(key)] = items
    return out


def _unique_keys(pairs: list[tuple[str, object]], path: Path) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DataError(f"phrases file {path} gives the class {key!r} twice; merge its phrases into one entry")
        out[key] = value
    return out


def _load_json(text: str, path: Path) -> object:
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"phrases file {path} is not valid JSON (line {exc.lineno}: {exc.msg}); expected "
            '{"class": ["phrase", ...]} (or use a .yaml file)'
        ) from None


def _load_yaml(text: str, path: Path) -> object:
    import yaml

    class Loader(yaml.BaseLoader):  # BaseLoader: every scalar is a string, no tag makes an object
        def compose_node(self, parent: Any, index: Any) -> Any:
            node = super().compose_node(parent, index)
            if not hasattr(node, "expanded"):  # an alias returns its anchor's node, already counted
                if isinstance(node, yaml.ScalarNode):
                    node.expanded = len(node.value)
                else:
                    children = (
                        node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
                    )
                    node.expanded = sum(getattr(kid, "expanded", 0) for kid in children)  # 0: a recursive alias
                if node.expanded > EXPANDED_CAP:
                    raise DataError(
                        f"phrases file {path} expands to more than {EXPANDED_CAP >> 20} M characters "
                        "(YAML aliases); write the phrases out"
                    )
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            pairs = [(self.construct_object(k, deep), self.construct_object(v, deep)) for k, v in node.value]
            if any(not isinstance(k, str) for k, _ in pairs):
                raise DataError(f"phrases file {path}: a key is not a class name; expected 'class: [phrase, ...]'")
            return _unique_keys(pairs, path)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, Loader.construct_mapping)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - BaseLoader builds only str, list and dict
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise DataError(f"phrases file {path} is not valid YAML{line}; expected 'class: [phrase, ...]'") from None


def match_classes(mapping: dict[str, list[str]], classes: list[ClassEntry], path: Path) -> dict[str, list[str]]:
    """``{folder: items}``: each key names a class by folder or readable name, ignoring case."""
    index = {c.folder.casefold(): c for c in classes} | {c.name.casefold(): c for c in classes}
    unknown = [key for key in mapping if key.strip().casefold() not in index]
    if unknown:
        listed = ", ".join(c.folder for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise DataError(
            f"phrases file {path} names classes not in the class list: {', '.join(unknown[:5])}; "
            f"the classes are {listed}"
        )
    out: dict[str, list[str]] = {}
    named: dict[str, str] = {}
    for key, items in mapping.items():
        folder = index[key.strip().casefold()].folder
        if folder in named:
            raise DataError(
                f"phrases file {path} names the class {folder!r} twice ({named[folder]!r} and {key!r}); "
                "merge its phrases into one entry"
            )
        named[folder] = key
        out[folder] = items
    return out


def add_phrases(
    project: Project, classes_txt: str | Path | None, phrases_file: str | Path, replace: bool = False
) -> PhrasesReport:
    """Merge the file's phrases into ``project``'s descriptions.json (atomically); no LLM is asked.

    The class list is ``classes_txt`` if given, else the classes already stored. Stored classes that the
    file does not name are kept as they are; listed classes with nothing stored are written without phrases.
    """
    path = Path(phrases_file)
    mapping = read_phrases_file(path)
    listed = parse_class_list(classes_txt) if classes_txt is not None else None  # bad input fails before the lock
    if listed is None and not load_descriptions(project):
        raise DataError(
            f"no classes stored in {project.root} yet; pass the class list too: "
            f"`dualpt describe classes.txt --phrases {path}`"
        )
    with project_lock(project, "describe"):  # one writer at a time, as for describe with an LLM
        return _add_phrases(project, listed, mapping, path, replace)


def _add_phrases(
    project: Project, listed: list[ClassEntry] | None, mapping: dict[str, list[str]], path: Path, replace: bool
) -> PhrasesReport:
    stored = {e["folder"]: e for e in load_descriptions(project) or []}
    classes = (
        listed if listed is not None else [ClassEntry(folder=e["folder"], name=e["name"]) for e in stored.values()]
    )
    by_folder = match_classes(mapping, classes, path)
    now = utc_now()
    done: dict[str, dict] = {}
    described: list[str] = []  # classes the file gave at least one phrase (after filtering)
    for cls in classes:
        old = stored.get(cls.folder)
        if old is not None and old["name"] != cls.name:
            old = None  # renamed in the class list: its stored phrases described another name
        if cls.folder not in by_folder:
            done[cls.folder] = old or _entry(cls, [], "none", None)
            continue
        new = parse_phrases("\n".join(by_folder[cls.folder]), cls.name)
        if new:
            described.append(cls.folder)
        source = {"file": str(path), "phrases": new, "time": now}
        again = (old or {}).get("provenance", {}).get("file") == str(path)  # the same file again: update
        if old is None or old["status"] != "ok" or replace or again:
            done[cls.folder] = _entry(cls, new, "ok" if new else "none", source)
        else:
            provenance = dict(old.get("provenance") or {})
            provenance["added"] = [*provenance.get("added", []), source]
            done[cls.folder] = {**old, "phrases": merge_phrases(old["phrases"], new), "provenance": provenance}
    save_descriptions(project, classes, done)
    entries = [done[c.folder] for c in classes]
    unnamed = [c.folder for c in classes if c.folder not in described and not done[c.folder]["phrases"]]
    return PhrasesReport("file", None, project.descriptions, entries, described, [], unnamed=unnamed)


def _entry(cls: ClassEntry, phrases: list[str], status: str, source: dict | None) -> dict:
    """A descriptions.json entry whose phrases came from a file (or from nowhere), in describe's schema."""
    provenance = {
        "provider": "file" if source else "none",
        "model": None,
        "temperature": None,
        "samples": 0,
        "query": None,
        "file": source["file"] if source else None,
        "time": source["time"] if source else utc_now(),
    }
    return make_entry(cls, phrases, status, None, provenance)
