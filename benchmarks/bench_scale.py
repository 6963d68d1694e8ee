"""Scaling benchmark: throughput with 1 process and with N torchrun processes, side by side in one run.

Each workload runs under ``python -m torch.distributed.run --nproc-per-node P`` for every P in
``--nproc`` (default ``1,2``), each time on the same generated photos and from an empty feature cache, and
reports images per second and the ratio to the 1-process run:

- ``encode``: filling the feature cache, ``features.encode_views`` of ``--views`` augmented views per
  image (under P > 1 each rank encodes its shard, writes its entries, and reads the others' back: the
  timed span covers all of it, so the rate is what ``dualpt train`` gets from its cache step).
- ``predict``: ``dualpt predict`` of every photo to a jsonl file with a prompt file of ``--classes`` x
  ``--prompts`` (untrained context, written as bench_predict.py writes it): under P > 1 each rank
  classifies its shard and streams its rows to a part file, and rank 0 appends the parts to the output
  and renames it (:mod:`dualpt_cli.predict.partfiles`): the timed span ends when the output is complete.

On a CPU the P processes share the cores (``--threads``: torch threads per process, default cores / P, so
every run uses the whole machine); with ``--device cuda`` each rank uses the GPU of its ``LOCAL_RANK``
(``--nproc 1,8`` on an 8-GPU machine). Model loading and the start of the processes are outside the timed
span; ranks start the clock together after a barrier and the rate is rank 0's wall time over all images.

Adding a workload: write ``work_<name>(args, data, dist) -> dict`` with ``images`` and ``seconds``
measured the same way, and add it to :data:`WORKLOADS`.

    python benchmarks/bench_scale.py          # RN50 (random weights), 256 photos, 1 vs 2 CPU processes
    python benchmarks/bench_scale.py --device cuda --nproc 1,8 --images 4096 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import dualpt_cli
from dualpt_cli.clip.features import encode_views
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.core.distributed import Dist, distributed
from dualpt_cli.data.images import expand_inputs
from dualpt_cli.data.stream import shard_inputs
from dualpt_cli.predict.classifier import load_classifier
from dualpt_cli.predict.output import JsonlWriter
from dualpt_cli.predict.partfiles import write_sharded
from dualpt_cli.predict.rows import predict_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import add_photo_args, add_prompt_file_args, make_photos, make_prompt_file  # noqa: E402
from harness import (  # noqa: E402
    RESULT_MARK,
    add_harness_args,
    environment,
    finish,
    fmt,
    load_avg,
    report_from_worker,
    sync,
)


def parse_nproc(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected process counts like 1,2 or 1,8, got {text!r}")
    return sorted(set(values))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_photo_args(p, "JPEG photos to encode")
    p.add_argument("--views", type=int, default=2, help="augmented views per image (train's --aug-views)")
    p.add_argument("--batch-size", type=int, default=64, help="views per encoder batch (predict: images per batch)")
    add_prompt_file_args(p, "predict: ")
    p.add_argument(
        "--workers", type=int, default=None, help="predict: image decoding processes per rank (default: predict's own)"
    )
    p.add_argument("--nproc", type=parse_nproc, default=[1, 2], help="process counts to compare, e.g. 1,2")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores / P)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (each rank on the GPU of its LOCAL_RANK)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    p.add_argument("--seed", type=int, default=0)
    add_harness_args(p)
    args = p.parse_args(argv)
    if min(args.images, args.views, args.batch_size, args.classes, args.prompts, args.ctx_len) < 1 or (
        args.threads is not None and args.threads < 1
    ):
        p.error("--images, --views, --batch-size, --classes, --prompts, --ctx-len and --threads must be >= 1")
    if args.workers is not None and args.workers < 0:
        p.error("--workers must be >= 0")
    unknown = [w for w in args.workloads.split(",") if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    return args


# ---------------------------------------------------------------------------------------------------------
# workloads (each rank runs one under torchrun)


def work_encode(args: argparse.Namespace, data: Path, dist: Dist) -> dict[str, Any]:
    """The feature cache filled from empty: every view of every photo encoded once, across the ranks."""
    torch.manual_seed(args.seed)
    bb = load_backbone(ModelSpec(args.model, args.pretrained), device=dist.device, precision=args.precision)
    paths = sorted((data / "photos").glob("*.jpg"))
    cache = data / f"cache-{dist.world_size}"
    views = list(range(args.views))
    encode_views(bb, paths[: max(1, args.batch_size // args.views)], views, None, batch_size=args.batch_size)  # warm-up
    dist.barrier("bench: waiting for every rank to load the model")
    sync(bb.device)
    t = time.perf_counter()
    fs = encode_views(bb, paths, views, cache, batch_size=args.batch_size, dist=dist)
    sync(bb.device)
    seconds = time.perf_counter() - t
    return {
        "images": len(fs.paths),
        "views": args.views,
        "seconds": seconds,
        "precision": bb.precision,
        "device": str(bb.device),
    }


def work_predict(args: argparse.Namespace, data: Path, dist: Dist) -> dict[str, Any]:
    """``dualpt predict photos/ --output rows.jsonl`` after the model is loaded: run_predict's own steps (the
    batch-aligned shard, predict_rows, the part files merged by rank 0), model loading left out."""
    torch.manual_seed(args.seed)  # the random weights the prompt file was written with
    clf = load_classifier(
        str(data / "prompts" / "prompts.safetensors"),
        None,
        None,
        None,
        None,
        dist.device,
        args.precision,
        args.batch_size,
    )
    paths = expand_inputs([str(data / "photos")])
    top_k = min(5, len(clf.classes))
    list(predict_rows(clf, paths[: args.batch_size], top_k, args.batch_size, args.workers))  # warm-up
    output = data / f"rows-{dist.world_size}.jsonl"
    dist.barrier("bench: waiting for every rank to load the model")
    sync(clf.bb.device)
    t = time.perf_counter()
    lo, hi = shard_inputs(paths, dist, args.batch_size, "bench predict")
    rows = predict_rows(clf, paths[lo:hi], top_k, args.batch_size, args.workers)
    failed = write_sharded(rows, "jsonl", str(output), lambda fh, first: JsonlWriter(fh, top_k), dist)
    sync(clf.bb.device)
    seconds = time.perf_counter() - t
    written = len(output.read_text().splitlines()) if dist.is_main else len(paths)
    if failed or written != len(paths):
        raise RuntimeError(f"predict wrote {written} rows for {len(paths)} photos ({failed} failed)")
    return {"images": len(paths), "seconds": seconds, "precision": clf.bb.precision, "device": str(clf.bb.device)}


WORKLOADS: dict[str, Callable[[argparse.Namespace, Path, Dist], dict[str, Any]]] = {
    "encode": work_encode,
    "predict": work_predict,
}


def worker(args: argparse.Namespace) -> None:
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" warning
    with distributed(device=args.device) as dist:
        try:
            result = WORKLOADS[args._worker](args, Path(args._data), dist)
        except Exception as exc:  # rank 0 says why in its result line; the launcher reports the exit code
            if dist.is_main:
                report_from_worker({"error": f"{type(exc).__name__}: {exc}"})
            raise
        result.update(dist.meta(), threads=torch.get_num_threads())
        if dist.is_main:
            report_from_worker(result)


# ---------------------------------------------------------------------------------------------------------
# orchestration


def launch(args: argparse.Namespace, argv: list[str], workload: str, nproc: int, data: Path) -> dict[str, Any]:
    """``workload`` under torchrun with ``nproc`` processes; rank 0's result (or the error)."""
    default = max(1, (os.cpu_count() or 1) // nproc) if args.device == "cpu" else 1  # GPU ranks: 1 thread each
    threads = args.threads or default
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
        str(Path(__file__).resolve()),
        *argv,
        "--_worker",
        workload,
        "--_data",
        str(data),
    ]
    package_root = str(Path(dualpt_cli.__file__).resolve().parents[1])  # the ranks run the code this script runs
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    print(f"[bench_scale] {workload} with {nproc} process(es) x {threads} thread(s) ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    result = json.loads(lines[-1][len(RESULT_MARK) :]) if lines else {}
    if proc.returncode != 0 or not lines or "error" in result:
        why = result.get("error") or f"see the output of: {' '.join(cmd)}"
        return {"nproc": nproc, "error": f"exit code {proc.returncode}: {why}"[:400]}
    result.update(nproc=nproc, images_per_s=result["images"] / result["seconds"])
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._worker:
        worker(args)
        return {}
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/bench_scale.py", *argv]),
        "environment": environment(args.device, args.precision),
        "scenario": {
            "model": args.model,
            "pretrained": args.pretrained or "(random weights)",
            "images": args.images,
            "source_size": "x".join(map(str, args.image_size)),
            "views": args.views,
            "batch_size": args.batch_size,
            "classes": args.classes,
            "prompts": args.prompts,
            "ctx_len": args.ctx_len,
            "device": args.device,
        },
    }
    with tempfile.TemporaryDirectory(prefix="dualpt-bench-scale-") as tmp:
        data = Path(tmp)
        make_photos(data / "photos", args.images, args.image_size, args.seed)
        if "predict" in args.workloads.split(","):
            make_prompt_file(args, data / "prompts")
        for workload in args.workloads.split(","):
            runs = [launch(args, argv, workload, n, data) for n in args.nproc]
            base = next((r for r in runs if r["nproc"] == min(args.nproc) and "error" not in r), None)
            for r in runs:
                if base and "error" not in r:
                    r["vs_fewest"] = r["images_per_s"] / base["images_per_s"]
            results[workload] = runs
    results["environment"]["load_avg_1m_end"] = load_avg()
    return finish(results, args.save, args.json, print_tables)


