"""Run history: every ``dualpt train`` keeps its outputs under ``runs/NAME/`` in the project.

The project's top-level files (prompts.safetensors, run_config.json, train_log.jsonl, split.json,
curves.png) are the current run, as before; after each training they are also copied into ``runs/NAME/``
with ``result.json`` (the training summary), and ``runs/current`` names that run. ``dualpt eval`` of a run's
prompts adds ``eval.json`` (the ``--json`` report; ``eval --plot DIR`` writes its own, fuller one in DIR).
:func:`list_runs` reads them back for ``dualpt runs``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.project import (
    Project,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_user_text,
)
from ..core.vocab import METHOD_TITLES
from ..errors import DataError, DualptError, ProjectError

RUN_FILES = ("prompts.safetensors", "run_config.json", "train_log.jsonl", "split.json", "curves.png")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def runs_dir(project: Project) -> Path:
    return project.root / "runs"


def default_name(config: dict[str, Any]) -> str:
    """``20250101-120000-4shot-seed1``: sortable by time, readable at a glance."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    shots = "all" if config.get("shots") is None else config["shots"]
    return f"{stamp}-{shots}shot-seed{config.get('seed')}"


def record_run(project: Project, result: dict[str, Any], name: str | None = None) -> Path:
    """Copy the project's current run files into ``runs/NAME/`` and make it current; returns the folder."""
    config = read_json(project.run_config, "run config")
    name = check_run_name(project, name) or default_name(config if isinstance(config, dict) else {})
    folder = runs_dir(project) / name
    if folder.exists():
        suffix = 2
        while (runs_dir(project) / f"{name}-{suffix}").exists():
            suffix += 1
        folder = runs_dir(project) / f"{name}-{suffix}"
    folder.mkdir(parents=True)
    for file in RUN_FILES:
        source = project.root / file
        if source.is_file():
            atomic_write_bytes(folder / file, source.read_bytes())
    atomic_write_json(folder / "result.json", result)
    atomic_write_text(runs_dir(project) / "current", folder.name + "\n")
    return folder


def check_run_name(project: Project, name: str | None) -> str | None:
    """``name`` if it can name a run folder (checked before training, so a bad one costs nothing), else a
    :class:`DataError`; also a clear error if the project's ``runs`` is not a folder."""
    if name is not None and not NAME.fullmatch(name):
        raise DataError(f"--run-name {name!r} must be letters, digits, '.', '_' or '-' (at most 100, not first)")
    check_runs_folder(project)
    return name


def check_runs_folder(project: Project) -> None:
    """A :class:`ProjectError` if the project's ``runs`` is a file, or a symbolic link that leads outside the
    project (the runs would be written wherever it points, without a word)."""
    runs = runs_dir(project)
    if runs.exists() and not runs.is_dir():
        raise ProjectError(f"{runs} is a file, not the project's runs folder; move it away")
    target = Path(os.path.realpath(runs))
    if runs.is_symlink() and not target.is_relative_to(os.path.realpath(project.root)):
        raise ProjectError(
            f"{runs} is a symbolic link to {target}, outside the project; dualpt keeps a project's runs inside "
            "it: replace the link with a folder (or use another --project)"
        )


def current_run(project: Project) -> str | None:
    path = runs_dir(project) / "current"
    return path.read_text(encoding="utf-8").strip() or None if path.is_file() else None


def run_folder(project: Project, name: str) -> Path:
    """The folder of run ``name``; one clear error listing the runs if there is none."""
    folder = runs_dir(project) / name
    if not NAME.fullmatch(name) or not (folder / "prompts.safetensors").is_file():
        names = [r["name"] for r in list_runs(project)]
        listed = ", ".join(names[-5:]) if names else "none yet (dualpt train makes one)"
        raise ProjectError(f"no run {name!r} in {runs_dir(project)}; runs: {listed}")
    return folder


def record_eval(project: Project, prompt_file: Path, report: dict[str, Any]) -> None:
    """Keep an eval report in the run whose prompts were evaluated (``runs/NAME/eval.json``), if any; for the
    current run, a :class:`ProjectError` (nothing written) if the project's ``runs`` leads outside it.

    That is the run folder the prompt file is in, or the current run when the project's own prompt file
    was used and is that run's.
    """
    folder = prompt_file.parent
    if not (folder.parent.name == "runs" and (folder / "result.json").is_file()):
        current = current_run(project)
        if current is None or prompt_file.resolve() != project.prompts.resolve():
            return
        check_runs_folder(project)
        folder = runs_dir(project) / current
        copy = folder / "prompts.safetensors"
        if not copy.is_file() or copy.read_bytes() != prompt_file.read_bytes():
            return
    atomic_write_json(folder / "eval.json", report)


def list_runs(project: Project) -> list[dict[str, Any]]:
    """One summary per run, oldest first: method, shots, seed, epochs, accuracies."""
    root = runs_dir(project)
    current = current_run(project)
    rows = []
    folders = [p for p in root.iterdir() if (p / "result.json").is_file()] if root.is_dir() else []
    for folder in sorted(folders, key=lambda p: ((p / "result.json").stat().st_mtime, p.name)):
        config = _read(folder / "run_config.json")
        result = _read(folder / "result.json")
        report = _read(folder / "eval.json")
        if not config:
            continue
        dualpt = _field(report, "dualpt", dict) or {}
        name = _field(config, "method", str) or "dualpt"  # run configs from before --method: dualpt
        method = METHOD_TITLES.get(name, name) + (" CSC" if config.get("class_specific") is True else "")
        if name in ("dualpt", "codualpt"):
            method += "" if _field(config, "beta", float) else ", no LLM"
        rows.append({
            "name": folder.name, "current": folder.name == current, "method": method,
            "model": _field(config, "model", str), "shots": _field(config, "shots", int),
            "seed": _field(config, "seed", int), "epochs": _field(config, "epochs", int),
            "train_accuracy": _field(result, "train_accuracy", float),
            "val_accuracy": _field(result, "val_accuracy", float), "eval_top1": _field(dualpt, "top1", float),
            "eval_folder": _field(report, "images", str), "eval_images": _field(dualpt, "images", int),
        })  # fmt: skip
    return rows


def config_from_file(path: str | Path) -> dict[str, Any]:
    """The :class:`train.TrainConfig` fields of a saved ``run_config.json`` (resolved extras dropped)."""
    from .config import TrainConfig

    try:
        data = json.loads(read_user_text(Path(path), "--config"))  # a file the user names: no device, capped
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{path} is not a dualpt run_config.json (no 'images'); pass runs/NAME/run_config.json")
    known = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in data.items() if k in known and k not in ("project", "resume", "profile")}


def _field(data: dict[str, Any], key: str, kind: type) -> Any:
    """``data[key]`` if it is a ``kind`` (a float may be an int; never a bool), else None: a hand-edited run
    shows a blank, not a traceback."""
    value = data.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if kind is float:
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None
    return value if isinstance(value, kind) else None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_user_text(path, "run file"))
    except (DualptError, ValueError, RecursionError):  # RecursionError: nested 100,000 deep
        return {}
    return data if isinstance(data, dict) else {}
