"""The shape of a JSON file read back (eval.json, a run's result.json, run_config.json), checked in one place.

A shape is a Python type (``int``, ``float``, ``str``, ``bool``, ``object`` for anything), ``[shape]`` for a
list of them, ``{key: shape}`` for an object with at least those keys, :class:`Each` for an object whose every
value has one shape (``compare.json``'s cells by key), or :class:`Opt` for a key that may be missing or null.
``float`` accepts an int; neither accepts a bool. A file that someone edited (or sent) with
``"gain_top1": "x"`` is then one :class:`ProjectError` naming the file and the field, never a traceback later.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ProjectError


@dataclass(frozen=True)
class Opt:
    """A key that may be missing or null."""

    shape: Any


@dataclass(frozen=True)
class Each:
    """An object whose keys are any strings and whose every value has ``shape``."""

    shape: Any


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _fits(value: Any, kind: type) -> bool:
    if kind is object:
        return True
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def _check(value: Any, shape: Any, where: str) -> str | None:
    """The first mismatch, as ``field should be ...``, else None."""
    if isinstance(shape, Opt):
        return None if value is None else _check(value, shape.shape, where)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'the file'} should be an object"
        for key, sub in shape.items():
            if key not in value:
                if isinstance(sub, Opt):
                    continue
                return f"{where + '.' if where else ''}{key} is missing"
            bad = _check(value[key], sub, f"{where + '.' if where else ''}{key}")
            if bad:
                return bad
        return None
    if isinstance(shape, Each):
        if not isinstance(value, dict):
            return f"{where or 'the file'} should be an object"
        for key, item in value.items():
            bad = _check(item, shape.shape, f"{where}[{json.dumps(key[:40])}]")
            if bad:
                return bad
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} should be a list"
        for i, item in enumerate(value):
            bad = _check(item, shape[0], f"{where}[{i}]")
            if bad:
                return bad
        return None
    if not _fits(value, shape):
        return f"{where or 'the file'} should be {_NAMES.get(shape, shape.__name__)}"
    return None


def check_shape(value: Any, shape: Any, path: Path, fix: str) -> Any:
    """``value`` (read from ``path``) if it has ``shape``; else a :class:`ProjectError` naming the field and ``fix``."""
    bad = _check(value, shape, "")
    if bad:
        raise ProjectError(f"{path}: {bad}; {fix}")
    return value
