"""Images on disk: robust decoding, ImageFolder scanning, and deterministic few-shot sampling."""

from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from .errors import DataError
from .project import ClassEntry, readable_name

# torchvision's ImageFolder extensions
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class BadImage(Exception):
    """An image file that cannot be decoded; carries a short reason."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMG_EXTENSIONS and not path.name.startswith(".")


def load_image(path: str | Path | Image.Image) -> Image.Image:
    """Decode an image as 8-bit RGB, handling what real folders contain.

    EXIF rotation is applied; CMYK, palette, grey and 16-bit images are converted; transparency is
    composited onto white. Raises :class:`BadImage` for anything that cannot be decoded. An image already
    in memory (PIL) is only converted.
    """
    if isinstance(path, Image.Image):
        return _to_rgb(path)
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBomb / EXIF warnings: not the user's problem
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise BadImage(f"cannot decode image ({reason})") from None


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
# ImageFolder


def scan_image_folder(root: str | Path) -> dict[str, list[Path]]:
    """{class folder: sorted image paths} for an ImageFolder; clear errors for unusable layouts."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass an ImageFolder with one sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class sub-folders; put each class's images in {root}/<class name>/")
    classes: dict[str, list[Path]] = {}
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
        classes[folder.name] = files
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(
            f"class folder(s) with no images in {root}: {', '.join(empty)}; add images "
            f"({', '.join(IMG_EXTENSIONS)}) or remove the folder"
        )
    return classes


def class_entries(folders: list[str], known: list[ClassEntry] | None) -> list[ClassEntry]:
    """Class entries for ImageFolder folders, with readable names from the project's class list."""
    by_folder = {c.folder: c for c in known or []}
    return [by_folder.get(f) or ClassEntry(folder=f, name=readable_name(f)) for f in folders]


def few_shot_split(
    classes: dict[str, list[Path]], shots: int | None, seed: int, val_shots: int = 0
) -> tuple[dict[str, list[Path]], dict[str, list[Path]], list[str]]:
    """Choose ``shots`` training (and ``val_shots`` disjoint validation) images per class.

    Deterministic across runs and machines: paths are sorted, the RNG is seeded per class from
    ``seed`` and the folder name. ``shots=None`` takes everything. Returns (train, val, warnings).
    """
    train: dict[str, list[Path]] = {}
    val: dict[str, list[Path]] = {}
    notes: list[str] = []
    for folder, files in classes.items():
        files = sorted(files)
        rng = random.Random(f"{seed}:{folder}")
        order = files[:]
        rng.shuffle(order)
        if val_shots:
            if len(order) <= val_shots:
                raise DataError(
                    f"class {folder!r} has {len(order)} images, not enough for --val-shots {val_shots} "
                    "plus training; lower --val-shots"
                )
            val[folder] = sorted(order[:val_shots])
            order = order[val_shots:]
        if shots is not None and len(order) < shots:
            notes.append(f"class {folder!r} has only {len(order)} training image(s) for --shots {shots}; using all")
        train[folder] = sorted(order if shots is None else order[:shots])
    return train, val, notes
