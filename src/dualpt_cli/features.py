"""Frozen-encoder feature cache: each training image's augmented views are encoded once, ever.

CLIP is frozen during prompt tuning, so the features of an augmented view never change. Research code
re-encodes every image at every step; we encode V views per image once, keep the global and local
features in the user's cache (keyed by model + file content + view; shared by all projects, see
``project.user_cache_dir``), and let each epoch draw a view.

View ``v`` of an image is a deterministic function of (file content, v, augmentation seed), so the cache
is exact: a cached view equals a fresh encoding of the same view (tested), and raising ``--aug-views``
only encodes the new views.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .backbone import Backbone
from .data import BadImage, file_digest, load_image
from .project import atomic_write_bytes

EVAL_VIEW = -1  # the un-augmented test-time view (resize + center crop)


def model_key(bb: Backbone, aug_scale: tuple[float, float], aug_seed: int = 0) -> str:
    """Cache folder name: everything that changes a feature (weights, precision, preprocessing, augmentation)."""
    name, pretrained = bb.spec.resolved()
    ident = {"name": name, "pretrained": pretrained, "precision": bb.precision, "pp": bb.preprocess_cfg,
             "scale": list(aug_scale)}
    if aug_seed:  # seed 0 keeps the key of caches made before the seed was part of it
        ident["aug_seed"] = aug_seed
    for path in (pretrained, name.removeprefix("local-dir:")):
        if path and os.path.exists(path):  # local weights: their size and mtime stand in for content
            for f in sorted(Path(path).glob("*")) if os.path.isdir(path) else [Path(path)]:
                st = f.stat()
                ident[str(f)] = [st.st_size, int(st.st_mtime)]
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{Path(name).name.replace(':', '-')}-{bb.precision}-{digest}"


def view_seed(digest: str, view: int, aug_seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{digest}:{view}:{aug_seed}".encode()).digest()[:7], "little")


@dataclass
class FeatureSet:
    """Features of I images x V views, in host memory."""

    global_: torch.Tensor  # (I, V, d)
    local: torch.Tensor  # (I, V, N, d)
    paths: list[Path]  # the I images that decoded
    bad: list[tuple[Path, str]] = field(default_factory=list)  # images skipped, with the reason


def encode_views(
    bb: Backbone,
    paths: list[Path],
    views: list[int],
    cache_dir: Path | None,
    aug_seed: int = 0,
    aug_scale: tuple[float, float] = (0.08, 1.0),
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> FeatureSet:
    """Features of ``views`` (view indices >= 0, or ``EVAL_VIEW``) of each image, from cache or encoded.

    Images that cannot be decoded are skipped and reported in ``FeatureSet.bad``.
    """
    train_tf, eval_tf = bb.train_transform(aug_scale), bb.eval_transform()
    folder = cache_dir / model_key(bb, aug_scale, aug_seed) if cache_dir is not None else None
    store_dtype = torch.float32 if bb.precision == "fp32" else bb.dtype  # lossless: features are made in it
    kept: list[Path] = []
    bad: list[tuple[Path, str]] = []
    got: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = []  # per kept image: view -> (global, local)
    cache_files: list[Path | None] = []
    unsaved: set[int] = set()  # kept images with newly encoded views not yet in the cache
    pending: list[tuple[int, int, torch.Tensor]] = []  # (image slot, view, pixels) waiting for a batch

    def flush() -> None:
        """Encode the pending views, then save every image whose views are now all there."""
        if pending:
            z, local = bb.encode_images(torch.stack([p[2] for p in pending]))
            for (slot, view, _), zi, li in zip(pending, z, local):
                got[slot][view] = (zi.to(store_dtype).cpu(), li.to(store_dtype).cpu())
            pending.clear()
        for slot in sorted(unsaved):
            if len(got[slot]) == len(views):
                if cache_files[slot] is not None:  # saved as we go: an interrupted run keeps what it encoded
                    _write_cache(cache_files[slot], got[slot])
                unsaved.discard(slot)

    for path in paths:
        try:
            digest = file_digest(path)
        except OSError as exc:
            bad.append((path, f"cannot read ({exc.strerror})"))
            continue
        cache_file = folder / f"{digest[:40]}.safetensors" if folder is not None else None
        cached = _read_cache(cache_file)
        missing = [v for v in views if f"g{v}" not in cached]
        if missing:
            try:
                image = load_image(path)
            except BadImage as exc:
                bad.append((path, str(exc)))
                continue
        slot = len(kept)
        kept.append(path)
        cache_files.append(cache_file)
        got.append({v: (cached[f"g{v}"], cached[f"l{v}"]) for v in views if f"g{v}" in cached})
        for v in missing:
            if v == EVAL_VIEW:
                pixels = eval_tf(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(view_seed(digest, v, aug_seed))
                    pixels = train_tf(image)
            pending.append((slot, v, pixels))
            unsaved.add(slot)
            if len(pending) >= batch_size:
                flush()
        if on_progress:
            on_progress(1)
    flush()

    if not kept:
        d, n = bb.embed_dim, bb.num_local
        return FeatureSet(torch.zeros(0, len(views), d), torch.zeros(0, len(views), n, d), [], bad)
    g = torch.stack([torch.stack([views_of[v][0] for v in views]) for views_of in got])  # (I, V, d)
    loc = torch.stack([torch.stack([views_of[v][1] for v in views]) for views_of in got])  # (I, V, N, d)
    # kept in host memory (pinned for CUDA): training moves one batch at a time, so the cache is bounded by
    # RAM, not by GPU memory (1000 classes x 16 shots x 8 views of RN50 is 12 GiB in bf16)
    if bb.device.type == "cuda":
        g, loc = g.pin_memory(), loc.pin_memory()
    return FeatureSet(g, loc, kept, bad)


def _read_cache(path: Path | None) -> dict[str, torch.Tensor]:
    if path is None or not path.is_file():
        return {}
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):  # a damaged cache entry is recomputed, never trusted
        return {}


def _write_cache(path: Path, views: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Merge ``views`` into the image's cache file (other runs may have stored other views).

    The cache is shared by every project of the user, so two processes may add views of the same image at
    once: the read-merge-write holds a lock on the entry (where the OS has ``flock``), and the write itself
    is atomic, so a reader never sees half a file.
    """
    with _entry_lock(path):
        tensors = _read_cache(path)
        tensors.update({f"g{v}": g.contiguous() for v, (g, _) in views.items()})
        tensors.update({f"l{v}": loc.contiguous() for v, (_, loc) in views.items()})
        atomic_write_bytes(path, save(tensors))


@contextlib.contextmanager
def _entry_lock(path: Path):
    """An exclusive lock on the entries of ``path``'s model folder (``.lock`` there; no-op without ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic writes only; a concurrent merge may drop views (recomputed later)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
