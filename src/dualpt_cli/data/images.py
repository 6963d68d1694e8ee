"""Images on disk: robust decoding, ImageFolder scanning and deterministic few-shot sampling (streaming batches
to classify: :mod:`stream`). One rule for hidden files (:func:`hidden`) holds for every scan."""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import random
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

from ..core.userfiles import file_kind
from ..errors import DataError

# torchvision's ImageFolder extensions and .gif (its first frame): the one list for folder scans, globs and
# files named on the command line alike
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class BadImage(Exception):
    """An image file that cannot be decoded; carries a short reason."""


MAX_PIXELS = 90_000_000  # larger images are refused (a 144-megapixel PNG decodes at 1.7 GB); JPEGs are drafted down
JPEG_FORMATS = ("JPEG", "MPO")


def hidden(name: str) -> bool:
    """The one rule for hidden files and folders, left out of every scan: a name starting with a dot."""
    return name.startswith(".")


def has_image_extension(path: Path) -> bool:
    return path.suffix.lower() in IMG_EXTENSIONS


def is_image_file(path: Path) -> bool:
    return has_image_extension(path) and not hidden(path.name)


def folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); hidden files and anything in hidden folders are left out.

    A folder that cannot be listed (no read permission) is a :class:`DataError` naming it, not "no images"."""

    def unreadable(exc: OSError) -> None:
        raise DataError(f"cannot read folder {exc.filename}: {exc.strerror or exc}; check its permissions") from None

    found = []
    for top, dirs, files in os.walk(folder, onerror=unreadable):  # symlinked folders are not followed
        dirs[:] = [d for d in dirs if not hidden(d)]
        found += [p for p in (Path(top) / f for f in files) if is_image_file(p) and p.is_file()]
    return sorted(found)


def load_image(path: str | os.PathLike | Image.Image) -> Image.Image:
    """Decode an image as 8-bit RGB, handling what real folders contain.

    EXIF rotation is applied; CMYK, palette, grey and 16-bit images are converted; transparency is
    composited onto white. A JPEG over :data:`MAX_PIXELS` is decoded at a reduced scale; other images over
    it are refused. Raises :class:`BadImage` for anything that cannot be decoded (whatever the decoder
    raised: one decoder, one behaviour for train, predict and eval). An image already in memory (PIL) is
    only converted.
    """
    if isinstance(path, Image.Image):
        return _to_rgb(path)
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block, /dev/zero never end; both have st_size 0
            raise BadImage(f"{file_kind(st.st_mode)}, not a regular file; pass an image file")
        if st.st_size == 0:
            raise BadImage("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's EXIF warnings; the pixel limit is checked below instead
            with Image.open(path) as im:
                _limit_pixels(im)
                im.load()
                try:
                    upright = ImageOps.exif_transpose(im)
                except Exception as exc:  # noqa: BLE001 - PIL raises struct.error, KeyError, ... on bad EXIF
                    raise BadImage(f"malformed EXIF metadata ({type(exc).__name__}: {exc})") from None
                return _to_rgb(upright)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's problem only
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise BadImage(f"cannot decode image ({reason})") from None


def _limit_pixels(im: Image.Image) -> None:
    """Draft a large JPEG down to at most MAX_PIXELS (decoding at 1/2, 1/4 or 1/8 scale); refuse other big images."""
    w, h = im.size
    if w * h <= MAX_PIXELS:
        return
    if im.format in JPEG_FORMATS:
        scale = 2
        while scale < 8 and (w // scale) * (h // scale) > MAX_PIXELS:
            scale *= 2
        im.draft("RGB", (w // scale, h // scale))
        if im.size[0] * im.size[1] <= MAX_PIXELS:
            return
    raise BadImage(
        f"image is {w}x{h} ({w * h / 1e6:.0f} megapixels), above dualpt's limit of "
        f"{MAX_PIXELS / 1e6:.0f} megapixels; downscale it"
    )


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: rescale to 8 bits
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype("uint8"), mode="L")
    elif im.mode == "F":
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        im = Image.fromarray(((arr - lo) / max(hi - lo, 1e-12) * 255.0).astype("uint8"), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def file_digest(path: Path) -> str:
    """sha256 of a file's content: the cache key of its features."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# images to classify: paths, globs, folders -> batches with per-item errors


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image paths from files, folders (recursive) and globs, in the order given, without duplicates.

    A missing path, an empty folder or a glob that matches no image is an error before anything runs, and so
    is a file named here that is not a regular file or not named as an image (:data:`IMG_EXTENSIONS`, the
    list folders are scanned for). A name that exists is taken as given even if it holds glob characters
    (``a[1].png`` is that file, not ``a1.png``); only a name that does not exist is a glob.
    """
    if not inputs:
        raise DataError("no images given; pass image files, folders or globs")
    out: dict[Path, None] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if glob.has_magic(item) and not os.path.lexists(path):  # a name that exists is taken as given
            found: list[Path] = []
            for match in sorted(glob.glob(str(path), recursive=True)):
                found += folder_images(Path(match)) if Path(match).is_dir() else [Path(match)]
            found = [p for p in found if is_image_file(p)]
            if not found:
                raise DataError(f"{item} matches no image files ({', '.join(IMG_EXTENSIONS)})")
        elif path.is_dir():
            found = folder_images(path)
            if not found:
                raise DataError(f"folder {item} has no images ({', '.join(IMG_EXTENSIONS)})")
        elif path.exists():
            found = [_named_image(item, path)]
        else:
            raise DataError(f"{item} does not exist")
        out.update(dict.fromkeys(found))
    return list(out)


def _named_image(item: str, path: Path) -> Path:
    """``path``, named on the command line, if it is a regular file with an image extension; else a DataError."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise DataError(f"{item} is {file_kind(mode)}, not a regular file; pass an image file")
    if not has_image_extension(path):
        raise DataError(f"{item} is not named as an image dualpt reads ({', '.join(IMG_EXTENSIONS)}); rename it")
    return path


