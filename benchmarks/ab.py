"""Whole-process A/B timing: two versions of dualpt (two source trees) run the same command in turn.

Each run is a fresh process started the way a user starts it (``python -m dualpt_cli ...``), timed from
outside: wall seconds (``time.perf_counter`` around it) and CPU seconds (user + sys of the finished child,
``resource.getrusage(RUSAGE_CHILDREN)``). Runs alternate A, B, A, B, ... after one untimed warm-up pair, so a
drift of the machine's speed hits both; the ratio is taken pair by pair and its median quoted. Standard
library only, so it imports neither dualpt nor torch.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def median(self) -> dict[str, float]:
        return {"wall_s": statistics.median(self.wall), "cpu_s": statistics.median(self.cpu)}


def run_once(args: list[str], src: str, env: dict[str, str] | None = None, cwd: str | None = None) -> tuple:
    """(wall, cpu) seconds of ``python -m dualpt_cli ARGS`` with ``src`` first on the path; fails loudly."""
    return run_command([sys.executable, "-m", "dualpt_cli", *args], src, env, cwd)


def run_command(command: list[str], src: str, env: dict[str, str] | None = None, cwd: str | None = None) -> tuple:
    """(wall, cpu) seconds of any ``command`` (e.g. a plain open_clip script) with ``src`` first on the path."""
    full = {**os.environ, "PYTHONPATH": str(src), **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(command, env=full, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} (PYTHONPATH={src}) failed:\n{proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def ab(
    args: list[str],
    before: str,
    after: str,
    runs: int,
    prepare: Callable[[str, int], dict[str, str]] | None = None,
    warmup: bool = True,
    cwd: str | None = None,
) -> dict:
    """Time ``args`` under both source trees, alternating; ``prepare(label, i)`` gives each run's extra
    environment (e.g. a fresh cache folder). Returns medians and the pair-by-pair ratios before / after."""
    timings = {"before": Timing(), "after": Timing()}
    for i in range(-1 if warmup else 0, runs):
        for label, src in (("before", before), ("after", after)):
            env = prepare(label, i) if prepare else None
            wall, cpu = run_once(args, src, env, cwd)
            if i >= 0:
                timings[label].wall.append(wall)
                timings[label].cpu.append(cpu)
            print(f"  {label:6} run {i}: {wall:.2f} s wall, {cpu:.2f} s cpu", file=sys.stderr, flush=True)
    b, a = timings["before"], timings["after"]
    return {
        "args": args,
        "runs": runs,
        "before": b.median(),
        "after": a.median(),
        "speedup_wall": statistics.median(x / y for x, y in zip(b.wall, a.wall)),
        "speedup_cpu": statistics.median(x / y for x, y in zip(b.cpu, a.cpu)),
        "load_average": os.getloadavg(),
    }


def show(name: str, result: dict) -> None:
    b, a = result["before"], result["after"]
    print(
        f"{name}: before {b['wall_s']:.3f} s wall / {b['cpu_s']:.3f} s cpu, after {a['wall_s']:.3f} s / "
        f"{a['cpu_s']:.3f} s; before/after {result['speedup_wall']:.2f}x wall, {result['speedup_cpu']:.2f}x cpu "
        f"(median of {result['runs']} pairs; load average {', '.join(f'{x:.1f}' for x in result['load_average'])})"
    )
