"""The text step of training (forward and backward through the prefix cache): the last block computing only
the pooled (EOT) rows against the whole last block, one process, side by side.

    python benchmarks/bench_text_step.py --model RN50 --precision fp32 --rounds 40

``Backbone.encode_text_prefixed`` runs the last transformer block only on the row each suffix is pooled at
(the output projection and the MLP of the other rows feed nothing). The reference here is the loop as it was
before: every row through every block, then ``ln_final`` and the pooling. Both run the paper's shape (M = 4
prompts of 16 context vectors, so prefixes of 17 positions, ``--classes`` suffixes of 5 positions, seeded
random EOTs), the same random weights and context, and their features and context gradients are checked to
be equal bit for bit. Rounds alternate the two; the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from dualpt_cli.clip import surgery
from dualpt_cli.clip.backbone import Backbone
from dualpt_cli.clip.load import ModelSpec, load_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment, finish  # noqa: E402


def whole_last_block(bb: Backbone, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """(G, C, d) the prefix cache as it was: every row through the last block, then pooled."""
    G, Lp, W = prefix.shape
    C, Ls = suffix.shape[:2]
    pos = bb.model.positional_embedding
    causal = torch.ones(Lp, Lp, dtype=torch.bool).tril()
    mask = torch.ones(Ls, Lp + Ls, dtype=torch.bool)
    mask[:, Lp:] = torch.ones(Ls, Ls, dtype=torch.bool).tril()
    with bb.autocast():
        hp = (prefix + pos[:Lp].to(prefix.dtype)).reshape(G * Lp, W)
        hs = (suffix.unsqueeze(0).expand(G, -1, -1, -1) + pos[Lp : Lp + Ls].to(suffix.dtype)).reshape(-1, W)
        x = torch.cat([hp, hs])
        for block in bb.text_transformer.resblocks:
            x = surgery.prefixed_block(block, x, (G, Lp, C, Ls), causal, mask)
        hs = bb.model.ln_final(x[G * Lp :].view(G * C, Ls, W))
        h = hs[torch.arange(G * C), (eot - Lp).expand(G, C).reshape(G * C)]
        out = bb._project(h)
    return out.float().reshape(G, C, -1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="RN50")
    p.add_argument("--precision", default="auto")
    p.add_argument("--prompts", type=int, default=4, help="M, prompts per class (each its own prefix)")
    p.add_argument("--context", type=int, default=16, help="context vectors per prompt")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--save", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    bb = load_backbone(ModelSpec(args.model, ""), device="cpu", precision=args.precision)
    g = torch.Generator().manual_seed(0)
    G, Lp, C, Ls, W = args.prompts, 1 + args.context, args.classes, 5, bb.text_width
    context = torch.randn(G, Lp, W, generator=g) * 0.02
    suffix = torch.randn(C, Ls, W, generator=g) * 0.02
    eot = torch.randint(Lp + 1, Lp + Ls, (C,), generator=g)

    def step(fn) -> tuple[float, torch.Tensor, torch.Tensor]:
        prefix = context.clone().requires_grad_()
        t0 = time.perf_counter()
        out = fn(prefix)
        out.square().sum().backward()
        assert prefix.grad is not None
        return time.perf_counter() - t0, out.detach(), prefix.grad

    variants = {
        "whole last block": lambda prefix: whole_last_block(bb, prefix, suffix, eot),
        "pooled rows": lambda prefix: bb.encode_text_prefixed(prefix, suffix, eot),
    }
    first = {name: step(fn) for name, fn in variants.items()}  # warm-up, and the bits
    (_, a, ga), (_, b, gb) = first.values()
    same = torch.equal(a, b) and torch.equal(ga, gb)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(step(fn)[0])
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    ratio = ms["whole last block"] / ms["pooled rows"]
    out = {"model": args.model, "shape": [G, Lp, C, Ls], "ms": ms, "ratio": ratio, "same_bits": same}
    out["environment"] = environment("cpu", args.precision)  # the CPU decides the kernels (AVX2, AMX)

    def show(r: dict) -> None:
        times = ", ".join(f"{k} {v:.1f} ms" for k, v in r["ms"].items())
        print(f"{r['model']} {r['environment']['precision']}, {G} prompts x {C} classes: {times}")
        print(f"pooled over whole: {r['ratio']:.3f}x faster; same features and gradients: {r['same_bits']}")

    return finish(out, args.save, False, show)


if __name__ == "__main__":
    main()
