"""What the benchmark scripts share: running a part in its own process, memory, environment, output.

Each benchmark part (a path to time, a memory scenario) runs in a fresh interpreter so that its peak RSS
is its own: the parent re-runs the script with ``--_worker ROLE`` and reads one JSON line back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dualpt_cli.clip.load import cpu_has_fast_bf16, select_device, select_precision

RESULT_MARK = "BENCH_RESULT "
GIB = 1024**3


def add_harness_args(p: argparse.ArgumentParser) -> None:
    """Options every benchmark takes, and the hidden ones :func:`run_part` passes to a worker process."""
    p.add_argument(
        "--inline",
        action="store_true",
        help="run every part in this process (faster start; peak RSS is then the process's so far)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--save", default=None, help="also write the results as JSON to this file")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_data", default=None, help=argparse.SUPPRESS)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_part(
    script: str,
    role: str,
    inline: bool,
    work: Callable[[], dict],
    argv: list[str],
    extra: list[str],
    label: str | None = None,
) -> dict[str, Any]:
    """Run one part: ``work()`` here with ``inline``, else ``script argv --_worker role extra`` in a fresh process."""
    print(f"[{Path(script).stem}] {label or role} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    if inline:
        result = work()
    else:
        cmd = [sys.executable, str(Path(script).resolve()), *argv, "--_worker", role, *extra]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
        if proc.returncode != 0 or not lines:
            result = {"error": f"worker {role} failed with exit code {proc.returncode} (killed for memory if -9)"}
        else:
            result = json.loads(lines[-1][len(RESULT_MARK) :])
    result["wall_s"] = time.perf_counter() - t
    return result


def report_from_worker(result: dict[str, Any]) -> None:
    """The worker side of :func:`run_part`: one marked JSON line on stdout."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def environment(device: str, precision: str) -> dict[str, Any]:
    dev = select_device(device)
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu,
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "precision": select_precision(precision, dev),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m": load_avg(),
    }


def load_avg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def finish(results: dict[str, Any], save: str | None, as_json: bool, print_tables: Callable[[dict], None]) -> dict:
    """Write ``results`` to ``save``, then print them as JSON or as tables."""
    if save:
        Path(save).write_text(json.dumps(results, indent=2))
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print_tables(results)
    return results


def fmt(x: Any, spec: str = ".2f", unit: str = "") -> str:
    """A number for a table cell; ``-`` for missing or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:{spec}}{unit}"
