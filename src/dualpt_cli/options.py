"""Checks shared by the commands' option validation."""

from __future__ import annotations

import math

from .errors import DataError


def require_finite(values: dict[str, float | int | None]) -> None:
    """A :class:`DataError` naming the first option that is NaN or infinite (``--lr inf`` diverges)."""
    for option, value in values.items():
        if value is not None and not math.isfinite(value):
            raise DataError(f"{option} must be a finite number, got {value}")
