"""Text-encoder cost of one CoDUAL-PT training step, and what the shared-prefix path saves.

CoDUAL-PT's prompts depend on the image (ctx + pi(z)), so unlike DUAL-PT the class prompt features cannot be
computed once per step for the whole batch: every image needs its own K x M text features. This script times
one forward + backward of the prompt features for a batch of B images:

- shared (DUAL-PT): ``PromptLearner()`` once per step, K x M sequences, whatever B is (the reference);
- conditional, prefix cache: ``forward_conditional(z)``: B*M prefixes (SOS + shifted context) computed once
  each, B*M*K suffixes (class-name tokens + EOT) attending to them;
- conditional, plain: the same features from B*K*M full sequences (cut after the longest EOT).

    python benchmarks/bench_codualpt.py                     # RN50 (random weights), K=100, B=1 and 4, M=4
    python benchmarks/bench_codualpt.py --model local-dir:/path --classes 10 --batches 1 --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.model.prompts import ConditionalPromptLearner, PromptLearner


def _time(step, repeats: int, device: torch.device) -> float:
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="RN50")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes B")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    bb = load_backbone(ModelSpec(args.model, args.pretrained), device=args.device, precision=args.precision)
    names = [f"class number {k}" for k in range(args.classes)]
    shared = PromptLearner(bb, names, n_prompts=args.prompts, n_ctx=4, ctx_init="a photo of a")
    cond = ConditionalPromptLearner(bb, names, n_prompts=args.prompts)

    def shared_step():
        shared.zero_grad()
        shared().sum().backward()

    rows = [{"path": "shared (DUAL-PT)", "batch": "any", "seconds": _time(shared_step, args.repeats, bb.device)}]
    for B in [int(b) for b in args.batches.split(",")]:
        z = torch.randn(B, bb.embed_dim, device=bb.device)
        for prefix in (True, False):
            cond.use_prefix_cache = prefix

            def cond_step(z=z):
                cond.zero_grad()
                cond.forward_conditional(z).sum().backward()

            rows.append(
                {
                    "path": f"conditional, {'prefix cache' if prefix else 'plain'}",
                    "batch": B,
                    "seconds": _time(cond_step, args.repeats, bb.device),
                }
            )
    base = rows[0]["seconds"]
    for row in rows:
        row["vs_shared"] = row["seconds"] / base
    result = {
        "model": args.model,
        "device": str(bb.device),
        "precision": bb.precision,
        "classes": args.classes,
        "prompts": args.prompts,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.model} on {bb.device} ({bb.precision}), K={args.classes}, M={args.prompts}, n_ctx=4: "
            "text features + backward per step"
        )
        for row in rows:
            print(
                f"  {row['path']:<28} B={row['batch']!s:<4} {row['seconds'] * 1000:9.1f} ms  "
                f"{row['vs_shared']:6.2f}x shared"
            )
    return result


if __name__ == "__main__":
    main()
