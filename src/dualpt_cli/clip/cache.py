"""The per-user cache (``dualpt cache info`` / ``dualpt cache clear``).

``<cache>/features/<model key>/<image digest>.safetensors`` holds the frozen CLIP features of an image's
augmented views (see :mod:`features`), ``<model key>-eval/`` those of the evaluation view of the images
``dualpt eval`` scores (see :mod:`evalcache`). Entries are content-addressed, so every project of the user shares
them, and deleting any of them only costs encoding again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.project import user_cache_dir
from ..errors import ProjectError


def features_dir() -> Path:
    return user_cache_dir() / "features"


def cache_info() -> dict[str, Any]:
    """Where the cache is, and per model: entries (images) and bytes."""
    root = features_dir()
    models = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            entries = list(folder.glob("*.safetensors"))
            models.append({"model_key": folder.name, "entries": len(entries), "bytes": _size(entries)})
    return {
        "path": str(root),
        "env": _source(),
        "entries": sum(m["entries"] for m in models),
        "bytes": sum(m["bytes"] for m in models),
        "models": models,
    }


def clear_cache() -> dict[str, Any]:
    """Delete every cached feature; safe while another process writes (its new entries may stay)."""
    root = features_dir()
    removed, freed = 0, 0
    if root.is_dir():
        for dirpath, _, files in os.walk(root, topdown=False):
            for name in files:
                path = Path(dirpath) / name
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:  # replaced or removed by another process meanwhile
                    continue
                except OSError as exc:  # a read-only cache: say so once, and what was removed before
                    raise ProjectError(
                        f"cannot delete {path} ({exc.strerror}); {removed} entries removed before it; check the "
                        f"permissions of {root} (or set $DUALPT_CACHE to another folder)"
                    ) from None
                if name.endswith(".safetensors"):
                    removed, freed = removed + 1, freed + size
            try:
                Path(dirpath).rmdir()
            except OSError:  # not empty: another process is writing there
                pass
    return {"path": str(root), "entries_removed": removed, "bytes_freed": freed}


def _size(files: list[Path]) -> int:
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _source() -> str:
    if os.environ.get("DUALPT_CACHE"):
        return "$DUALPT_CACHE"
    return "$XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "default"
