"""Prediction-speed benchmark: ``dualpt predict``'s batched path against the raw image encoder and plain open_clip.

One run classifies the same generated JPEG photos three ways and prints images per second:

- dualpt: the library's predict pipeline end to end from files (``predict.predict_rows``: decode +
  preprocess in DataLoader workers, global + local features, graph-matching logits (Eq. 8), softmax and
  top-k rows) at ``--precision`` (auto: bf16 on CPUs with AMX / AVX-512 bf16 and on GPUs);
- floor: ``model.encode_image`` alone on preprocessed tensors made before the clock starts, in the same
  precision and memory format as the backbone runs it (autocast; channels_last for ResNets below fp32),
  same batch size: the most any pipeline on this model and machine could reach;
- plain fp32: open_clip as a user writes it by default: ``preprocess(Image.open(p))`` in the main process,
  ``model.encode_image`` in fp32 without autocast, then zero-shot softmax against K text features, same
  batch size.

Also measured: where dualpt's time goes (decode + preprocess alone with the same workers, the graph
matching per batch), the top-1 agreement of dualpt's predictions at ``--precision`` and at fp32 on these
images, and the peak RSS of each path. Each path runs in its own process so its peak RSS is its own; model
loading is left out of every rate (it is the same for all three and paid once per command).

    python benchmarks/bench_predict.py                          # RN50 (random weights), 256 photos 320x240
    python benchmarks/bench_predict.py --images 128 --workers 1 --json
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from dualpt_cli.clip.backbone import Backbone
from dualpt_cli.clip.load import ModelSpec, load_backbone, select_device
from dualpt_cli.core.project import resolve_project
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.data.images import expand_inputs
from dualpt_cli.data.stream import default_workers, image_batches
from dualpt_cli.model.prompts import PromptLearner
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.predict.rows import predict_rows
from dualpt_cli.train.export import RunRecord, save_prompts
from dualpt_cli.train.hooks import BestEpoch
from dualpt_cli.train.loop import TrainConfig
from dualpt_cli.train.objective import matcher_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    add_harness_args,
    environment,
    finish,
    fmt,
    load_avg,
    peak_rss_gib,
    report_from_worker,
    run_part,
    sync,
)

TOP_K = 5
NAMES = [
    "accordion",
    "airplane",
    "anchor",
    "ant",
    "barrel",
    "bass",
    "beaver",
    "binocular",
    "bonsai",
    "brain",
    "brontosaurus",
    "buddha",
    "butterfly",
    "camera",
    "cannon",
    "car side",
    "ceiling fan",
    "cellphone",
    "chair",
    "chandelier",
    "cougar body",
    "cougar face",
    "crab",
    "crayfish",
    "crocodile",
    "cup",
]


# ---------------------------------------------------------------------------------------------------------
# arguments


def parse_size(text: str) -> tuple[int, int]:
    """``"320x240"`` -> (320, 240); a single number is a square."""
    parts = text.lower().split("x")
    try:
        w, h = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        w = h = 0
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 320x240) or one side, got {text!r}")
    return w, h


def add_photo_args(p: argparse.ArgumentParser, images_help: str) -> None:
    """The model and the synthetic JPEGs a throughput benchmark runs on (bench_predict, bench_scale)."""
    p.add_argument("--model", default="RN50", help="open_clip model (built-in name or local-dir:/path)")
    p.add_argument("--pretrained", default="", help='pretrained tag or weights file ("" = random weights)')
    p.add_argument("--images", type=int, default=256, help=images_help)
    p.add_argument(
        "--image-size",
        type=parse_size,
        default=(320, 240),
        help="size of the source JPEGs, WxH or one side (the model resizes and crops them)",
    )


def add_prompt_file_args(p: argparse.ArgumentParser, scope: str = "") -> None:
    """The shape of the synthetic prompt file predict runs with (``scope``: which workload uses them)."""
    p.add_argument("--classes", type=int, default=10, help=f"{scope}K classes in the prompt file")
    p.add_argument("--prompts", type=int, default=4, help=f"{scope}M prompts per class")
    p.add_argument("--ctx-len", type=int, default=16, help=f"{scope}context vectors per prompt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_photo_args(p, "JPEG photos to classify (timed once per path)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch, the same for all paths")
    add_prompt_file_args(p)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"dualpt's DataLoader workers (default: predict's own, {default_workers()} on this CPU)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="dualpt's and the floor's precision (plain is fp32)")
    p.add_argument("--skip-plain", action="store_true", help="skip the plain fp32 path")
    p.add_argument("--skip-check", action="store_true", help="skip the fp32 run of dualpt's path (agreement)")
    p.add_argument("--seed", type=int, default=0)
    add_harness_args(p)
    args = p.parse_args(argv)
    if min(args.images, args.batch_size, args.classes, args.prompts, args.ctx_len) < 1:
        p.error("--images, --batch-size, --classes, --prompts and --ctx-len must be >= 1")
    if args.workers is not None and args.workers < 0:
        p.error("--workers must be >= 0")
    return args


# ---------------------------------------------------------------------------------------------------------
# inputs: photos and a prompt file


def make_photos(folder: Path, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    """``n`` photo-like JPEGs (quality 90): a random colour gradient, a disc, pixel noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        a, b = rng.uniform(0, 255, size=(2, 3))
        t = (xs * rng.uniform(-1, 1) + ys * rng.uniform(-1, 1)) / (w + h) + 0.5  # (h, w) gradient in [0, 1]
        arr = a + (b - a) * t[..., None] + rng.normal(0, 12, size=(h, w, 3))  # (h, w, 3)
        im = Image.fromarray(arr.clip(0, 255).astype("uint8"))
        r = int(min(w, h) * rng.uniform(0.15, 0.35))
        cx, cy = int(rng.integers(r, w - r + 1)), int(rng.integers(r, h - r + 1))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        ImageDraw.Draw(im).ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        path = folder / f"photo_{i:05d}.jpg"
        im.save(path, quality=90)
        paths.append(path)
    return paths


