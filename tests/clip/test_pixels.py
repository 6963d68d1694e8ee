"""clip/pixels.py: the fused ToTensor + Normalize gives torchvision's pixels bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.clip.pixels import ToTensorNormalized, fuse_to_tensor_normalize
from dualpt_cli.clip.surgery import eval_transform

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's


def _photo(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).convert(mode)


def _plain(image, mean=MEAN, std=STD) -> torch.Tensor:
    return T.Normalize(mean, std)(T.ToTensor()(image))


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (224, 224), (320, 240)])
def test_equals_torchvision_bit_for_bit(size):
    image = _photo(*size, seed=sum(size))
    got, want = ToTensorNormalized(MEAN, STD)(image), _plain(image)
    assert got.dtype == want.dtype and got.shape == want.shape and got.is_contiguous()
    assert torch.equal(got, want)
    half = (0.5, 0.5, 0.5)
    assert torch.equal(ToTensorNormalized(half, half)(image), _plain(image, half, half))


def test_every_byte_value_in_every_channel():
    """Exhaustive: each output pixel depends only on its byte and channel, and every (byte, channel) is here."""
    values = np.arange(256, dtype=np.uint8)
    image = Image.fromarray(np.stack([values, values[::-1], np.roll(values, 7)], axis=-1)[None])  # (1, 256, 3)
    for mean, std in ((MEAN, STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ((0.0, 1.0, 0.3), (1.0, 3.0, 0.1))):
        assert torch.equal(ToTensorNormalized(mean, std)(image), _plain(image, mean, std))


@pytest.mark.parametrize("mode", ["L", "RGBA", "F"])
def test_other_modes_take_torchvision_path(mode):
    image = _photo(9, 6, mode)
    bands = len(image.getbands())
    mean, std = (MEAN + (0.5,))[:bands], (STD + (0.25,))[:bands]
    assert torch.equal(ToTensorNormalized(mean, std)(image), _plain(image, mean, std))


def test_zero_std_is_refused():
    with pytest.raises(ValueError, match="std"):
        ToTensorNormalized(MEAN, (0.2, 0.0, 0.2))


def test_fuse_replaces_only_a_to_tensor_then_normalize():
    fused = fuse_to_tensor_normalize(T.Compose([T.CenterCrop(4), T.ToTensor(), T.Normalize(MEAN, STD)]))
    assert [type(t).__name__ for t in fused.transforms] == ["CenterCrop", "ToTensorNormalized"]
    inplace = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD, inplace=True)])
    assert [type(t) for t in fuse_to_tensor_normalize(inplace).transforms] == [T.ToTensor, T.Normalize]
    lone = T.Compose([T.ToTensor()])
    assert [type(t) for t in fuse_to_tensor_normalize(lone).transforms] == [T.ToTensor]
    assert fuse_to_tensor_normalize(len) is len  # not a Compose: unchanged


def test_backbone_transforms_equal_the_unfused_ones(tiny_model):
    """The eval view equals open_clip's own preprocessing and every training view the plain torchvision pipeline
    drawn from the same seed: the feature cache and predictions see the same pixels as before."""
    bb = load_backbone(ModelSpec(tiny_model), device="cpu", precision="fp32")
    image = _photo(97, 61, seed=3)
    assert torch.equal(bb.eval_transform()(image), eval_transform(bb.preprocess_cfg)(image))
    mean, std = bb.preprocess_cfg["mean"], bb.preprocess_cfg["std"]
    plain = T.Compose(
        [
            T.RandomResizedCrop(bb.image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    fused = bb.train_transform((0.5, 1.0))
    for seed in range(4):
        torch.manual_seed(seed)
        want = plain(image)
        torch.manual_seed(seed)
        assert torch.equal(fused(image), want)
