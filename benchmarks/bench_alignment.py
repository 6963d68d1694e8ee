"""Cost of each ``--align`` plan in one scoring pass, and of the plan entropy logged in training.

Times ``matching.dual_scores`` (the similarity tensor, the plan, the plan-weighted scores; no backward) for
every align, side by side on the same features, and the entropy pass (``alignment.plan_entropy`` over the
plans, what ``dual_scores_with_stats`` adds) against the graph-matching pass it follows. Features are random unit
vectors around a shared direction (CLIP-like cosines); the solver's early stop makes the graph time depend
on the data somewhat, so compare ratios, not absolute times, across machines.

    python benchmarks/bench_alignment.py                        # B=32, K=100, N=49 (RN50), M=4, d=1024, CPU
    python benchmarks/bench_alignment.py --classes 10 --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dualpt_cli.model.alignment import ALIGNS, plan_entropy
from dualpt_cli.model.matching import SolverSettings, dual_scores, graph_matching_plan


def _time(step, repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--local", type=int, default=49, help="N, local features per image")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)

    def unit(*shape: int) -> torch.Tensor:
        base = torch.randn(args.dim, generator=g)
        return torch.nn.functional.normalize(base + 1.5 * torch.randn(*shape, args.dim, generator=g), dim=-1)

    Z, W = unit(args.batch, args.local), unit(args.classes, args.prompts)
    seconds = {}
    with torch.no_grad():
        for align in ALIGNS:
            solver = SolverSettings(align=align)
            seconds[align] = _time(lambda s=solver: dual_scores(Z, W, s), args.repeats)
        T = graph_matching_plan(Z[:, None], W[None], SolverSettings())  # (B, K, N, M)
        seconds["entropy"] = _time(lambda: plan_entropy(T).mean(), args.repeats)
    results = {
        "shape": {"B": args.batch, "K": args.classes, "N": args.local, "M": args.prompts, "d": args.dim},
        "seconds": seconds,
        "entropy_over_graph": seconds["entropy"] / seconds["graph"],
        "over_graph": {a: seconds[a] / seconds["graph"] for a in ALIGNS},
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"B={args.batch} K={args.classes} N={args.local} M={args.prompts} d={args.dim}, "
            f"{torch.get_num_threads()} threads"
        )
        for name in (*ALIGNS, "entropy"):
            print(f"{name:>8}  {seconds[name] * 1e3:9.2f} ms  {seconds[name] / seconds['graph']:6.3f} x graph")
    return results


if __name__ == "__main__":
    main()