def print_tables(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 110))
    env, sc = r["environment"], r["scenario"]
    con.print(f"[bold]{r['command']}[/bold]")
    con.print(
        f"{env['device_name']}, {env['cpu_count']} CPUs, torch {env['torch']}, load avg "
        f"{fmt(env['load_avg_1m'])} -> {fmt(env.get('load_avg_1m_end'))}"
    )
    con.print(
        f"{sc['model']} {sc['pretrained']}, {sc['images']} JPEGs {sc['source_size']}, {sc['views']} views, "
        f"batch {sc['batch_size']}, device {sc['device']}; predict: {sc.get('classes')} classes x "
        f"{sc.get('prompts')} prompts"
    )
    t = Table(title="Throughput by process count (model loading excluded)")
    for col in ("workload", "processes", "threads / process", "backend", "images / s", "vs fewest"):
        t.add_column(col, justify="left" if col in ("workload", "backend") else "right")
    for workload in WORKLOADS:
        for run in r.get(workload, []):
            if "error" in run:
                t.add_row(workload, str(run["nproc"]), "-", "-", run["error"], "")
                continue
            t.add_row(
                workload,
                str(run["nproc"]),
                str(run["threads"]),
                run["backend"] or "-",
                f"{run['images_per_s']:.1f}",
                fmt(run.get("vs_fewest"), ".2f", "x"),
            )
    con.print(t)


if __name__ == "__main__":
    main()