# ---------------------------------------------------------------------------------------------------------
# ImageFolder


def scan_image_folder(root: str | Path, exclude: Path | None = None) -> dict[str, list[Path]]:
    """{class folder: sorted image paths} for an ImageFolder; clear errors for unusable layouts.

    Hidden folders and files are left out, and so is ``exclude`` (the project folder, when it is inside).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass an ImageFolder with one sub-folder per class")
    skip = exclude.resolve() if exclude is not None else None
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not hidden(p.name) and p.resolve() != skip)
    except OSError as exc:
        raise DataError(f"cannot read folder {root}: {exc.strerror or exc}; check its permissions") from None
    if not folders:
        raise DataError(f"{root} has no class sub-folders; put each class's images in {root}/<class name>/")
    classes = {folder.name: folder_images(folder) for folder in folders}
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(
            f"class folder(s) with no images in {root}: {', '.join(empty)}; add images "
            f"({', '.join(IMG_EXTENSIONS)}) or remove the folder"
        )
    return classes


def inside(path: Path, folder: Path) -> bool:
    """True if ``path`` is ``folder``'s child folder (it would be scanned as a class)."""
    return path.resolve().parent == Path(folder).resolve()


def looks_decodable(path: Path) -> bool:
    """A cheap check before an image is drawn into a sample: it is not empty and PIL recognises its header."""
    try:
        if path.stat().st_size == 0:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                w, h = im.size
                return w > 0 and h > 0
    except Exception:  # noqa: BLE001 - anything PIL raises means "not an image we can use"
        return False


def few_shot_split(
    classes: dict[str, list[Path]],
    shots: int | None,
    seed: int,
    val_shots: int = 0,
    usable: Callable[[Path], bool] | None = None,
) -> tuple[dict[str, list[Path]], dict[str, list[Path]], list[str]]:
    """Choose ``shots`` training (and ``val_shots`` disjoint validation) images per class.

    Deterministic across runs and machines: paths are sorted, the RNG is seeded per class from
    ``seed`` and the folder name. Images are taken in that shuffled order, passing over those for which
    ``usable(path)`` is False (checked lazily, only as far as the sample needs), so an unreadable file is
    replaced by the next good one. ``shots=None`` takes every usable image. Returns (train, val, warnings).
    """
    if len(classes) < 2:
        only = ", ".join(classes) or "none"
        raise DataError(
            f"training needs at least two classes to tell apart, found one class folder ({only}); "
            "add a sub-folder of images for each class"
        )
    usable = usable or (lambda path: True)
    train: dict[str, list[Path]] = {}
    val: dict[str, list[Path]] = {}
    notes: list[str] = []
    for folder, files in classes.items():
        files = sorted(files)
        rng = random.Random(f"{seed}:{folder}")
        order = files[:]
        rng.shuffle(order)
        good = (p for p in order if usable(p))
        if val_shots:
            val[folder] = sorted(itertools.islice(good, val_shots))
            if len(val[folder]) < val_shots:
                raise DataError(
                    f"class {folder!r} has {len(val[folder])} usable images, not enough for --val-shots "
                    f"{val_shots} plus training; lower --val-shots"
                )
        chosen = list(good if shots is None else itertools.islice(good, shots))
        if not chosen and val_shots:
            raise DataError(
                f"class {folder!r} has {val_shots} usable images, not enough for --val-shots {val_shots} "
                "plus training; lower --val-shots"
            )
        if not chosen:
            raise DataError(
                f"no usable training image for class {folder!r} ({len(files)} file(s), none can be "
                "decoded); add readable images"
            )
        if shots is not None and len(chosen) < shots:
            notes.append(f"class {folder!r} has only {len(chosen)} training image(s) for --shots {shots}; using all")
        train[folder] = sorted(chosen)
    return train, val, notes
