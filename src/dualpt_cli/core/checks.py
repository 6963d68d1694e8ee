"""Checks shared by the configs' option validation (each config checks itself in ``__post_init__``)."""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any

from ..errors import DataError


def require_finite(values: dict[str, float | int | None]) -> None:
    """A :class:`DataError` naming the first option that is NaN or infinite (``--lr inf`` diverges)."""
    for option, value in values.items():
        if value is not None and not math.isfinite(value):
            raise DataError(f"{option} must be a finite number, got {value}")


def check_all(checks: list[tuple[bool, str]]) -> None:
    """A :class:`DataError` with the message of the first ``(ok, message)`` pair that is not ok."""
    for ok, message in checks:
        if not ok:
            raise DataError(message)


# upper bounds of counts: far beyond any real run, low enough that no allocation they size can exhaust memory
LIMITS = {
    "--seed": 2**32 - 1,
    "--shots": 1_000_000,
    "--val-shots": 1_000_000,
    "--prompts": 64,
    "--aug-views": 1024,
    "--epochs": 100_000,
    "--batch-size": 65_536,
    "--workers": 256,
    "--top-k": 1_000_000,
    "--text-chunk": 1_000_000,
}


def bounded(values: dict[str, int | None], low: int = 1) -> None:
    """A :class:`DataError` naming the first count outside ``[low, LIMITS[option]]`` (None: not given)."""
    for option, value in values.items():
        if value is not None and value < low:
            raise DataError(f"{option} must be >= {low}, got {value}")
        if value is not None and value > LIMITS[option]:
            raise DataError(f"{option} must be at most {LIMITS[option]:,}, got {value}")


def defaults(config: type) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass (the CLI's option defaults); fields without one left out."""
    return {f.name: f.default for f in fields(config) if f.default is not MISSING}
