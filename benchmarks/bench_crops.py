"""The cost of ``--fresh-crops`` (``--recipe paper``: a new random crop of every image in every epoch, encoded
in the training step, as CoOp/Dassl) against cached views (``--cached-views``: ``--aug-views`` views encoded once
and drawn from; the default recipe).

Both runs are the library's own ``run_training`` with ``--recipe paper`` on the same synthetic ImageFolder
(noise photos of ``--size``, JPEG), each with an empty feature cache, so the cached run pays its one-time
encoding. Reported per run: the time before the first epoch (scan, decode, encode the cache), the mean
seconds of the epochs after the first (the train log's own timing), and the whole run.

    python benchmarks/bench_crops.py                                   # RN50 (random weights), 10 x 4 shots
    python benchmarks/bench_crops.py --model RN50 --classes 10 --shots 8 --epochs 4 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, classes: int, shots: int, size: tuple[int, int], seed: int = 0) -> None:
    """``classes`` folders of ``shots`` noise photos (``size`` = width, height), saved as JPEG."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = root / f"class_{k:03d}"
        folder.mkdir(parents=True)
        for i in range(shots):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def run(images: Path, fresh: bool, args: argparse.Namespace) -> dict:
    """One paper-recipe run in its own project and empty feature cache; its timings."""
    from dualpt_cli.train.loop import TrainConfig, run_training

    work = Path(tempfile.mkdtemp(prefix="bench_crops_"))
    os.environ["DUALPT_CACHE"] = str(work / "cache")
    cfg = TrainConfig(
        images=str(images), project=str(work / "project"), recipe="paper", shots=args.shots, epochs=args.epochs,
        model=args.model, pretrained=args.pretrained, device=args.device, precision=args.precision,
        fresh_crops=fresh, aug_views=args.aug_views, n_prompts=args.prompts,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = run_training(cfg)
    total = time.perf_counter() - t0
    log = [json.loads(line) for line in (work / "project" / "train_log.jsonl").read_text().splitlines()]
    epochs = [r["seconds"] for r in log]
    return {
        "views": "fresh crop per epoch" if fresh else f"{args.aug_views} cached views",
        "before_first_epoch_s": total - result.seconds,
        "epoch_s": statistics.mean(epochs[1:] or epochs),
        "run_s": total,
        "train_acc": result.train_acc,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="RN50")
    p.add_argument("--pretrained", default="", help='pretrained tag or weights file ("" = random weights)')
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not in the mean)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--aug-views", type=int, default=8)
    p.add_argument("--size", default="500x375", help="image width x height")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.classes, args.shots, args.epochs, args.prompts, args.aug_views) < 1:
        sys.exit("--classes, --shots, --epochs, --prompts and --aug-views must be >= 1")
    import torch

    from dualpt_cli.clip.load import select_device

    width, height = (int(v) for v in args.size.lower().split("x"))
    images = Path(tempfile.mkdtemp(prefix="bench_crops_images_"))
    make_images(images, args.classes, args.shots, (width, height))
    rows = [run(images, fresh, args) for fresh in (False, True)]
    device = select_device(args.device)
    out = {
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x {torch.get_num_threads()}",
        "images": args.classes * args.shots,
        "size": args.size,
        "epochs": args.epochs,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return out
    print(
        f"{out['model']} on {out['device']}, {out['images']} images of {args.size}, {args.epochs} epochs, paper recipe"
    )
    print(f"{'views':<24} {'before epoch 1 (s)':>19} {'s / epoch':>10} {'run (s)':>8}")
    for r in rows:
        print(f"{r['views']:<24} {r['before_first_epoch_s']:>19.2f} {r['epoch_s']:>10.2f} {r['run_s']:>8.2f}")
    return out


if __name__ == "__main__":
    main()
