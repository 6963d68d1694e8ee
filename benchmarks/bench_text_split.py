"""Does splitting the text encoder's K x M prompts over torchrun ranks pay? (issue 15, optional item)

Data-parallel ``dualpt train`` runs the text encoder on all K x M prompts on every rank, every step
(``W = learner()``), and sums only the context gradients. The alternative measured here: each rank encodes
its contiguous share of the classes, the features are gathered (an all-reduce of a zero-padded (K, M, d)
tensor), every rank computes its loss from the whole W, the gradients with respect to W are summed over
ranks (a second (K, M, d) all-reduce) and each rank back-propagates only through its own classes.

One timed step is the text part of a training step: forward, a stand-in loss on W, backward, and the
all-reduce of the context gradient that both variants need. Each variant runs under
``python -m torch.distributed.run --nproc-per-node P`` with the same threads per process; the ratio that
decides is "split" against "replicated" at the same P.

    python benchmarks/bench_text_split.py                       # RN50 text tower (random weights), K=64
    python benchmarks/bench_text_split.py --classes 1000 --device cuda --nproc 8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

MARK = "RESULT "


def step(learner, dist, split: bool, target: torch.Tensor) -> None:
    """The text half of one training step (forward, stand-in loss, backward, context all-reduce)."""
    learner.ctx.grad = None
    K = learner.num_classes
    if not split:
        W = learner()  # (K, M, d) on every rank
        (W * target).sum().backward()
    else:
        lo, hi = dist.shard_bounds(K)
        mine = F.normalize(learner._encode(slice(lo, hi)), dim=-1)  # (k, M, d)
        full = torch.zeros_like(target)
        full[lo:hi] = mine.detach()
        full = dist.all_reduce_sum(full, "gathering the prompt features").requires_grad_(True)
        (full * target).sum().backward()
        grad = dist.all_reduce_sum(full.grad, "summing dL/dW")
        mine.backward(grad[lo:hi])
    dist.all_reduce_sum(learner.ctx.grad, "summing the context gradient")


def worker(args) -> None:
    from dualpt_cli.clip.load import ModelSpec, load_backbone
    from dualpt_cli.core.distributed import distributed
    from dualpt_cli.model.prompts import PromptLearner

    torch.set_num_threads(args.threads)
    with distributed(args.device) as dist:
        bb = load_backbone(ModelSpec(args.model, args.pretrained), device=dist.device, precision="fp32")
        learner = PromptLearner(
            bb, [f"class number {i}" for i in range(args.classes)], args.prompts, 4, "a photo of a", False, 1
        )
        target = torch.randn(args.classes, args.prompts, bb.embed_dim, generator=torch.Generator().manual_seed(0))
        target = target.to(bb.device)
        step(learner, dist, args.split, target)  # warm-up
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(learner, dist, args.split, target)
        if bb.device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        seconds = (time.perf_counter() - t0) / args.steps
        if dist.is_main:  # the summed context gradient: the same with and without the split
            grad = learner.ctx.grad.double().norm().item()
            print(MARK + json.dumps({"seconds_per_step": seconds, "grad_norm": grad}), flush=True)


def launch(args, nproc: int, split: bool) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        __file__,
        "--worker",
        "--classes",
        str(args.classes),
        "--prompts",
        str(args.prompts),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--model",
        args.model,
        "--pretrained",
        args.pretrained,
        "--device",
        args.device,
    ]
    cmd += ["--split"] if split else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith(MARK))[len(MARK) :])


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]] | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=64)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--model", default="RN50")
    p.add_argument("--pretrained", default="")
    p.add_argument("--device", default="cpu")
    p.add_argument("--split", action="store_true")
    p.add_argument("--worker", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    runs = {
        "one": launch(args, 1, False),
        "replicated": launch(args, args.nproc, False),
        "split": launch(args, args.nproc, True),
    }
    one, replicated, split = (runs[k]["seconds_per_step"] for k in ("one", "replicated", "split"))
    print(
        f"K={args.classes} M={args.prompts} {args.model} {args.device}, {args.threads} thread(s)/process, "
        f"seconds per text step: 1 process {one:.3f}; {args.nproc} processes replicated {replicated:.3f}, "
        f"split {split:.3f}; split / replicated = {replicated / split:.2f}x faster, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    return runs


if __name__ == "__main__":
    main()
