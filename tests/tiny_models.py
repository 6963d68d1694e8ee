"""Tiny open_clip models for tests, built from a config with a fixed seed and saved as local-dir models.

Every test loads them through ``local-dir:`` exactly as a user loads their own model.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
PREPROCESS_CFG = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}

CONFIGS = {
    # ModifiedResNet: image 96 -> a 3x3 grid of local features (RN50 at 224 gives 7x7)
    "rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 96, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
        "text_cfg": TEXT_CFG,
    },
    # VisionTransformer: image 64, patch 16 -> a 4x4 grid
    "vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": TEXT_CFG,
    },
}


def build_tiny_model(kind: str, folder: Path, image_size: int | None = None, seed: int = 0) -> Path:
    """Build the tiny ``kind`` model with a fixed seed and save it as an open_clip local-dir folder."""
    cfg = json.loads(json.dumps(CONFIGS[kind]))
    if image_size is not None:
        cfg["vision_cfg"]["image_size"] = image_size
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    # spread the random logit scale and projections a little so features are not degenerate
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": cfg, "preprocess_cfg": {"size": cfg["vision_cfg"]["image_size"], **PREPROCESS_CFG}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder
