"""clip/crops.py: the fresh crops of --recipe paper are torchvision's RandomResizedCrop and flip, drawn from a
generator instead of the global one."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from dualpt_cli.clip.crops import DecodedImages, crop_box, crop_pixels, draw_crops, encode_crops
from dualpt_cli.clip.load import load_backbone
from dualpt_cli.clip.spec import ModelSpec


@pytest.mark.parametrize("size", [(64, 64), (40, 90), (90, 30), (7, 5)])
@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.9, 1.0)])
def test_crop_box_is_torchvisions_get_params(size, scale):
    from torchvision import transforms as T

    image = Image.new("RGB", (size[1], size[0]))
    for seed in range(20):
        torch.manual_seed(seed)
        want = T.RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])
        assert crop_box(size[0], size[1], scale, torch.Generator().manual_seed(seed)) == want


def test_fresh_crop_pixels_equal_the_training_transform(tiny_rn, tmp_path):
    """A crop drawn from a generator seeded s gives the pixels of ``bb.train_transform()`` after manual_seed(s)."""
    bb = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="fp32")
    g = torch.Generator().manual_seed(0)
    image = Image.fromarray(torch.randint(0, 256, (48, 70, 3), generator=g, dtype=torch.uint8).numpy())
    tf = bb.train_transform((0.08, 1.0))
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        want = tf(image)
        (crop,) = draw_crops([(48, 70)], (0.08, 1.0), torch.Generator().manual_seed(seed))
        flips.add(crop.flip)
        assert_close(crop_pixels(bb, image, crop), want)
    assert flips == {True, False}  # both branches were checked


def test_encode_crops_encodes_the_chosen_images(tiny_rn, tmp_path):
    bb = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="fp32")
    paths = []
    for i, colour in enumerate(["red", "blue", "green"]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (30 + 10 * i, 40), colour).save(paths[-1])
    images = DecodedImages(paths)
    assert images.sizes == [(40, 30), (40, 40), (40, 50)]
    crops = draw_crops(images.sizes, (0.08, 1.0), torch.Generator().manual_seed(3))
    z, Z = encode_crops(bb, images, [2, 0], crops)
    want = bb.encode_images(torch.stack([crop_pixels(bb, images.images[i], crops[i]) for i in (2, 0)]))
    assert z.shape == (2, bb.embed_dim) and Z.shape[0] == 2
    assert_close(z, want[0])
    assert_close(Z, want[1])
