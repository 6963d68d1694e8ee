"""A fresh random resized crop of every training image in every epoch, as CoOp/Dassl train (``--recipe paper``).

Dassl's training transform is ``RandomResizedCrop(224, scale=(0.08, 1), bicubic)``, ``RandomHorizontalFlip``,
CLIP's normalisation, drawn anew each time an image is loaded. Here the images are decoded once and kept in
memory (:class:`DecodedImages`); each epoch draws every image's crop and flip from one ``torch.Generator``
(:func:`draw_crops`) and the training step encodes its batch's crops (:func:`encode_crops`).

:func:`crop_box` is torchvision's ``RandomResizedCrop.get_params`` with an explicit generator, so a crop drawn
here equals the one ``bb.train_transform()`` draws after ``torch.manual_seed`` with the generator's seed
(``tests/clip/test_crops.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..data.images import load_image
from .backbone import Backbone
from .pixels import ToTensorNormalized

RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect-ratio range


@dataclass(frozen=True)
class Crop:
    """Where one view is cut from its image: top, left, height, width in pixels, and a horizontal flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


class DecodedImages:
    """The training images, decoded once (8-bit RGB, full size) and kept for the run."""

    def __init__(self, paths: list[Path]):
        self.images: list[Image.Image] = [load_image(p) for p in paths]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(height, width) of each image."""
        return [(im.height, im.width) for im in self.images]


def crop_box(height: int, width: int, scale: tuple[float, float], gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop of area ``scale`` x the image's and aspect ratio in 3/4-4/3, drawn from
    ``gen`` exactly as torchvision's ``RandomResizedCrop.get_params`` draws from the global generator
    (10 tries, then the central crop)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=gen)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=gen).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        w, h = int(round(height * max(RATIO))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_crops(sizes: list[tuple[int, int]], scale: tuple[float, float], gen: torch.Generator) -> list[Crop]:
    """One crop and flip per image, in image order: the box (:func:`crop_box`), then the flip
    (``torch.rand(1) < 0.5``, RandomHorizontalFlip's draw)."""
    crops = []
    for height, width in sizes:
        box = crop_box(height, width, scale, gen)
        crops.append(Crop(*box, flip=bool(torch.rand(1, generator=gen).item() < 0.5)))
    return crops


def crop_pixels(bb: Backbone, image: Image.Image, crop: Crop) -> torch.Tensor:
    """(3, S, S) the crop resized to the model's input (bicubic, antialiased), flipped if drawn, normalised."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    size = [bb.image_size, bb.image_size]
    view = TF.resized_crop(
        image, crop.top, crop.left, crop.height, crop.width, size, InterpolationMode.BICUBIC, antialias=True
    )
    if crop.flip:
        view = TF.hflip(view)
    pixels: torch.Tensor = ToTensorNormalized(bb.preprocess_cfg["mean"], bb.preprocess_cfg["std"])(view)
    return pixels


def encode_crops(
    bb: Backbone, images: DecodedImages, index: list[int], crops: list[Crop]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global (b, d) and local (b, N, d) features of ``crops[i]`` of image ``i`` for each ``i`` in ``index``."""
    pixels = torch.stack([crop_pixels(bb, images.images[i], crops[i]) for i in index])  # (b, 3, S, S)
    return bb.encode_images(pixels)