def make_prompt_file(args: argparse.Namespace, folder: Path) -> Path:
    """A prompt file for K classes written by the library's own ``train.save_prompts``, untrained context."""
    bb = load(args, "fp32")
    names = [NAMES[k] if k < len(NAMES) else f"object {k}" for k in range(args.classes)]
    learner = PromptLearner(bb, names, args.prompts, args.ctx_len, seed=args.seed)
    cfg = TrainConfig(
        images="",
        model=args.model,
        pretrained=args.pretrained,
        n_prompts=args.prompts,
        n_ctx=args.ctx_len,
        shots=1,
        seed=args.seed,
        device=args.device,
    )
    no_desc = torch.zeros(args.classes, dtype=torch.bool)
    objective = SimpleNamespace(beta=0.0, matcher=matcher_for(cfg, bb), desc_has=no_desc)
    data = SimpleNamespace(classes=[ClassEntry(folder=n.replace(" ", "_"), name=n) for n in names], new_classes=[])
    project = resolve_project(str(folder)).ensure()
    return save_prompts(project, learner, RunRecord(cfg, objective, data, epochs=0, best=BestEpoch(epoch=0)))


def load(args: argparse.Namespace, precision: str) -> Backbone:
    """The frozen CLIP at ``precision``; the same (seeded) random weights in every process."""
    torch.manual_seed(args.seed)
    return load_backbone(ModelSpec(args.model, args.pretrained), device=args.device, precision=precision)


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------------------------------------------------
# the three paths (each in its own process unless --inline)


def work_dualpt(args: argparse.Namespace, data: Path, precision: str | None = None) -> dict[str, Any]:
    """dualpt's path: ``predict_rows`` over all photos, after a one-batch warm-up; then its parts alone."""
    precision = precision or args.precision
    paths = expand_inputs([str(data / "photos")])
    torch.manual_seed(args.seed)
    clf = Classifier.from_prompt_file(
        data / "prompts" / "prompts.safetensors", device=args.device, precision=precision, batch_size=args.batch_size
    )
    dev = clf.bb.device
    list(predict_rows(clf, paths[: args.batch_size], TOP_K, args.batch_size, args.workers))  # warm-up
    sync(dev)
    t = time.perf_counter()
    rows = list(predict_rows(clf, paths, TOP_K, args.batch_size, args.workers))
    sync(dev)
    total = time.perf_counter() - t
    names = clf.class_names
    out: dict[str, Any] = {
        "precision": clf.bb.precision,
        "device": str(dev),
        "channels_last": clf.bb.channels_last,
        "workers": default_workers() if args.workers is None else args.workers,
        "threads": torch.get_num_threads(),
        "seconds": total,
        "images_per_s": len(paths) / total,
        "errors": sum(r["error"] is not None for r in rows),
        "top1": [names.index(r["class"]) if r["class"] is not None else -1 for r in rows],
        "peak_rss_gib": peak_rss_gib(),
    }
    if precision == args.precision:
        out["parts"] = dualpt_parts(args, clf, paths)
    return out


