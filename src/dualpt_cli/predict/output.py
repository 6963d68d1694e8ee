"""Prediction rows and where they go: one row per image, four formats (table, json, jsonl, csv).

jsonl and csv are flushed row by row; json and table need every row first. A file is written beside its
final name and renamed over it at the end (``.partial`` on Ctrl-C), so nothing is half-written.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from ..core.project import output_path, temp_beside, try_lock, write_failure
from ..core.userfiles import shown
from ..core.vocab import FORMATS  # noqa: E402,F401
from ..errors import DataError

DIGITS = 6  # decimals of every probability and metric in machine output (JSON, CSV)


def rounded(obj: Any, digits: int = DIGITS) -> Any:
    """``obj`` with every float rounded to ``digits`` decimals (float32 sums print as 0.9416666626930237)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def make_row(
    image: str | Path, probs: torch.Tensor | None, names: list[str], top_k: int, error: str | None = None
) -> dict[str, Any]:
    """One output row: the top-k classes with probabilities, or the error that stopped this image."""
    if probs is not None and not bool(torch.isfinite(probs).all()):  # never a NaN in the output (invalid JSON)
        probs, error = None, "the model gave non-finite scores for this image"
    if probs is None:
        return {"image": shown(image), "class": None, "prob": None, "top_k": [], "error": error}
    p, idx = probs.topk(min(top_k, len(names)))
    top = [{"class": names[i], "prob": round(float(v), DIGITS)} for v, i in zip(p.tolist(), idx.tolist())]
    return {"image": shown(image), "class": top[0]["class"], "prob": top[0]["prob"], "top_k": top, "error": None}


class RowWriter:
    """Writes rows to a text stream; subclasses choose the format."""

    def __init__(self, fh: IO[str], top_k: int):
        self.fh, self.top_k = fh, top_k

    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter(RowWriter):
    def write(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.fh.flush()


class CsvWriter(RowWriter):
    """Wide CSV: image, class_1, prob_1, ..., class_k, prob_k, error (the header row unless ``header`` is False:
    a torchrun rank's part of the file, appended to rank 0's)."""

    def __init__(self, fh: IO[str], top_k: int, header: bool = True):
        super().__init__(fh, top_k)
        self.csv = csv.writer(fh, lineterminator="\n")
        ranks = [[f"class_{r}", f"prob_{r}"] for r in range(1, top_k + 1)]
        if header:
            self.csv.writerow(["image", *[c for pair in ranks for c in pair], "error"])
        fh.flush()

    def write(self, row: dict[str, Any]) -> None:
        cells: list[Any] = [row["image"]]
        for r in range(self.top_k):
            top = row["top_k"][r] if r < len(row["top_k"]) else None
            cells += [top["class"], f"{top['prob']:.6f}"] if top else ["", ""]
        self.csv.writerow([*cells, row["error"] or ""])
        self.fh.flush()


class _BufferedWriter(RowWriter):
    """A writer whose output needs every row first."""

    def __init__(self, fh: IO[str], top_k: int):
        super().__init__(fh, top_k)
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


class JsonWriter(_BufferedWriter):
    """One JSON array, written when all rows are in."""

    def close(self) -> None:
        self.fh.write(json.dumps(self.rows, indent=2, ensure_ascii=False) + "\n")
        self.fh.flush()


class TableWriter(_BufferedWriter):
    """A table (image, prediction, probability, runners-up) when all rows are in, drawn by ``render(rows, top_k,
    fh)``: the CLI's draws a rich table (:func:`predict_ui.render_table`), the default tab-separated lines."""

    def __init__(
        self, fh: IO[str], top_k: int, render: Callable[[list[dict[str, Any]], int, IO[str]], None] | None = None
    ):
        super().__init__(fh, top_k)
        self.render = render or plain_table

    def close(self) -> None:
        self.render(self.rows, self.top_k, self.fh)


def plain_table(rows: list[dict[str, Any]], top_k: int, fh: IO[str]) -> None:
    """The table as tab-separated lines, for a caller without a terminal UI."""
    for row in rows:
        if row["error"]:
            fh.write(f"{row['image']}\terror: {row['error']}\n")
            continue
        rest = ", ".join(f"{t['class']} {t['prob']:.1%}" for t in row["top_k"][1:])
        fh.write(f"{row['image']}\t{row['class']}\t{row['prob']:.1%}" + (f"\t{rest}" if rest else "") + "\n")
    fh.flush()


WRITERS: dict[str, type[RowWriter]] = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonlWriter, "csv": CsvWriter}


@contextlib.contextmanager
def open_output(path: str | Path | None) -> Iterator[IO[str]]:
    """stdout, or a temp file beside ``path`` renamed over it at the end (``path.partial`` on Ctrl-C)."""
    path = output_path(path)  # None for stdout (-, /dev/stdout); symlinks and devices are refused
    if path is None:
        yield sys.stdout
        return
    fd, tmp = temp_beside(path, DataError)
    hold(fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except KeyboardInterrupt:
        os.replace(tmp, f"{path}.partial")
        raise
    except OSError as exc:  # a full disk while writing rows: one line; the old file stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise DataError(write_failure(path, exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hold(fd: int) -> None:
    """Lock a temporary or part file while this process writes it, so that a later run's cleanup
    (:func:`partfiles.remove_stale`) passes over it; the lock goes with the file's closing or the process.
    Not on Windows (its locks are mandatory: rank 0 could not read a part), nor where the filesystem has none."""
    if sys.platform != "win32":
        with contextlib.suppress(OSError):
            try_lock(fd)


def format_for(fmt: str | None, output: str | None) -> str:
    """``--format``, else from the ``--output`` extension (.json, .jsonl, .csv), else table."""
    if fmt is None:
        suffix = Path(output).suffix.lower().lstrip(".") if output else ""
        return suffix if suffix in ("json", "jsonl", "csv") else "table"
    if fmt not in FORMATS:
        raise DataError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt
