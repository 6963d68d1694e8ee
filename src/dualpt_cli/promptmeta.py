"""The prompt file's metadata schema: the fields predict and eval read, checked once when a file is loaded.

A prompt file with a valid checksum can still carry metadata another tool or an edit put there; a field
that is missing or of the wrong kind is a one-line :class:`PromptFileError` naming it, never a KeyError
deep inside predict. Fields not listed here are free (newer dualpt versions add some).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import PromptFileError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_names(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) and x.strip() for x in v)


META_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, str) and bool(v.strip()), "a model name"),
    "pretrained": (lambda v: isinstance(v, str), "a string"),
    "class_names": (_is_names, "a non-empty list of names"),
    "n_prompts": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "n_ctx": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "embed_dim": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "class_specific": (lambda v: isinstance(v, bool), "true or false"),
    "logit_scale": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "alpha": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "lambda": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "outer_iters": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "inner_iters": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "tol": (lambda v: _is_number(v) and v > 0, "a positive number"),
}
OPTIONAL_META: dict[str, tuple[Callable[[Any], bool], str]] = {
    "class_folders": (_is_names, "a non-empty list of names"),
    "text_width": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "num_local": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "image_fingerprint": (lambda v: isinstance(v, list) and len(v) > 0 and all(_is_number(x) for x in v),
                          "a list of numbers"),
}


def check_meta(path: Path, meta: Any) -> None:
    """A :class:`PromptFileError` naming the first metadata field that is missing or of the wrong kind."""
    if not isinstance(meta, dict):
        raise PromptFileError(f"{path} has metadata that is not a JSON object; re-create it with dualpt train")
    for key, (ok, what) in {**META_SCHEMA, **OPTIONAL_META}.items():
        if key not in meta:
            if key in META_SCHEMA:
                raise PromptFileError(f"{path} lacks metadata field {key!r}; re-create it with dualpt train")
            continue
        if not ok(meta[key]):
            raise PromptFileError(f"{path}: metadata field {key!r} must be {what}, got {str(meta[key])[:60]!r}; "
                                  "re-create it with dualpt train")
    names, folders = meta["class_names"], meta.get("class_folders")
    if folders is not None and len(folders) != len(names):
        raise PromptFileError(f"{path}: {len(folders)} class folders for {len(names)} class names in its metadata; "
                              "re-create it with dualpt train")
    seen: set[str] = set()
    for name in names:
        if name.casefold() in seen:
            raise PromptFileError(f"{path} names class {name!r} twice; re-create it with dualpt train")
        seen.add(name.casefold())
