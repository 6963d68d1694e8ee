"""Small generated ImageFolders for tests: one sub-folder per colour, a few noisy images each.

Images are deterministic (seeded) so tests are reproducible; colours are far apart so even a tiny random
CLIP separates them a little after prompt tuning.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 220, 40),
    "purple": (140, 40, 160),
    "dark_grey": (60, 60, 60),
}


def make_image(colour: tuple[int, int, int], size: int = 64, seed: int = 0) -> Image.Image:
    """A ``colour`` square with per-pixel noise and a random darker ellipse."""
    rng = random.Random(seed)
    im = Image.new("RGB", (size, size), colour)
    px = im.load()
    for y in range(size):
        for x in range(size):
            r, g, b = px[x, y]
            n = rng.randint(-25, 25)
            px[x, y] = (max(0, min(255, r + n)), max(0, min(255, g + n)), max(0, min(255, b + n)))
    draw = ImageDraw.Draw(im)
    x0, y0 = rng.randint(0, size // 2), rng.randint(0, size // 2)
    x1, y1 = x0 + rng.randint(size // 6, size // 2), y0 + rng.randint(size // 6, size // 2)
    draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c * 0.6) for c in colour))
    return im


def make_image_folder(
    root: str | Path,
    classes: list[str] | None = None,
    per_class: int = 4,
    size: int = 64,
    seed: int = 0,
    ext: str = ".png",
) -> Path:
    """Write ``root/<class>/<class>_<i><ext>`` for each class (names from :data:`COLOURS`); return ``root``."""
    root = Path(root)
    classes = classes or ["red", "green", "blue"]
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = COLOURS[name]
        for i in range(per_class):
            im = make_image(colour, size=size + 8 * (i % 3), seed=seed * 1000 + c * 100 + i)
            im.save(folder / f"{name}_{i}{ext}")
    return root


def write_corrupt_image(path: str | Path) -> Path:
    """A file with an image extension whose content is not an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return path
