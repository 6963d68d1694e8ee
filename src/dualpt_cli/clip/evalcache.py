"""The evaluation view's features, cached: ``dualpt eval`` and every cell of ``dualpt compare`` encode a test
image once, ever.

The evaluation view (resize + center crop, no augmentation) of an image depends only on the model and the
file's content, so its global and local features go into the user's feature cache beside the training
views (:mod:`features`): ``<cache>/features/<model key>-eval/<image digest>.safetensors``, shared by every
project. A compare grid of methods x shots x seeds on one test folder encodes the folder in its first cell
and reads it back in all the others.

Images missing from the cache are decoded and encoded in batches of ``batch_size`` in input order, so with
an empty cache the batches (and the features) are exactly those of encoding without a cache; cached images
are read back in batches of the same size. Writes are whole files renamed into place under the model
folder's lock (:func:`features._write_cache`), so concurrent runs and torchrun ranks (each encoding its own
shard of the test images) never see half an entry. A damaged or vanished entry is encoded again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..data.images import file_digest
from ..data.stream import image_batches
from .backbone import Backbone
from .features import EVAL_VIEW, _entry, _read_cache, _write_cache, model_key

NAMES = (f"g{EVAL_VIEW}", f"l{EVAL_VIEW}")  # the entry's tensors: global (d,) and local (N, d)


@dataclass
class EvalBatch:
    """Features of some of the images, with their positions in the input list (ascending within a batch)."""

    indices: list[int]  # positions in ``paths`` of the images here
    z: torch.Tensor  # (b, d) global features, float32
    Z: torch.Tensor  # (b, N, d) local features, float32
    errors: dict[int, str]  # positions of images of this batch that could not be decoded -> reason


def eval_folder(bb: Backbone, cache_dir: Path) -> Path:
    """The cache folder of ``bb``'s evaluation views (the augmentation settings do not change them)."""
    return cache_dir / f"{model_key(bb, (1.0, 1.0))}-eval"


def eval_features(
    bb: Backbone,
    paths: list[Path],
    cache_dir: Path | None,
    batch_size: int = 64,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[EvalBatch]:
    """The evaluation view's features of every image of ``paths``, from the cache or encoded (and cached).

    Yields the encoded batches first, then the cached ones; every image appears once, in a batch's
    ``indices`` or its ``errors``. ``cache_dir`` None encodes everything and stores nothing.
    ``on_progress(n)`` after each batch of n images.
    """
    folder = eval_folder(bb, cache_dir) if cache_dir is not None else None
    entries = [_lookup(folder, p) for p in paths] if folder is not None else [(None, False)] * len(paths)
    missing = [i for i, (_, cached) in enumerate(entries) if not cached]
    cached = [i for i, (_, hit) in enumerate(entries) if hit]
    yield from _encoded(bb, paths, missing, [entries[i][0] for i in missing], batch_size, workers, on_progress)
    store = torch.float32 if bb.precision == "fp32" else bb.dtype  # lossless: features are made in it
    for start in range(0, len(cached), batch_size):
        chunk = cached[start : start + batch_size]
        read = {i: _read_cache(entries[i][0]) for i in chunk}
        gone = [i for i in chunk if any(n not in read[i] for n in NAMES)]  # damaged or removed meanwhile
        if gone:
            yield from _encoded(bb, paths, gone, [entries[i][0] for i in gone], batch_size, workers, None)
        kept = [i for i in chunk if i not in gone]
        if kept:
            z = torch.stack([read[i][NAMES[0]].to(store) for i in kept]).float()  # (b, d)
            Z = torch.stack([read[i][NAMES[1]].to(store) for i in kept]).float()  # (b, N, d)
            yield EvalBatch(kept, z.to(bb.device), Z.to(bb.device), {})
        if on_progress:
            on_progress(len(chunk))


def _encoded(
    bb: Backbone,
    paths: list[Path],
    positions: list[int],
    entries: list[Path | None],
    batch_size: int,
    workers: int | None,
    on_progress: Callable[[int], None] | None,
) -> Iterator[EvalBatch]:
    """Decode and encode ``paths[positions]`` in batches of ``batch_size``, caching each image's features."""
    store = torch.float32 if bb.precision == "fp32" else bb.dtype
    todo = [paths[i] for i in positions]
    for batch in image_batches(
        todo, bb.eval_transform(), batch_size, workers, pin_memory=bb.device.type == "cuda", device=bb.device
    ):
        errors = {positions[j]: why for j, why in batch.errors.items()}
        if batch.pixels is None:
            yield EvalBatch([], torch.zeros(0, bb.embed_dim), torch.zeros(0, bb.num_local, bb.embed_dim), errors)
        else:
            z, Z = bb.encode_images(batch.pixels)  # (b, d), (b, N, d)
            for j, zi, Zi in zip(batch.ok, z, Z):
                entry = entries[j]
                if entry is not None:
                    _write_cache(entry, {EVAL_VIEW: (zi.to(store).cpu(), Zi.to(store).cpu())})
            yield EvalBatch([positions[j] for j in batch.ok], z, Z, errors)
        if on_progress:
            on_progress(len(batch.indices))


def _lookup(folder: Path, path: Path) -> tuple[Path | None, bool]:
    """(the image's cache entry, whether it holds the evaluation view); (None, False) for an unreadable file,
    which the decoder then reports as every other bad image."""
    try:
        entry = _entry(folder, file_digest(path))
    except OSError:
        return None, False
    try:
        with safe_open(str(entry), "pt") as fh:
            return entry, all(n in fh.keys() for n in NAMES)
    except (SafetensorError, OSError, ValueError):  # missing or damaged: encoded again
        return entry, False