def dualpt_parts(args: argparse.Namespace, clf: Classifier, paths: list[Path]) -> dict[str, float]:
    """Seconds of each part of dualpt's path on its own: decode (with the workers), encode, matching."""
    dev = clf.bb.device
    t = time.perf_counter()
    pixels = [
        b.pixels for b in image_batches(paths, clf.bb.eval_transform(), args.batch_size, args.workers, device=dev)
    ]
    decode = time.perf_counter() - t
    encode = matching = 0.0
    for x in pixels:
        sync(dev)
        t = time.perf_counter()
        _, Z = clf.bb.encode_images(x)  # (b, N, d)
        sync(dev)
        t2 = time.perf_counter()
        clf.logits_from_local(Z).softmax(-1)
        sync(dev)
        encode, matching = encode + t2 - t, matching + time.perf_counter() - t2
    return {"decode_workers_s": decode, "encode_s": encode, "matching_s": matching}


def work_floor(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """``model.encode_image`` alone on preprocessed tensors, in dualpt's precision and memory format."""
    from dualpt_cli.data.images import load_image

    bb = load(args, args.precision)
    paths = expand_inputs([str(data / "photos")])
    tf = bb.eval_transform()
    fmt = torch.channels_last if bb.channels_last else torch.contiguous_format
    pixels = [
        torch.stack([tf(load_image(p)) for p in group]).to(bb.device).contiguous(memory_format=fmt)
        for group in batches(paths, args.batch_size)
    ]  # (b, 3, H, W) each, made before the clock
    with torch.no_grad(), bb.autocast():
        bb.model.encode_image(pixels[0])  # warm-up
        sync(bb.device)
        t = time.perf_counter()
        for x in pixels:
            bb.model.encode_image(x)
        sync(bb.device)
    total = time.perf_counter() - t
    return {
        "precision": bb.precision,
        "channels_last": bb.channels_last,
        "threads": torch.get_num_threads(),
        "seconds": total,
        "images_per_s": len(paths) / total,
        "peak_rss_gib": peak_rss_gib(),
    }


def work_plain(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """open_clip as a user writes it: preprocess(Image.open(p)) batched, fp32 encode_image, zero-shot softmax."""
    import open_clip
    from PIL import Image

    name, pretrained = ModelSpec(args.model, args.pretrained).resolved()
    torch.manual_seed(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained or None)
    model.eval()
    dev = select_device(args.device)
    model.to(dev)
    tokenizer = open_clip.get_tokenizer(name)
    paths = expand_inputs([str(data / "photos")])
    names = [NAMES[k] if k < len(NAMES) else f"object {k}" for k in range(args.classes)]
    with torch.no_grad():
        text = model.encode_text(tokenizer([f"a photo of a {n}." for n in names]).to(dev))
        text = text / text.norm(dim=-1, keepdim=True)  # (K, d)

    def classify(group: list[Path]) -> torch.Tensor:
        x = torch.stack([preprocess(Image.open(p)) for p in group]).to(dev)  # (b, 3, H, W)
        with torch.no_grad():
            f = model.encode_image(x)
            f = f / f.norm(dim=-1, keepdim=True)
            return (100.0 * f @ text.T).softmax(dim=-1).topk(min(TOP_K, len(names)), dim=-1).indices.cpu()

    classify(paths[: args.batch_size])  # warm-up
    sync(dev)
    t = time.perf_counter()
    for group in batches(paths, args.batch_size):
        classify(group)
    sync(dev)
    total = time.perf_counter() - t
    return {
        "precision": "fp32",
        "threads": torch.get_num_threads(),
        "seconds": total,
        "images_per_s": len(paths) / total,
        "peak_rss_gib": peak_rss_gib(),
    }


def work_check(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """dualpt's path at fp32 on the same photos (its top-1 predictions and rate)."""
    out = work_dualpt(args, data, precision="fp32")
    return {k: out[k] for k in ("precision", "seconds", "images_per_s", "top1", "peak_rss_gib")}


WORKERS = {"dualpt": work_dualpt, "floor": work_floor, "plain": work_plain, "check": work_check}


# ---------------------------------------------------------------------------------------------------------
# orchestration


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" warning
    if args._worker:
        report_from_worker(WORKERS[args._worker](args, Path(args._data)))
        return {}

    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/bench_predict.py", *argv]),
        "environment": environment(args.device, args.precision),
        "scenario": scenario(args),
    }
    with tempfile.TemporaryDirectory(prefix="dualpt-bench-predict-") as tmp:
        data = Path(tmp)
        make_photos(data / "photos", args.images, args.image_size, args.seed)
        make_prompt_file(args, data / "prompts")
        roles = ["dualpt", "floor"] + ([] if args.skip_plain else ["plain"]) + ([] if args.skip_check else ["check"])
        for role in roles:
            results[role] = run_part(
                __file__, role, args.inline, lambda r=role: WORKERS[r](args, data), argv, ["--_data", str(data)]
            )
    results["environment"]["load_avg_1m_end"] = load_avg()
    results["summary"] = summarise(results)
    for role in ("dualpt", "check"):
        results.get(role, {}).pop("top1", None)  # compared in the summary; too long to print
    return finish(results, args.save, args.json, print_tables)


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "pretrained": args.pretrained or "(random weights)",
        "images": args.images,
        "source_size": "x".join(map(str, args.image_size)),
        "batch_size": args.batch_size,
        "classes": args.classes,
        "prompts": args.prompts,
        "ctx_len": args.ctx_len,
        "workers": default_workers() if args.workers is None else args.workers,
    }


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    ours, floor, plain, check = (r.get(k, {}) for k in ("dualpt", "floor", "plain", "check"))
    s: dict[str, Any] = {}
    if "images_per_s" in ours and "images_per_s" in floor:
        s["vs_floor"] = ours["images_per_s"] / floor["images_per_s"]
        s["goal_vs_floor_0.9x"] = s["vs_floor"] >= 0.9
    if "images_per_s" in ours and "images_per_s" in plain:
        s["vs_plain_fp32"] = ours["images_per_s"] / plain["images_per_s"]
        s["goal_vs_plain_3x"] = s["vs_plain_fp32"] >= 3.0
    if "top1" in ours and "top1" in check:
        same = [a == b for a, b in zip(ours["top1"], check["top1"])]
        s["top1_agreement_vs_fp32"] = sum(same) / max(len(same), 1)
        s["agreement_images"] = len(same)
    return s


# ---------------------------------------------------------------------------------------------------------
# output


def print_tables(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 120))
    env, sc, s = r["environment"], r["scenario"], r["summary"]
    con.print(f"[bold]{r['command']}[/bold]")
    con.print(
        f"device {env['device']} ({env['device_name']}), {env['cpu_count']} CPUs, {env['cpu_threads']} torch "
        f"threads, bf16 fast path: {env['cpu_fast_bf16']}, torch {env['torch']}, load avg "
        f"{fmt(env['load_avg_1m'])} -> {fmt(env.get('load_avg_1m_end'))}"
    )
    con.print(
        f"{sc['model']} {sc['pretrained']}, {sc['images']} JPEGs {sc['source_size']}, batch {sc['batch_size']}, "
        f"{sc['classes']} classes x {sc['prompts']} prompts, dualpt workers {sc['workers']}"
    )
    t = Table(title="Prediction speed (model loading excluded)")
    for col, just in (
        ("path", "left"),
        ("precision", "left"),
        ("images / s", "right"),
        ("vs floor", "right"),
        ("dualpt vs this", "right"),
        ("peak RSS", "right"),
    ):
        t.add_column(col, justify=just)
    ours = r.get("dualpt", {})
    floor_rate = r.get("floor", {}).get("images_per_s")
    labels = {
        "dualpt": "dualpt predict (files -> rows)",
        "floor": "floor: encode_image on tensors",
        "plain": "plain open_clip fp32 (files)",
        "check": "dualpt predict at fp32",
    }
    for key, label in labels.items():
        part = r.get(key)
        if part is None:
            continue
        if "error" in part:
            t.add_row(label, "-", part["error"], "", "", "")
            continue
        rate = part["images_per_s"]
        prec = part["precision"] + (" channels_last" if part.get("channels_last") else "")
        t.add_row(
            label,
            prec,
            f"{rate:.1f}",
            fmt(rate / floor_rate if floor_rate else None, ".2f", "x"),
            fmt(ours.get("images_per_s", math.nan) / rate, ".2f", "x"),
            fmt(part["peak_rss_gib"], ".2f", " GiB"),
        )
    con.print(t)
    parts = ours.get("parts")
    if parts:
        n = sc["images"]
        con.print(
            "dualpt's parts alone (ms / image): "
            + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {1000 * v / n:.1f}" for k, v in parts.items())
            + f"; whole path {1000 * ours['seconds'] / n:.1f}"
        )
    if "top1_agreement_vs_fp32" in s:
        con.print(
            f"top-1 agreement of dualpt at {ours.get('precision')} vs fp32: {s['top1_agreement_vs_fp32']:.1%} "
            f"of {s['agreement_images']} images"
        )
    goals = {k: v for k, v in s.items() if k.startswith("goal_")}
    if goals:
        con.print(
            f"dualpt / floor {fmt(s.get('vs_floor'), '.2f', 'x')}, dualpt / plain fp32 "
            f"{fmt(s.get('vs_plain_fp32'), '.2f', 'x')}; goals: "
            + ", ".join(f"{k[5:]} {'PASS' if v else 'FAIL'}" for k, v in goals.items())
        )


if __name__ == "__main__":
    main()
