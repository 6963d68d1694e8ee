"""Splitting a list over torchrun ranks and joining the parts again, in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def shard_bounds(n: int, rank: int, world: int, align: int = 1) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous share of ``n`` items, cut only at multiples of ``align``.

    Contiguous, not strided, so the merge is a concatenation in rank order: rank 0 can restore the input
    order by appending each rank's part, even from streamed part files and when an item yields several
    rows or none. Whole blocks of ``align`` items are dealt out as evenly as possible (the shares differ by
    at most one block); ``align`` lets a caller keep its batches the same as in one process.
    """
    if world < 1 or not 0 <= rank < world or align < 1:
        raise ValueError(f"shard_bounds: need 0 <= rank < world and align >= 1, got {rank=}, {world=}, {align=}")
    blocks = -(-n // align)  # ceil
    lo, hi = rank * blocks // world * align, (rank + 1) * blocks // world * align
    return min(lo, n), min(hi, n)


def shard(items: Sequence[T], rank: int, world: int, align: int = 1) -> list[T]:
    """Rank ``rank``'s contiguous share of ``items`` (see :func:`shard_bounds`)."""
    lo, hi = shard_bounds(len(items), rank, world, align)
    return list(items[lo:hi])


def merge_shards(parts: Sequence[Sequence[T]]) -> list[T]:
    """The inverse of :func:`shard`: the ranks' parts, given in rank order, back in input order."""
    return [item for part in parts for item in part]
