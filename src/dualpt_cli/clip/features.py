"""Frozen-encoder feature cache: each training image's augmented views are encoded once, ever.

CLIP is frozen during prompt tuning, so the features of an augmented view never change. Research code
re-encodes every image at every step; we encode V views per image once, keep the global and local
features in the user's cache (keyed by model + file content + view; shared by all projects, see
``project.user_cache_dir``), and let each epoch draw a view.

View ``v`` of an image is a deterministic function of (file content, v, augmentation seed), so the cache
is exact: a cached view equals a fresh encoding of the same view (tested), and raising ``--aug-views``
only encodes the new views. Each entry stores a checksum of every tensor: an entry whose data was changed
(NaN, zeros) or that has no checksums is encoded again, like one whose header is damaged.

Under torchrun (``encode_views(..., dist=...)``) the ranks share the work: each looks up and encodes a
contiguous shard, writing its own entries (whole files, renamed into place) to the cache, which must be on
a filesystem every rank sees; then every rank reads the entries it did not make. The result equals one
process's bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..core.distributed import SINGLE, Dist
from ..core.project import atomic_write_bytes
from ..data.images import BadImage, file_digest, load_image
from ..errors import DistributedError, ProjectError
from .backbone import Backbone

EVAL_VIEW = -1  # the un-augmented test-time view (resize + center crop)


def model_key(bb: Backbone, aug_scale: tuple[float, float], aug_seed: int = 0) -> str:
    """Cache folder name: everything that changes a feature (weights, precision, preprocessing, augmentation)."""
    name, pretrained = bb.spec.resolved()
    ident: dict[str, Any] = {
        "name": name,
        "pretrained": pretrained,
        "precision": bb.precision,
        "pp": bb.preprocess_cfg,
        "scale": list(aug_scale),
    }
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
    dist: Dist = SINGLE,
) -> FeatureSet:
    """Features of ``views`` (view indices >= 0, or ``EVAL_VIEW``) of each image, from cache or encoded.

    Images that cannot be decoded are skipped and reported in ``FeatureSet.bad``. Under torchrun (``dist``
    of several ranks) with a cache, each rank encodes its shard of the images and every rank returns the
    whole set, equal to one process's (see :func:`_encode_sharded`); without a cache every rank encodes all.
    """
    folder = cache_dir / model_key(bb, aug_scale, aug_seed) if cache_dir is not None else None
    if dist.distributed and folder is not None:
        return _encode_sharded(bb, paths, views, folder, aug_seed, aug_scale, batch_size, on_progress, dist)
    kept, bad, got, _ = _encode(bb, paths, views, folder, aug_seed, aug_scale, batch_size, on_progress)
    return _feature_set(bb, views, [paths[i] for i in kept], got, [(paths[i], why) for i, why in bad])


def _encode(
    bb: Backbone,
    paths: list[Path],
    views: list[int],
    folder: Path | None,
    aug_seed: int,
    aug_scale: tuple[float, float],
    batch_size: int,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[int], list[tuple[int, str]], list[dict[int, tuple[torch.Tensor, torch.Tensor]]], list[str]]:
    """(kept images, bad images with the reason, per kept image {view: (global, local)}, kept images' digests).

    Images are given by their position in ``paths``.

    Views missing from the cache folder ``folder`` (None: no cache) are encoded in batches of ``batch_size``
    views, in image order, and each image's entry is written as soon as all its views are there.
    """
    train_tf, eval_tf = bb.train_transform(aug_scale), bb.eval_transform()
    store_dtype = torch.float32 if bb.precision == "fp32" else bb.dtype  # lossless: features are made in it
    kept: list[int] = []
    digests: list[str] = []
    bad: list[tuple[int, str]] = []
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
                file = cache_files[slot]
                if file is not None:  # saved as we go: an interrupted run keeps what it encoded
                    _write_cache(file, got[slot])
                unsaved.discard(slot)

    for position, path in enumerate(paths):
        try:
            digest = file_digest(path)
        except OSError as exc:
            bad.append((position, f"cannot read ({exc.strerror})"))
            continue
        cache_file = _entry(folder, digest) if folder is not None else None
        cached = _read_cache(cache_file)
        missing = [v for v in views if f"g{v}" not in cached]
        if missing:
            try:
                image = load_image(path)
            except BadImage as exc:
                bad.append((position, str(exc)))
                continue
        slot = len(kept)
        kept.append(position)
        digests.append(digest[:40])
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
    return kept, bad, got, digests


def _encode_sharded(
    bb: Backbone,
    paths: list[Path],
    views: list[int],
    folder: Path,
    aug_seed: int,
    aug_scale: tuple[float, float],
    batch_size: int,
    on_progress: Callable[[int], None] | None,
    dist: Dist,
) -> FeatureSet:
    """:func:`encode_views` on several ranks: look up in shards, encode the missing in shards, all read all.

    1. Each rank hashes a contiguous shard of the images and looks their entries up in the cache; the
       all-gather of the answers tells every rank which images still miss views.
    2. Those images are dealt out again in contiguous shards, so a half-filled cache (an interrupted run)
       does not leave one rank encoding while the others wait out the timeout. The shard unit is the image
       (its views share one cache file, so ranks write disjoint files), cut at multiples of
       ``batch_size / gcd(batch_size, V)`` images: with nothing cached every rank encodes exactly the
       batches one process would, so the features are bit-for-bit the same even where a kernel's result
       depends on the batch it runs in.
    3. The all-gather of what each rank encoded is the barrier: when it returns every entry is written
       (atomically), and each rank reads the entries it did not encode from the shared cache.
    """
    listing = hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()
    lo, hi = dist.shard_bounds(len(paths))
    looked = [_look_up(folder, path, views) for path in paths[lo:hi]]  # (digest or None, cached?, reason)
    parts = dist.all_gather_json(
        {"listing": listing, "looked": looked}, "feature cache: waiting for every rank to look its shard up"
    )
    if any(part["listing"] != listing for part in parts):
        raise DistributedError(
            f"feature cache: the ranks were given different image lists ({len(paths)} images on "
            f"rank {dist.rank}); run every rank on the same image folder, on a shared filesystem"
        )
    looked = [entry for part in parts for entry in part["looked"]]  # (digest, cached, reason) per image
    todo = [i for i, (digest, cached, _) in enumerate(looked) if digest is not None and not cached]
    mine = dist.shard(todo, align=batch_size // math.gcd(batch_size, len(views)))
    kept, bad, got, _ = _encode(
        bb, [paths[i] for i in mine], views, folder, aug_seed, aug_scale, batch_size, on_progress
    )
    encoded = {mine[k]: views_of for k, views_of in zip(kept, got)}
    failed = dist.all_gather_json(
        [[mine[k], reason] for k, reason in bad], "feature cache: waiting for every rank to encode its share"
    )
    reasons = {i: reason for i, (digest, _, reason) in enumerate(looked) if digest is None}
    reasons.update({i: reason for part in failed for i, reason in part})
    all_kept, all_got = [], []
    for i, (digest, _, _) in enumerate(looked):
        if i in reasons or digest is None:  # (no digest: a reason too)
            continue
        if i not in encoded:  # cached before, or encoded by another rank
            entry = _entry(folder, digest)
            cached = _read_cache(entry)
            if any(f"g{v}" not in cached for v in views):
                raise DistributedError(
                    f"feature cache: rank {dist.rank} cannot read {entry}, the features of {paths[i]} another rank "
                    "wrote; the cache must be on a filesystem every rank shares (set $DUALPT_CACHE to such a folder)"
                )
            encoded[i] = {v: (cached[f"g{v}"], cached[f"l{v}"]) for v in views}
            if on_progress:
                on_progress(1)
        all_kept.append(paths[i])
        all_got.append(encoded.pop(i))
    bad_list = [(paths[i], reasons[i]) for i in sorted(reasons)]
    return _feature_set(bb, views, all_kept, all_got, bad_list)


def _look_up(folder: Path, path: Path, views: list[int]) -> tuple[str | None, bool, str]:
    """(content digest, whether the cache holds all ``views`` of the image, why it cannot be read)."""
    try:
        digest = file_digest(path)[:40]
    except OSError as exc:
        return None, False, f"cannot read ({exc.strerror})"
    names = set(_read_cache(_entry(folder, digest)))  # missing, damaged or changed: encoded again
    return digest, all(f"g{v}" in names and f"l{v}" in names for v in views), ""


def _entry(folder: Path, digest: str) -> Path:
    """The cache file of the image whose content has sha256 ``digest``."""
    return folder / f"{digest[:40]}.safetensors"


def _feature_set(
    bb: Backbone,
    views: list[int],
    kept: list[Path],
    got: list[dict[int, tuple[torch.Tensor, torch.Tensor]]],
    bad: list[tuple[Path, str]],
) -> FeatureSet:
    """The kept images' views stacked in ``views`` order."""
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
    """The entry's tensors whose checksum holds; a damaged or changed one is left out (and encoded again)."""
    if path is None or not path.is_file():
        return {}
    try:
        with safe_open(str(path), "pt") as fh:
            sums = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError):  # a damaged cache entry is recomputed
        return {}
    return {key: t for key, t in tensors.items() if sums.get(key) == _checksum(t) and bool(torch.isfinite(t).all())}


def _checksum(t: torch.Tensor) -> str:
    """sha256 (32 hex digits) of a tensor's bytes."""
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:32]


def _write_cache(path: Path, views: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Merge ``views`` into the image's cache file (other runs may have stored other views).

    The cache is shared by every project of the user, so two processes may add views of the same image at
    once: the read-merge-write holds a lock on the entry (where the OS has ``flock``), and the write itself
    is atomic, so a reader never sees half a file.
    """
    try:
        with _entry_lock(path):
            tensors = _read_cache(path)
            tensors.update({f"g{v}": g.contiguous() for v, (g, _) in views.items()})
            tensors.update({f"l{v}": loc.contiguous() for v, (_, loc) in views.items()})
            atomic_write_bytes(path, save(tensors, metadata={k: _checksum(t) for k, t in tensors.items()}))
    except OSError as exc:  # its folder cannot be made or locked (a file, /dev/null, read-only); a failed write
        raise ProjectError(  # of the entry itself is atomic_write_bytes's ProjectError, naming the entry
            f"cannot write the feature cache in {path.parent} ({exc.strerror}); set $DUALPT_CACHE to a writable folder"
        ) from None


@contextlib.contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
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
