from __future__ import annotations

import torch
from torch.testing import assert_close

from dualpt_cli.clip.features import EVAL_VIEW, encode_views, view_seed
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.data.images import file_digest, load_image
from imagegen import make_image_folder


def test_cached_views_equal_plain_encoding(tmp_path, tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    paths = sorted(make_image_folder(tmp_path / "img", per_class=2).rglob("*.png"))
    fs = encode_views(bb, paths, [0, 3, EVAL_VIEW], tmp_path / "cache", aug_seed=5)
    assert fs.global_.shape == (len(paths), 3, bb.embed_dim)
    assert fs.local.shape == (len(paths), 3, bb.num_local, bb.embed_dim)
    # plain computation of view 3 and of the eval view of the second image
    image = load_image(paths[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(view_seed(file_digest(paths[1]), 3, 5))
        pixels = bb.train_transform()(image)
    z, local = bb.encode_images(torch.stack([pixels, bb.eval_transform()(image)]))
    assert_close(fs.global_[1, 1], z[0])
    assert_close(fs.local[1, 1], local[0])
    assert_close(fs.global_[1, 2], z[1])
    # a second call reads the cache, with identical values, and encodes nothing
    calls = []
    original = bb.encode_images
    bb.encode_images = lambda x: calls.append(len(x)) or original(x)
    again = encode_views(bb, paths, [0, 3, EVAL_VIEW], tmp_path / "cache", aug_seed=5)
    assert calls == [] and torch.equal(again.local, fs.local)
    # more views: only the new ones are encoded
    more = encode_views(bb, paths, [0, 1, 3], tmp_path / "cache", aug_seed=5)
    assert sum(calls) == len(paths) and torch.equal(more.local[:, 2], fs.local[:, 1])


def test_bf16_cache_is_lossless_for_bf16_features(tmp_path, tiny_vit):
    bb = load_backbone(ModelSpec(tiny_vit), device="cpu", precision="bf16")
    paths = sorted(make_image_folder(tmp_path / "img", per_class=1).rglob("*.png"))
    fs = encode_views(bb, paths, [EVAL_VIEW], tmp_path / "cache")
    z, _ = bb.encode_images(torch.stack([bb.eval_transform()(load_image(p)) for p in paths]))
    assert_close(fs.global_[:, 0].float(), z)


def test_bad_images_reported_and_damaged_cache_recomputed(tmp_path, tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    paths = sorted(make_image_folder(tmp_path / "img", per_class=1).rglob("*.png"))
    bad = tmp_path / "img" / "red" / "bad.png"
    bad.write_bytes(b"nope")
    fs = encode_views(bb, [*paths, bad], [0], tmp_path / "cache")
    assert fs.paths == paths and fs.bad[0][0] == bad
    for f in (tmp_path / "cache").rglob("*.safetensors"):
        f.write_bytes(b"garbage")
    again = encode_views(bb, paths, [0], tmp_path / "cache")
    assert torch.equal(again.local, fs.local)


def test_interrupted_encoding_keeps_finished_images(tmp_path, tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    paths = sorted(make_image_folder(tmp_path / "img", per_class=1).rglob("*.png"))
    original, calls = bb.encode_images, []

    def encode_then_stop(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(x)

    bb.encode_images = encode_then_stop
    try:
        encode_views(bb, paths, [0, 1], tmp_path / "cache", batch_size=2)
    except KeyboardInterrupt:
        pass
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1  # the first image's two views
    bb.encode_images = original
    full = encode_views(bb, paths, [0, 1], tmp_path / "cache", batch_size=2)
    fresh = encode_views(bb, paths, [0, 1], None, batch_size=2)
    assert torch.equal(full.local, fresh.local)
