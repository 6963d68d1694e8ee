"""Store the demo CLIP's weights in bf16 (half the size) and check nothing a user sees changes.

    python examples/shapes/convert_model.py SOURCE_MODEL_DIR examples/shapes/model

SOURCE_MODEL_DIR is the fp32 open_clip ``local-dir:`` folder that ``pretrain.py`` wrote. The script writes
``open_clip_model.safetensors`` with every floating-point tensor in bf16 (and copies
``open_clip_config.json``), then loads both folders through dualpt's own ``local-dir:`` path in fp32 (the bf16
values are widened exactly on load) and compares zero-shot CLIP predictions ("a photo of a {colour} {shape}.",
all 80 colour x shape classes, and the classes of ``classes.txt`` among themselves) on images drawn by
``generator.py``: the share of images whose top-1 class is the same, the top-1 accuracy of each, and the
largest difference in class probability.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from make_dataset import HERE, load_generator
from PIL import Image
from safetensors.torch import load_file, save_file

from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.predict.evaluate import ZeroShotClassifier
from dualpt_cli.data.classes import parse_class_list

WEIGHTS = "open_clip_model.safetensors"
CONFIG = "open_clip_config.json"


def convert(src: Path, dst: Path) -> None:
    """Copy the config and write the weights with floating-point tensors in bf16."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / CONFIG, dst / CONFIG)
    state = load_file(src / WEIGHTS)
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, dst / WEIGHTS, metadata={"format": "pt", "dtype": "bf16 (converted from fp32)"})


@torch.no_grad()
def zero_shot_probs(folder: Path, images: list[Image.Image], names: list[str]) -> torch.Tensor:
    """(I, K) zero-shot class probabilities of ``images`` with the CLIP in ``folder``, loaded in fp32."""
    bb = load_backbone(ModelSpec(f"local-dir:{folder}"), device="cpu", precision="fp32")
    assert all(p.dtype == torch.float32 for p in bb.model.parameters())
    zs = ZeroShotClassifier(bb, names)
    transform = bb.eval_transform()
    batch = torch.stack([transform(im) for im in images])  # (I, 3, H, W)
    z, _ = bb.encode_images(batch)  # (I, d)
    return zs.logits_from_global(z).softmax(dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="fp32 open_clip local-dir folder")
    parser.add_argument("out", help="folder to write the bf16 model to")
    parser.add_argument("--images", type=int, default=2000, help="generated images to compare on")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    src, dst = Path(args.source), Path(args.out)
    convert(src, dst)

    gen = load_generator()
    pairs = [(c, s) for c in gen.COLOURS for s in gen.SHAPES]
    rng = np.random.default_rng(args.seed)
    labels, images = [], []
    for i in range(args.images):
        colour, shape = pairs[i % len(pairs)]
        attrs = gen.sample_attrs(rng, "pretrain", fixed={"colour": colour, "shape": shape})
        images.append(Image.fromarray(gen.render(attrs, rng)))
        labels.append(i % len(pairs))
    names = [f"{c} {s}" for c, s in pairs]
    labels = torch.tensor(labels)
    p32, p16 = zero_shot_probs(src, images, names), zero_shot_probs(dst, images, names)
    agree = (p32.argmax(1) == p16.argmax(1)).float().mean().item()
    acc32 = (p32.argmax(1) == labels).float().mean().item()
    acc16 = (p16.argmax(1) == labels).float().mean().item()
    demo = [pairs.index(tuple(e.folder.split("_"))) for e in parse_class_list(HERE / "classes.txt")]
    rows = torch.isin(labels, torch.tensor(demo))  # images of the README's classes, scored among those only
    d32, d16 = p32[rows][:, demo].argmax(1), p16[rows][:, demo].argmax(1)
    mb = (dst / WEIGHTS).stat().st_size / 2**20
    print(f"wrote {dst / WEIGHTS} ({mb:.1f} MB)")
    print(f"zero-shot on {len(images)} generated images, {len(names)} classes: top-1 agreement fp32 vs bf16 "
          f"weights {agree:.2%}; top-1 accuracy {acc32:.2%} (fp32) vs {acc16:.2%} (bf16); "
          f"max |prob difference| {(p32 - p16).abs().max().item():.4f}")
    print(f"the {len(demo)} classes of classes.txt ({int(rows.sum())} images): top-1 agreement "
          f"{(d32 == d16).float().mean().item():.2%}")


if __name__ == "__main__":
    main()
