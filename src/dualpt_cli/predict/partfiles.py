"""``dualpt predict``'s rows from several torchrun ranks, written as one output in input order.

Each rank classifies a contiguous shard of the images and streams its rows to a part file beside the
output (``.NAME.TOKEN.partR``: hidden, in the output's folder, so on the filesystem the ranks share). The
all-gather after the last row is the barrier: then rank 0, which wrote its own rows into the output's
temporary file meanwhile, appends the parts in rank order, renames the file over the output
(:func:`output.open_output`) and removes the parts. jsonl and csv parts are in the output's format (csv
without its header) and are copied byte for byte; json and table need every row first, so their parts are
jsonl rows that rank 0 reads back into its writer. Without ``--output`` (stdout) there is no shared folder
to put parts in: the other ranks' rows travel to rank 0 as JSON at the end, so labelling millions of images
should go to a file.

A rank that fails or is stopped removes its own part; rank 0 removes every part on its way out, also when
it fails, so a failed job leaves neither the output nor parts. A job that could not clean up (rank 0 killed
outright, or refused before it wrote) leaves hidden ``.NAME.*.tmp`` and ``.part`` files: the next run
writing that output removes them (:func:`remove_stale`), passing over those a live job holds locked. In
one process this is just the output written as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ..core.distributed import Dist
from ..core.project import output_path, try_lock, write_failure
from ..errors import DataError, DistributedError
from .output import JsonlWriter, RowWriter, hold, open_output

STREAMED = ("jsonl", "csv")  # formats whose parts are copied as they are
WriterFor = Callable[[IO[str], bool], RowWriter]  # (stream, whether it starts the file) -> the output's writer


def write_sharded(
    rows: Iterable[dict[str, Any]],
    fmt: str,
    output: str | None,
    writer_for: WriterFor,
    dist: Dist,
    rows_done: Callable[[], None] = lambda: None,
) -> int:
    """Write this rank's ``rows`` (rank 0: the whole output); the number of error rows over all ranks.

    ``rows_done`` is called once this rank's rows are all written (predict stops its progress bar there,
    before a table is drawn). Every rank returns only after rank 0 has written the output.
    """
    path = output_path(output)  # None: stdout
    token = dist.broadcast_json(secrets.token_hex(4), "predict: waiting for every rank to start")
    if dist.is_main:
        if path is not None:
            remove_stale(path, token)
        failed = _write_main(rows, fmt, path, token, writer_for, dist, rows_done)
    else:
        failed = _write_part(rows, fmt, path, token, writer_for, dist, rows_done)
    dist.barrier("predict: waiting for rank 0 to write the output")
    return failed


def part_path(output: Path, token: str, rank: int) -> Path:
    """Where rank ``rank`` streams its rows for ``output`` in the job whose token is ``token``."""
    return output.with_name(f".{output.name}.{token}.part{rank}")


def remove_stale(output: Path, token: str) -> list[Path]:
    """Remove what earlier runs writing ``output`` left beside it (``.NAME.XXXXXXXX.tmp`` of rank 0 killed
    outright, ``.NAME.TOKEN.partR`` of a job that stopped before rank 0 gathered them): only names of that
    pattern, not of this job (``token``), and not locked by a live writer (:func:`output.hold`). Returns them."""
    if sys.platform == "win32":  # no advisory locks to tell a live writer from a dead one
        return []
    name = re.escape(output.name)
    stale = re.compile(rf"\.{name}\.(?:[a-z0-9_]{{8}}\.tmp|(?!{re.escape(token)}\.)[0-9a-f]{{8}}\.part\d+)")
    try:
        with os.scandir(output.parent) as entries:
            names = [e.path for e in entries if stale.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:  # no folder yet, or one that cannot be listed: writing the output will say so
        return []
    removed = []
    for path in names:
        if _unheld(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(Path(path))
    return removed


def _unheld(path: str) -> bool:
    """True if no process holds ``path``'s lock (it can be taken); False if one does or locks do not work."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        return try_lock(fd)
    except OSError:
        return False
    finally:
        os.close(fd)


def _count(rows: Iterable[dict[str, Any]], writer: RowWriter) -> int:
    failed = 0
    for row in rows:
        failed += row["error"] is not None
        writer.write(row)
    return failed


def _write_part(
    rows: Iterable[dict[str, Any]],
    fmt: str,
    path: Path | None,
    token: str,
    writer_for: WriterFor,
    dist: Dist,
    rows_done: Callable[[], None],
) -> int:
    """A rank other than 0: its rows to its part file (or, for stdout, to rank 0 as JSON)."""
    what = "predict: waiting for every rank to classify its shard"
    if path is None:
        kept: list[dict[str, Any]] = []
        try:
            failed = _count(rows, _ListWriter(kept))
        finally:
            rows_done()
        parts = dist.all_gather_json({"failed": failed, "rows": kept}, what)
        return sum(p["failed"] for p in parts)
    part = part_path(path, token, dist.rank)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "x", encoding="utf-8", newline="") as fh:
            hold(fh.fileno())  # locked until rank 0 has its rows: no later run's cleanup takes it
            writer = writer_for(fh, False) if fmt in STREAMED else JsonlWriter(fh, 0)
            try:
                failed = _count(rows, writer)
            finally:
                rows_done()
            writer.close()
            fh.flush()
            size = fh.tell()
            parts = dist.all_gather_json({"failed": failed, "bytes": size}, what)  # collective errors: DistributedError
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DataError(write_failure(part, exc)) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return sum(p["failed"] for p in parts)


def _write_main(
    rows: Iterable[dict[str, Any]],
    fmt: str,
    path: Path | None,
    token: str,
    writer_for: WriterFor,
    dist: Dist,
    rows_done: Callable[[], None],
) -> int:
    """Rank 0 (or the only process): its rows into the output, then the other ranks' parts after them."""
    parts = [part_path(path, token, r) for r in range(1, dist.world_size)] if path is not None else []
    try:
        with open_output(path) as fh:
            writer = writer_for(fh, True)
            try:
                failed = _count(rows, writer)
            finally:
                rows_done()
            done = dist.all_gather_json(
                {"failed": failed, "bytes": 0, "rows": []}, "predict: waiting for every rank to classify its shard"
            )
            for rank, info in enumerate(done[1:], start=1):
                if path is None:
                    _count(info["rows"], writer)
                else:
                    _append(parts[rank - 1], info["bytes"], rank, fmt, fh, writer)
            writer.close()
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    return sum(info["failed"] for info in done)


def _append(part: Path, size: int, rank: int, fmt: str, fh: IO[str], writer: RowWriter) -> None:
    """Rank ``rank``'s part after the rows already in ``fh``: copied (jsonl, csv) or read back into ``writer``."""
    try:
        found = part.stat().st_size
    except FileNotFoundError:
        found = None
    if found != size:
        raise DistributedError(
            f"predict: rank 0 cannot read {part}, the rows rank {rank} wrote beside the output "
            f"({found or 0} of {size} bytes); --output must be on a filesystem every rank shares"
        )
    with open(part, encoding="utf-8", newline="") as src:
        if fmt in STREAMED:
            shutil.copyfileobj(src, fh)
        else:
            _count((json.loads(line) for line in src), writer)


class _ListWriter(RowWriter):
    """Rows kept in a list (a rank's rows for stdout, sent to rank 0 at the end)."""

    def __init__(self, rows: list[dict[str, Any]]):
        super().__init__(None, 0)  # type: ignore[arg-type]
        self.rows = rows

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
