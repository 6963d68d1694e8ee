"""``dualpt predict``: classify images with a trained prompt file and write one row per image.

The classifier is :class:`~dualpt_cli.predict.classifier.Classifier` (stored class prompt features, the training
logits, new classes encoded from the learned context); images stream through
:func:`~dualpt_cli.data.images.image_batches`, where a file that cannot be decoded becomes an error row, never a
crash; rows go to one of the writers of :mod:`dualpt_cli.predict.output`. Nothing here prints: progress and the
table go through :class:`PredictCallbacks` (the CLI's are in :mod:`dualpt_cli.ui.predict`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..core.checks import bounded, check_all
from ..core.distributed import Dist
from ..core.project import output_path, protected_reads
from ..data.classes import parse_class_list
from ..data.images import expand_inputs
from ..data.stream import StreamProgress, file_digest, image_batches, shard_inputs
from ..errors import PartialFailure
from .classifier import Classifier, load_classifier, prompt_path
from .output import WRITERS, CsvWriter, RowWriter, TableWriter, format_for, make_row, plain_table
from .partfiles import write_sharded


@dataclass
class PredictConfig:
    """Everything ``dualpt predict`` needs."""

    inputs: list[str]  # image files, folders (recursive) and globs
    project: str | None = None  # project whose prompts.safetensors to use
    prompts: str | None = None  # a prompt file (wins over project)
    top_k: int = 5  # classes per image in the output
    fmt: str | None = None  # table, json, jsonl or csv (None: from --output's extension, else table)
    output: str | None = None  # file to write (None: stdout)
    batch_size: int = 64
    workers: int | None = None  # DataLoader worker processes (None: data.default_workers(device))
    classes: str | None = None  # class list to predict over instead of the trained classes (base-to-new)
    model: str | None = None  # override the model named in the prompt file (same architecture)
    pretrained: str | None = None  # override its pretrained tag or weights file
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        bounded({"--top-k": self.top_k, "--batch-size": self.batch_size})
        bounded({"--workers": self.workers}, low=0)
        check_all(
            [
                (self.top_k >= 1, f"--top-k must be >= 1, got {self.top_k}"),
                (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
                (self.workers is None or self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            ]
        )


@dataclass
class PredictSummary:
    images: int
    failed: int
    output: str | None


class PredictCallbacks(StreamProgress):
    """Hooks the CLI fills in (:class:`predict_ui.RichPredictCallbacks`); the defaults are silent."""

    def render_table(self, rows: list[dict[str, Any]], top_k: int, fh: IO[str]) -> None:
        plain_table(rows, top_k, fh)


def predict_rows(
    clf: Classifier,
    paths: list[Path],
    top_k: int,
    batch_size: int = 64,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per path, in order, as batches finish."""
    names = clf.class_names
    pin = clf.bb.device.type == "cuda"
    for batch in image_batches(
        paths, clf.bb.eval_transform(), batch_size, workers, pin_memory=pin, device=clf.bb.device
    ):
        probs = clf.predict_batch(batch.pixels).cpu() if batch.pixels is not None else None
        slot = {i: n for n, i in enumerate(batch.ok)}
        for i in batch.indices:
            p = probs[slot[i]] if probs is not None and i in slot else None
            yield make_row(paths[i], p, names, top_k, batch.errors.get(i))
        if on_progress:
            on_progress(len(batch.indices))


def _writer(fmt: str, fh: IO[str], top_k: int, cb: PredictCallbacks, header: bool = True) -> RowWriter:
    if fmt == "table":
        return TableWriter(fh, top_k, cb.render_table)
    if fmt == "csv":
        return CsvWriter(fh, top_k, header)
    return WRITERS[fmt](fh, top_k)


def _output_settings(cfg: PredictConfig, fmt: str) -> dict[str, Any]:
    """What shapes predict's output, compared over torchrun ranks (the images are compared on their own)."""
    return {
        "--format": fmt,
        "--top-k": cfg.top_k,
        "--batch-size": cfg.batch_size,
        "--output": cfg.output,
        "--classes": file_digest(cfg.classes),
        "--prompt-file": file_digest(prompt_path(cfg.prompts, cfg.project)),
        "--model": [cfg.model, cfg.pretrained],
        "--precision": cfg.precision,
    }


def run_predict(cfg: PredictConfig, cb: PredictCallbacks | None = None, dist: Dist | None = None) -> PredictSummary:
    """Classify every input and write the rows; :class:`PartialFailure` at the end if any image failed.

    Under torchrun (``dist``, from :func:`distributed.distributed`) each rank classifies a contiguous shard
    of the inputs in whole batches, so its rows are those one process would give, and rank 0 writes every
    rank's rows in input order (:mod:`dualpt_cli.predict.partfiles`); every rank raises the same PartialFailure.
    """
    cb, dist = cb or PredictCallbacks(), dist or Dist()
    fmt = format_for(cfg.fmt, cfg.output)
    paths = expand_inputs(cfg.inputs)  # bad paths fail before the model loads
    output_path(cfg.output, "--output", protected_reads(cfg.project, cfg.prompts, paths, cfg.classes))
    entries = parse_class_list(cfg.classes) if cfg.classes else None
    lo, hi = shard_inputs(paths, dist, cfg.batch_size, "predict", _output_settings(cfg, fmt))
    clf = load_classifier(
        cfg.prompts,
        cfg.project,
        cfg.model,
        cfg.pretrained,
        entries,
        dist.device if dist.distributed else cfg.device,
        cfg.precision,
        cfg.batch_size,
    )
    top_k = min(cfg.top_k, len(clf.classes))
    cb.start("classifying", hi - lo, visible=hi - lo > cfg.batch_size)
    try:
        rows = predict_rows(clf, paths[lo:hi], top_k, cfg.batch_size, cfg.workers, on_progress=cb.advance)
        failed = write_sharded(
            rows, fmt, cfg.output, lambda fh, first: _writer(fmt, fh, top_k, cb, first), dist, rows_done=cb.stop
        )
    finally:
        cb.stop()
    if failed:
        raise PartialFailure(f"{failed} of {len(paths)} image(s) could not be read; their rows carry the error")
    return PredictSummary(images=len(paths), failed=failed, output=cfg.output)
