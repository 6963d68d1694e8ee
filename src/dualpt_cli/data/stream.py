"""Streaming images to classify: batches that turn an undecodable file into an error row, the progress hooks,
and each torchrun rank's share of the inputs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..core.distributed import Dist
from ..errors import DistributedError
from .images import BadImage, load_image


class ImageFiles(Dataset):
    """(index, pixels or None, error or None) per path; decoding errors are data, not exceptions."""

    def __init__(
        self, paths: Sequence[str | os.PathLike | Image.Image], transform: Callable[[Image.Image], torch.Tensor]
    ):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.transform(load_image(self.paths[i])), None
        except BadImage as exc:
            return i, None, str(exc)
        except Exception as exc:  # a transform failing on an odd image is that image's problem only
            return i, None, f"cannot preprocess image ({type(exc).__name__}: {exc})"


@dataclass
class ImageBatch:
    """A batch in input order: ``pixels`` (b, 3, H, W) for the ``ok`` indices, reasons for the others."""

    indices: list[int]
    ok: list[int]
    pixels: torch.Tensor | None
    errors: dict[int, str] = field(default_factory=dict)


def collate_with_errors(items: list[tuple[int, torch.Tensor | None, str | None]]) -> ImageBatch:
    good = [(i, x) for i, x, _ in items if x is not None]
    return ImageBatch(
        indices=[i for i, _, _ in items], ok=[i for i, _ in good],
        pixels=torch.stack([x for _, x in good]) if good else None,
        errors={i: e for i, _, e in items if e is not None},
    )  # fmt: skip


def default_workers(device: torch.device | None = None) -> int:
    """Decoding processes: up to 4 beside a GPU; on a CPU one per 8 cores, since decoding (about a tenth of
    a CLIP forward) in processes beside the encoder's threads slows the encoder more than it saves (on 2
    cores, 2 workers cost 40% of the rate, measured in benchmarks/bench_predict.py)."""
    cpus = os.cpu_count() or 1
    if device is not None and device.type != "cpu":
        return min(4, cpus)
    return min(4, cpus // 8)


class StreamProgress:
    """How far a command has got through its images; the CLI draws it (:class:`progress_ui.RichProgress`), the
    library stays silent. ``stop`` may be called more than once."""

    def start(self, what: str, total: int, visible: bool) -> None: ...

    def advance(self, n: int) -> None: ...

    def stop(self) -> None: ...


def image_batches(
    paths: list[Path],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int = 64,
    workers: int | None = None,
    pin_memory: bool = False,
    device: torch.device | None = None,
) -> Iterator[ImageBatch]:
    """Decode and preprocess ``paths`` (in worker processes if ``workers``); batches come in input order."""
    workers = default_workers(device) if workers is None else workers
    if len(paths) <= batch_size:
        workers = 0  # one batch: starting processes costs more than it saves
    loader = DataLoader(
        ImageFiles(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_with_errors,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    yield from loader


def shard_inputs(
    paths: list[Path], dist: Dist, align: int, what: str, settings: dict[str, Any] | None = None
) -> tuple[int, int]:
    """``[lo, hi)`` of this torchrun rank's contiguous share of ``paths``, cut at multiples of ``align`` (the
    batch size, so every rank runs exactly the batches one process would); all of them in one process.

    Every rank must have found the same images and resolved the same ``settings`` (everything that shapes the
    output: format, top-k, batch size, the prompt file's bytes, ...): a rank that sees another list (a folder
    not on a shared filesystem, a file added meanwhile) or was started with other options is a
    :class:`DistributedError` naming what differs, not a silently wrong merge.
    """
    if dist.distributed:
        mine = {"images": _digest("\n".join(map(str, paths)))}
        for key, value in (settings or {}).items():
            mine[key] = _digest(json.dumps(value, sort_keys=True, default=str))
        seen = [o if isinstance(o, dict) else {} for o in dist.all_gather_json(mine, f"{what}: listing the images")]
        if any(other.get("images") != mine["images"] for other in seen):
            raise DistributedError(
                f"{what}: the ranks found different images ({len(paths)} on rank {dist.rank}); "
                "run every rank with the same inputs, on a filesystem they all share"
            )
        differ = sorted({key for other in seen for key in mine if other.get(key) != mine[key]})
        if differ:
            raise DistributedError(
                f"{what}: the ranks were started with different settings ({', '.join(differ)}); "
                "start every rank with the same options and files"
            )
    return dist.shard_bounds(len(paths), align)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def file_digest(path: str | Path | None) -> str | None:
    """sha256 of a file's bytes (None if there is no such file): ranks compare the prompt file they loaded."""
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
