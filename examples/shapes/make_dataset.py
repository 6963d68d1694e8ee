"""Make the shapes dataset of the README's first session: train and test ImageFolders of coloured shapes.

    python examples/shapes/make_dataset.py shapes

writes ``shapes/train/<class>/NNN.png`` and ``shapes/test/<class>/NNN.png`` (64 px PNGs) for every class of
``classes.txt`` (folder names ``<colour>_<shape>``), drawn by ``generator.py``: the world the demo CLIP in
``model/`` was pretrained on. Images are seeded, so the same command always writes the same files; the test
images come from a different seed stream than the training images. Needs only numpy and Pillow.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dualpt_cli.errors import DualptError
from dualpt_cli.data.classes import parse_class_list

HERE = Path(__file__).resolve().parent


def load_generator():
    """The synthclip generator shipped beside this script, imported from its file."""
    spec = importlib.util.spec_from_file_location("synthclip_generator", HERE / "generator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def class_attrs(gen, folder: str) -> dict[str, str]:
    """``red_star`` -> ``{"colour": "red", "shape": "star"}``; an error naming the folder otherwise."""
    colour, _, shape = folder.partition("_")
    if colour not in gen.ALL_COLOURS or shape not in gen.SHAPES:
        raise SystemExit(f"error: class {folder!r} is not <colour>_<shape>; colours: {', '.join(gen.ALL_COLOURS)}; "
                         f"shapes: {', '.join(gen.SHAPES)}")
    return {"colour": colour, "shape": shape}


def write_split(gen, out: Path, folders: list[str], per_class: int, seed: int) -> int:
    """``per_class`` images of each class under ``out/<folder>/``; returns the number written."""
    for k, folder in enumerate(folders):
        rng = np.random.default_rng([seed, k])  # one stream per class: adding a class changes no other
        fixed = class_attrs(gen, folder)
        (out / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            attrs = gen.sample_attrs(rng, "pretrain", fixed=fixed)
            Image.fromarray(gen.render(attrs, rng)).save(out / folder / f"{i:03d}.png")
    return per_class * len(folders)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write train/ and test/ into")
    parser.add_argument("--classes", default=str(HERE / "classes.txt"), help="class list (default: the one beside "
                        "this script)")
    parser.add_argument("--train", type=int, default=16, help="training images per class")
    parser.add_argument("--test", type=int, default=40, help="test images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training images (test: seed + 1)")
    args = parser.parse_args(argv)

    gen = load_generator()
    try:
        folders = [entry.folder for entry in parse_class_list(args.classes)]
    except DualptError as exc:
        raise SystemExit(f"error: {exc}") from None
    out = Path(args.out)
    n_train = write_split(gen, out / "train", folders, args.train, args.seed)
    n_test = write_split(gen, out / "test", folders, args.test, args.seed + 1)
    print(f"{len(folders)} classes: {n_train} training images in {out / 'train'}, {n_test} test images in "
          f"{out / 'test'}")


if __name__ == "__main__":
    sys.exit(main())
