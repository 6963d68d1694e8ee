"""Fingerprint of a CLIP image tower: its features of one fixed synthetic image.

A prompt file stores the fingerprint of the model it was trained with (metadata ``image_fingerprint``);
loading checks that the model at hand reproduces it, so a model with the same text tower but another image
tower, or a model folder whose weights changed in place, is refused instead of predicting at chance.
Prompt files written before the fingerprint existed are checked on their text features only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ModelLoadError
from .backbone import Backbone

MIN_COSINE = 0.99  # same weights agree to ~0.999 across devices and precisions; another tower is far below


def probe_image(size: int) -> torch.Tensor:
    """(1, 3, size, size) a fixed pattern of smooth waves, already in normalised pixel units (about [-2, 2])."""
    axis = torch.linspace(-1.0, 1.0, size, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    channels = [
        torch.sin(3 * math.pi * x) + torch.cos(2 * math.pi * y),
        torch.sin(5 * math.pi * x * y) + 0.5 * x,
        torch.cos(4 * math.pi * (x - y)) - 0.5 * y,
    ]
    return torch.stack(channels)[None].float()


def image_fingerprint(bb: Backbone) -> list[float]:
    """The normalised global feature (d floats, 6 decimals) of :func:`probe_image` through ``bb``."""
    with torch.no_grad(), bb.autocast():  # the global feature only (what encode_images' z equals)
        z = bb.model.encode_image(probe_image(bb.image_size).to(bb.device))
    return [round(v, 6) for v in F.normalize(z.float(), dim=-1)[0].cpu().tolist()]


def check_image_fingerprint(bb: Backbone, meta: dict[str, Any], path: Path) -> None:
    """A :class:`ModelLoadError` when ``bb``'s image tower is not the one ``meta`` was trained with."""
    stored = meta.get("image_fingerprint")
    if stored is None:  # a prompt file from before fingerprints: nothing to compare
        return
    now = torch.tensor(image_fingerprint(bb))
    then = torch.tensor(stored, dtype=torch.float32)
    cos = float(F.cosine_similarity(now, then, dim=0)) if now.shape == then.shape else -1.0
    if cos < MIN_COSINE:
        raise ModelLoadError(
            f"model {bb.spec.label} has different weights in its image tower from the one {path} "
            f"was trained with ({meta.get('model')}; image features of a test pattern agree to cos "
            f"{cos:.2f}); use the same weights, or retrain"
        )
