"""Images per image-tower pass on CPU: ms per image at several chunk sizes, one process, side by side.

    python benchmarks/bench_image_chunk.py --model RN50 --images 64 --chunks 64 32 16 8 4 --repeats 2

Every chunk size encodes the same random batch through ``Backbone.encode_images`` with
``backbone.IMAGE_CHUNK_CPU`` set to that size (``encode_images`` splits the batch it is handed), and the
features are checked to be bit for bit those of the whole batch in one pass. The model has seeded random
weights (the arithmetic, not the weights, sets the speed). Sizes are timed in turn, ``--repeats`` rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dualpt_cli.clip import backbone
from dualpt_cli.clip.load import ModelSpec, load_backbone


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="RN50")
    p.add_argument("--precision", default="auto")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 32, 16, 8, 4])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--save", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    bb = load_backbone(ModelSpec(args.model, ""), device="cpu", precision=args.precision)
    x = torch.randn(args.images, 3, bb.image_size, bb.image_size)
    backbone.IMAGE_CHUNK_CPU = None
    whole = bb.encode_images(x)
    times: dict[int, list[float]] = {c: [] for c in args.chunks}
    same = {}
    for _ in range(args.repeats):
        for chunk in args.chunks:
            backbone.IMAGE_CHUNK_CPU = chunk
            bb.encode_images(x[:chunk])  # warm-up at this size
            t0 = time.perf_counter()
            z, local = bb.encode_images(x)
            times[chunk].append((time.perf_counter() - t0) / args.images * 1e3)
            same[chunk] = torch.equal(z, whole[0]) and torch.equal(local, whole[1])
    base = statistics.median(times[args.chunks[0]])
    rows = [
        {"chunk": c, "ms_per_image": ms, "speed_vs_first": base / ms, "same": same[c]}
        for c, ms in ((c, statistics.median(t)) for c, t in times.items())
    ]
    for r in rows:
        speed = f"{r['ms_per_image']:6.1f} ms/image, {r['speed_vs_first']:.2f}x"
        print(f"chunk {r['chunk']:3}: {speed}, same bits: {r['same']}")
    out = {"model": args.model, "precision": bb.precision, "images": args.images, "rows": rows}
    if args.save:
        with open(args.save, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
