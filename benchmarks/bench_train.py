"""Training-speed benchmark: the research-code (CoOp/PLOT-style) step against dualpt's training path.

One run trains the same configuration two ways and prints a table:

- reference: what CoOp/PLOT compute per step. The batch images are encoded by the frozen image encoder
  at every step (global + local features, fp32), and all K x M prompts go through the full 77-token
  text encoder (no prefix cache, no truncation), fp32; then the same graph matching and loss.
- dualpt: the library's own training code (``train.prepare_data`` -> feature cache of ``--aug-views``
  views per image, ``train.train_epoch`` with the prefix-cached, truncated prompt learner) at
  ``--precision`` (auto: bf16 on CPUs with AMX / AVX-512 bf16 and on GPUs).

Both paths see exactly the same augmented views in the same order (the reference re-creates view v of an
image with the cache's own seed), so only the way they compute differs. The reference's image decoding
and augmentation are timed apart and left out of its seconds per epoch (that favours the reference).

Also measured: the one-time cost of encoding the feature cache; fp32 logit (and context-gradient)
equality between the two paths on the same pixels and context; top-1 agreement of bf16 and fp32
predictions; the graph matching's share of step time; peak memory (RSS, and CUDA max allocated) of each
path and of one training step at ImageNet scale (``--memory-classes`` x M prompts) with and without
chunked text encoding. Each measurement runs in its own subprocess so that peak RSS is its own.

    python benchmarks/bench_train.py                       # RN50 (random weights), 10 classes x 8 shots
    python benchmarks/bench_train.py --epochs 1 --memory-classes 0 --json
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dualpt_cli.clip.backbone import Backbone
from dualpt_cli.clip.features import EVAL_VIEW, encode_views, view_seed
from dualpt_cli.clip.load import ModelSpec, load_backbone, select_device, select_precision
from dualpt_cli.core.project import resolve_project
from dualpt_cli.data.classes import class_entries
from dualpt_cli.data.images import few_shot_split, file_digest, load_image, scan_image_folder
from dualpt_cli.model.prompts import PromptLearner
from dualpt_cli.train.config import TrainConfig
from dualpt_cli.train.loop import Callbacks, train_epoch
from dualpt_cli.train.objective import Objective, build_objective, matcher_for
from dualpt_cli.train.profiler import Profiler
from dualpt_cli.train.profiler import phase as _phase
from dualpt_cli.train.registry import resolve_recipe
from dualpt_cli.train.schedule import epochs_for_shots, lr_at
from dualpt_cli.train.trainset import prepare_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import GIB, add_harness_args, environment, finish, fmt, peak_rss_gib, report_from_worker, run_part, sync  # noqa: E402

# Caltech101-like class names: realistic token lengths decide where the text sequence is cut
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
    "crocodile head",
    "cup",
    "dalmatian",
    "dollar bill",
    "dolphin",
    "dragonfly",
    "electric guitar",
    "elephant",
    "emu",
    "euphonium",
    "ewer",
    "ferry",
    "flamingo",
    "flamingo head",
    "garfield",
    "gerenuk",
    "gramophone",
    "grand piano",
    "hawksbill",
    "headphone",
    "hedgehog",
    "helicopter",
    "ibis",
    "inline skate",
    "joshua tree",
    "kangaroo",
    "ketch",
    "lamp",
    "laptop",
    "leopard",
    "llama",
    "lobster",
    "lotus",
    "mandolin",
    "mayfly",
    "menorah",
    "metronome",
    "minaret",
    "motorbike",
    "nautilus",
    "octopus",
    "okapi",
    "pagoda",
    "panda",
    "pigeon",
    "pizza",
    "platypus",
    "pyramid",
    "revolver",
    "rhino",
    "rooster",
    "saxophone",
    "schooner",
    "scissors",
    "scorpion",
    "sea horse",
    "snoopy",
    "soccer ball",
    "stapler",
    "starfish",
    "stegosaurus",
    "stop sign",
    "strawberry",
    "sunflower",
    "tick",
    "trilobite",
    "umbrella",
    "watch",
    "water lilly",
    "wheelchair",
    "wild cat",
    "windsor chair",
    "wrench",
    "yin yang",
]


# ---------------------------------------------------------------------------------------------------------
# arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="RN50", help="open_clip model (built-in name or local-dir:/path)")
    p.add_argument("--pretrained", default="", help='pretrained tag or weights file ("" = random weights)')
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the model's own, 224 for RN50)")
    p.add_argument("--classes", type=int, default=10, help="K classes of the synthetic ImageFolder")
    p.add_argument("--shots", type=int, default=8, help="images per class")
    p.add_argument("--prompts", type=int, default=4, help="M prompts per class")
    p.add_argument("--ctx-len", type=int, default=16, help="context vectors per prompt")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per path (after a warm-up)")
    p.add_argument("--aug-views", type=int, default=8, help="augmented views per image in dualpt's feature cache")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="dualpt path's precision (the reference is always fp32)")
    p.add_argument(
        "--check-images",
        type=int,
        default=32,
        help="images on which fp32 logits of both paths are compared (all are used for bf16 agreement)",
    )
    p.add_argument("--memory-classes", type=int, default=1000, help="classes of the memory scenario (0 = skip)")
    p.add_argument("--memory-chunk", type=int, default=250, help="text_chunk of the memory scenario")
    p.add_argument(
        "--memory-unchunked",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the memory scenario without chunking",
    )
    p.add_argument("--skip-reference", action="store_true", help="time only dualpt's path")
    p.add_argument("--seed", type=int, default=1)
    add_harness_args(p)
    p.add_argument("--_chunk", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.classes, args.shots, args.prompts, args.ctx_len, args.batch_size, args.epochs, args.aug_views) < 1:
        p.error("--classes, --shots, --prompts, --ctx-len, --batch-size, --epochs and --aug-views must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------------------
# shared pieces


def load(args: argparse.Namespace, precision: str) -> Backbone:
    """The frozen CLIP at ``precision``; the same (seeded) random weights in every process."""
    torch.manual_seed(0)
    spec = ModelSpec(args.model, args.pretrained)
    bb = load_backbone(spec, device=args.device, precision=precision)
    if args.image_size is None or args.image_size == bb.image_size:
        return bb
    import open_clip  # a different input size: rebuild the tower for it (the package never does this)

    torch.manual_seed(0)
    name, pretrained = spec.resolved()
    model = open_clip.create_model(name, pretrained=pretrained or None, force_image_size=args.image_size)
    model.eval().requires_grad_(False)
    pp = {**bb.preprocess_cfg, "size": args.image_size}
    return Backbone(model, bb.tokenizer, pp, spec, bb.device, bb.precision)


def make_image_folder(root: Path, classes: int, shots: int, size: int, seed: int) -> Path:
    """A synthetic ImageFolder: per class a colour, per image a noisy background and a disc of that colour."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    for k in range(classes):
        name = NAMES[k] if k < len(NAMES) else f"object {k}"
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        colour = tuple(rng.randrange(256) for _ in range(3))
        for i in range(shots):
            bg = nrng.integers(0, 256, size=3)
            arr = (bg + nrng.normal(0, 40, size=(size, size, 3))).clip(0, 255).astype("uint8")
            im = Image.fromarray(arr)
            r = size // 4 + rng.randrange(size // 8)
            cx, cy = rng.randrange(r, size - r), rng.randrange(r, size - r)
            ImageDraw.Draw(im).ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            im.save(folder / f"{i:03d}.png")
    return root


def split_paths(args: argparse.Namespace, data_dir: Path) -> tuple[list[Path], torch.Tensor, list[str]]:
    """The training images, labels and class names exactly as ``train.prepare_data`` chooses them."""
    folders = scan_image_folder(data_dir)
    classes = class_entries(list(folders), None)
    train, _, _ = few_shot_split(folders, args.shots, args.seed, 0)
    paths = [p for f in folders for p in train[f]]
    labels = [i for i, f in enumerate(folders) for _ in train[f]]
    return paths, torch.tensor(labels), [c.name for c in classes]


def make_objective(args: argparse.Namespace, bb: Backbone, num_classes: int) -> Objective:
    """The loss of ``train.build_objective`` without LLM descriptions (beta = 0), with TrainConfig's defaults."""
    cfg = TrainConfig(images="")
    d = bb.embed_dim
    return Objective(
        matcher=matcher_for(cfg, bb),
        beta=0.0,
        llm_loss=cfg.llm_loss,
        desc_mean=torch.zeros(num_classes, d, device=bb.device),
        desc_has=torch.zeros(num_classes, dtype=torch.bool, device=bb.device),
        desc_sets=[],
    )


def reference_learner(bb: Backbone, names: list[str], args: argparse.Namespace) -> PromptLearner:
    """CoOp/PLOT's text path: every prompt through all 77 positions, nothing shared."""
    learner = PromptLearner(bb, names, args.prompts, args.ctx_len, seed=args.seed)
    learner.use_prefix_cache = False
    learner.truncate = False
    return learner


def cuda_reset(bb: Backbone) -> None:
    if bb.device.type == "cuda":
        torch.cuda.synchronize(bb.device)
        torch.cuda.reset_peak_memory_stats(bb.device)


def memory(bb: Backbone | None) -> dict[str, float | None]:
    """Peak RSS of this process so far (GiB) and CUDA max allocated since the last reset (GiB)."""
    cuda = None
    if bb is not None and bb.device.type == "cuda":
        cuda = torch.cuda.max_memory_allocated(bb.device) / GIB
    return {"peak_rss_gib": peak_rss_gib(), "cuda_max_alloc_gib": cuda}


def current_rss_gib() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / GIB
    except (OSError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------------------------------------------
# workers (each in its own process unless --inline)


def work_dualpt(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """dualpt's path: the library's prepare_data (feature cache) and train_epoch, timed per epoch."""
    bb = load(args, args.precision)
    base_rss = current_rss_gib()
    cuda_reset(bb)
    with tempfile.TemporaryDirectory(prefix="dualpt-bench-project-") as project_dir:
        cfg = resolve_recipe(
            TrainConfig(  # the paper's recipe: the reference path's crops and no hold-out
                images=str(data_dir),
                project=project_dir,
                shots=args.shots,
                model=args.model,
                pretrained=args.pretrained,
                seed=args.seed,
                recipe="paper",
                n_prompts=args.prompts,
                n_ctx=args.ctx_len,
                context="none",
                epochs=args.epochs + 1,
                batch_size=args.batch_size,
                aug_views=args.aug_views,
                device=args.device,
                precision=args.precision,
                profile=True,
            )
        )
        project = resolve_project(project_dir).ensure()
        cb = Callbacks()
        t0 = time.perf_counter()
        data = prepare_data(cfg, project, bb, cb)
        sync(bb.device)
        cache_s = time.perf_counter() - t0
        learner = PromptLearner(
            bb, [c.name for c in data.classes], cfg.n_prompts, cfg.n_ctx, cfg.ctx_init, cfg.class_specific, cfg.seed
        )
        objective = build_objective(cfg, project, bb, data, cb)
        optimizer = torch.optim.SGD([learner.ctx], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        total = cfg.epochs
        train_epoch(0, total, cfg, learner, optimizer, objective, data, cb, None)  # warm-up (untimed)
        prof = Profiler(bb.device)
        seconds, records = [], []
        for epoch in range(1, total):
            sync(bb.device)
            t = time.perf_counter()
            records.append(train_epoch(epoch, total, cfg, learner, optimizer, objective, data, cb, prof))
            sync(bb.device)
            seconds.append(time.perf_counter() - t)
    n_images = int(data.train.global_.shape[0])
    return {
        "precision": bb.precision,
        "device": str(bb.device),
        "channels_last": bb.channels_last,
        "sec_per_epoch": min(seconds),
        "epoch_seconds": seconds,
        "steps_per_epoch": math.ceil(n_images / args.batch_size),
        "images": n_images,
        "cache_encode_s": cache_s,
        "cache_views": n_images * args.aug_views,
        "phases": phase_shares(prof.summary()),
        "match_iters": [(r["match_outer_iters"], r["match_inner_iters"]) for r in records],
        "base_rss_gib": base_rss,
        **memory(bb),
    }


def work_reference(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """CoOp/PLOT's per-step computation on the same views in the same order as train_epoch draws them."""
    bb = load(args, "fp32")
    base_rss = current_rss_gib()
    cuda_reset(bb)
    paths, labels, names = split_paths(args, data_dir)
    labels = labels.to(bb.device)
    images = [load_image(p) for p in paths]  # decoded once (CoOp decodes at every step: in our favour)
    digests = [file_digest(p) for p in paths]
    train_tf = bb.train_transform()
    learner = reference_learner(bb, names, args)
    objective = make_objective(args, bb, len(names))
    cfg = resolve_recipe(
        TrainConfig(images="", epochs=args.epochs + 1, batch_size=args.batch_size, seed=args.seed, recipe="paper")
    )
    optimizer = torch.optim.SGD([learner.ctx], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def view(i: int, v: int) -> torch.Tensor:  # exactly the cache's view v of image i
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(digests[i], v, cfg.seed))
            return train_tf(images[i])

    def step(idx: torch.Tensor, views: torch.Tensor, prof: Profiler | None) -> None:
        with _phase(prof, "data"):
            pixels = torch.stack([view(int(i), int(v)) for i, v in zip(idx, views[idx])])
            y = labels[idx.to(bb.device)]
        with _phase(prof, "image encoder"):
            _, Z = bb.encode_images(pixels)  # (b, N, d), fp32, every step
        with _phase(prof, "text"):
            W = learner()  # (K, M, d): K*M prompts x 77 positions
        with _phase(prof, "matching"):
            logits = objective.logits(Z, W)  # (b, K)
        with _phase(prof, "loss"):
            loss = F.cross_entropy(logits, y)
        with _phase(prof, "backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with _phase(prof, "optimizer"):
            optimizer.step()

    def order(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:  # train_epoch's order and views
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(paths), generator=gen)
        return perm, torch.randint(args.aug_views, (len(paths),), generator=gen)

    perm, views = order(0)
    step(perm[: args.batch_size], views, None)  # warm-up step (untimed)
    prof = Profiler(bb.device)
    seconds = []
    steps = math.ceil(len(paths) / args.batch_size)
    for epoch in range(1, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, cfg, cfg.epochs)
        perm, views = order(epoch)
        before = prof.totals.get("data", 0.0)
        sync(bb.device)
        t = time.perf_counter()
        for s in range(steps):
            step(perm[s * args.batch_size : (s + 1) * args.batch_size], views, prof)
        sync(bb.device)
        seconds.append(time.perf_counter() - t - (prof.totals["data"] - before))  # decode/augment left out
    totals = prof.summary()
    data_s = totals.pop("data", 0.0)
    return {
        "precision": bb.precision,
        "device": str(bb.device),
        "sec_per_epoch": min(seconds),
        "epoch_seconds": seconds,
        "data_s_per_epoch_excluded": data_s / len(seconds),
        "phases": phase_shares(totals),
        "base_rss_gib": base_rss,
        **memory(bb),
    }


def work_check(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """fp32 equality of the two paths on the same pixels and context; bf16 vs fp32 top-1 agreement."""
    bb32 = load(args, "fp32")
    paths, labels, names = split_paths(args, data_dir)
    labels = labels.to(bb32.device)
    n = min(args.check_images, len(paths))
    eval_tf = bb32.eval_transform()
    pixels = torch.stack([eval_tf(load_image(p)) for p in paths[:n]])  # the eval view's pixels
    obj32 = make_objective(args, bb32, len(names))
    ref, fast = (
        reference_learner(bb32, names, args),
        PromptLearner(bb32, names, args.prompts, args.ctx_len, seed=args.seed),
    )
    _, Z_ref = bb32.encode_images(pixels)  # reference: encode the pixels in the step
    logits_ref = obj32.logits(Z_ref, ref())
    F.cross_entropy(logits_ref, labels[:n]).backward()
    fs32 = encode_views(bb32, paths, [EVAL_VIEW], cache_dir=None)  # dualpt: the feature-cache path
    Z32 = fs32.local[:, 0].float()
    logits_32 = obj32.logits(Z32[:n], fast())
    F.cross_entropy(logits_32, labels[:n]).backward()
    diff = (logits_32 - logits_ref).abs().max().item()
    scale = logits_ref.abs().max().item()
    grad_diff = ((fast.ctx.grad - ref.ctx.grad).abs().max() / ref.ctx.grad.abs().max()).item()
    out: dict[str, Any] = {
        "check_images": n,
        "fp32_max_abs_logit_diff": diff,
        "fp32_max_logit": scale,
        "fp32_rel_logit_diff": diff / max(scale, 1e-12),
        "fp32_rel_ctx_grad_diff": grad_diff,
        "fp32_top1_agreement": float((logits_32.argmax(-1) == logits_ref.argmax(-1)).float().mean()),
    }
    prec = select_precision(args.precision, select_device(args.device))
    if prec != "fp32":
        with torch.no_grad():
            full32 = obj32.logits(Z32, fast())  # (I, K) every image's eval view, fp32
            del ref, fs32
            bbx = load(args, prec)
            fsx = encode_views(bbx, paths, [EVAL_VIEW], cache_dir=None)
            fastx = PromptLearner(bbx, names, args.prompts, args.ctx_len, seed=args.seed)
            objx = make_objective(args, bbx, len(names))
            with bbx.autocast():
                logitsx = objx.logits(fsx.local[:, 0].float(), fastx())
        b = min(args.batch_size, len(paths))
        out["isolated_step_s"] = {
            "fp32": step_time(fast, obj32, Z32[:b], labels[:b], None),
            prec: step_time(fastx, objx, fsx.local[:b, 0].float(), labels[:b], bbx),
        }
        top2 = full32.topk(2, dim=-1).values
        out.update(
            {
                "low_precision": prec,
                "agreement_images": len(paths),
                "top1_agreement": float((logitsx.argmax(-1) == full32.argmax(-1)).float().mean()),
                "max_abs_logit_diff_low_vs_fp32": (logitsx - full32).abs().max().item(),
                "median_top1_top2_gap_fp32": (top2[:, 0] - top2[:, 1]).median().item(),
            }
        )
    return out


def step_time(
    learner: PromptLearner,
    objective: Objective,
    Z: torch.Tensor,
    y: torch.Tensor,
    bb: Backbone | None,
    repeats: int = 5,
) -> float:
    """Fastest of ``repeats`` training steps (text, matching, backward) on one cached batch."""
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t = time.perf_counter()
        with torch.enable_grad():
            W = learner()
            with bb.autocast() if bb is not None else torch.autocast("cpu", enabled=False):
                logits = objective.logits(Z, W)
            F.cross_entropy(logits.float(), y).backward()
        learner.ctx.grad = None
        if bb is not None:
            sync(bb.device)
        times.append(time.perf_counter() - t)
    return min(times[1:])


def work_memory(args: argparse.Namespace, chunk: int) -> dict[str, Any]:
    """One training step with ``--memory-classes`` x M prompts from cached (here random) image features."""
    bb = load(args, args.precision)
    base_rss = current_rss_gib()
    cuda_reset(bb)
    K = args.memory_classes
    names = [f"{NAMES[k % len(NAMES)]} {k}" for k in range(K)]
    learner = PromptLearner(bb, names, args.prompts, args.ctx_len, seed=args.seed)
    learner.text_chunk = chunk
    objective = make_objective(args, bb, K)
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(args.batch_size, bb.num_local, bb.embed_dim, generator=gen).to(bb.device)  # (B, N, d)
    y = torch.randint(K, (args.batch_size,), generator=gen).to(bb.device)
    optimizer = torch.optim.SGD([learner.ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    prof = Profiler(bb.device)
    t = time.perf_counter()
    with _phase(prof, "text"):
        W = learner()
    with _phase(prof, "matching"), bb.autocast():
        logits = objective.logits(Z, W)
    with _phase(prof, "backward"):
        F.cross_entropy(logits.float(), y).backward()
    optimizer.step()
    sync(bb.device)
    cache_gib = (
        K * args.shots * args.aug_views * (bb.num_local + 1) * bb.embed_dim * (4 if bb.precision == "fp32" else 2)
    ) / GIB
    return {
        "classes": K,
        "prompts": args.prompts,
        "text_chunk": chunk,
        "precision": bb.precision,
        "step_s": time.perf_counter() - t,
        "phases": phase_shares(prof.summary()),
        "max_eot": int(learner.eot.max()),
        "base_rss_gib": base_rss,
        "feature_cache_gib": cache_gib,
        **memory(bb),
    }


def phase_shares(totals: dict[str, float]) -> dict[str, dict[str, float]]:
    whole = sum(totals.values()) or 1.0
    return {k: {"s": v, "share": v / whole} for k, v in totals.items()}


# ---------------------------------------------------------------------------------------------------------
# orchestration


def part(role: str, args: argparse.Namespace, argv: list[str], data_dir: Path | None, chunk: int = 0) -> dict:
    """Run one worker, in a fresh process unless --inline."""
    extra = ["--_chunk", str(chunk)] + (["--_data", str(data_dir)] if data_dir is not None else [])
    label = f"{role} (text_chunk {chunk})" if role == "memory" else role
    return run_part(__file__, role, args.inline, lambda: dispatch(role, args, data_dir, chunk), argv, extra, label)


def dispatch(role: str, args: argparse.Namespace, data_dir: Path | None, chunk: int) -> dict:
    if role == "dualpt":
        return work_dualpt(args, data_dir)
    if role == "reference":
        return work_reference(args, data_dir)
    if role == "check":
        return work_check(args, data_dir)
    if role == "memory":
        return work_memory(args, chunk)
    raise SystemExit(f"unknown worker {role}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" warning
    if args._worker:
        data = Path(args._data) if args._data else None
        load0 = os.getloadavg()[0]
        result = dispatch(args._worker, args, data, args._chunk)
        result["load_avg_1m"] = [load0, os.getloadavg()[0]]
        report_from_worker(result)
        return {}

    results: dict[str, Any] = {
        "command": "python benchmarks/bench_train.py " + " ".join(argv),
        "environment": environment(args.device, args.precision),
        "scenario": scenario(args),
    }
    with tempfile.TemporaryDirectory(prefix="dualpt-bench-images-") as tmp:
        bb_size = args.image_size or 224
        data_dir = make_image_folder(Path(tmp) / "images", args.classes, args.shots, bb_size + 32, args.seed)
        results["dualpt"] = part("dualpt", args, argv, data_dir)
        if not args.skip_reference:
            results["reference"] = part("reference", args, argv, data_dir)
            results["check"] = part("check", args, argv, data_dir)
    if args.memory_classes > 0:
        results["memory"] = [part("memory", args, argv, None, args.memory_chunk)]
        if args.memory_unchunked:
            results["memory"].append(part("memory", args, argv, None, 0))
    results["summary"] = summarise(args, results)
    return finish(results, args.save, args.json, print_tables)


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "pretrained": args.pretrained or "(random weights)",
        "image_size": args.image_size or "native",
        "classes": args.classes,
        "shots": args.shots,
        "prompts": args.prompts,
        "ctx_len": args.ctx_len,
        "batch_size": args.batch_size,
        "timed_epochs": args.epochs,
        "aug_views": args.aug_views,
    }


def summarise(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    ours, ref, check = r.get("dualpt", {}), r.get("reference", {}), r.get("check", {})
    s: dict[str, Any] = {}
    paper_epochs = epochs_for_shots(args.shots)
    if "sec_per_epoch" in ours:
        amortised = ours["cache_encode_s"] / paper_epochs
        s["paper_epochs"] = paper_epochs
        s["cache_amortised_s_per_epoch"] = amortised
        s["dualpt_paper_run_s"] = ours["cache_encode_s"] + paper_epochs * ours["sec_per_epoch"]
        if "sec_per_epoch" in ref:
            s["speedup"] = ref["sec_per_epoch"] / ours["sec_per_epoch"]
            s["speedup_with_cache"] = ref["sec_per_epoch"] / (ours["sec_per_epoch"] + amortised)
            s["reference_paper_run_s"] = paper_epochs * ref["sec_per_epoch"]
            s["goal_speedup_25x"] = s["speedup"] >= 25
    if "fp32_rel_logit_diff" in check:
        s["goal_fp32_equal_1e-4"] = check["fp32_rel_logit_diff"] <= 1e-4
    for m in r.get("memory", []):
        if m.get("text_chunk") and "peak_rss_gib" in m:
            s["goal_memory_8gib"] = m["peak_rss_gib"] <= 8.0
    return s


# ---------------------------------------------------------------------------------------------------------
# output


def _phase_text(p: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['share']:.0%}" for k, v in sorted(p.items(), key=lambda kv: -kv[1]["s"]))


def print_tables(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 132))
    env, sc, s = r["environment"], r["scenario"], r["summary"]
    con.print(f"[bold]{r['command']}[/bold]")
    con.print(
        f"device {env['device']} ({env['device_name']}), {env['cpu_threads']} CPU threads, "
        f"bf16 fast path: {env['cpu_fast_bf16']}, torch {env['torch']}, load avg {fmt(env['load_avg_1m'])}"
    )
    con.print(
        f"{sc['model']} {sc['pretrained']}, image size {sc['image_size']}, {sc['classes']} classes x "
        f"{sc['shots']} shots, M={sc['prompts']}, n_ctx={sc['ctx_len']}, batch {sc['batch_size']}, "
        f"{sc['timed_epochs']} timed epoch(s) after a warm-up, {sc['aug_views']} cached views/image"
    )

    ours, ref, check = r.get("dualpt", {}), r.get("reference", {}), r.get("check", {})
    t = Table(title="Training speed")
    t.add_column("")
    t.add_column("reference (CoOp/PLOT step)", justify="right")
    t.add_column("dualpt", justify="right")
    t.add_row("precision", ref.get("precision", "-"), ours.get("precision", "-"))
    t.add_row(
        "seconds / epoch (fastest timed epoch)",
        fmt(ref.get("sec_per_epoch"), ".2f", " s"),
        fmt(ours.get("sec_per_epoch"), ".3f", " s"),
    )
    t.add_row("speed-up", "1x", fmt(s.get("speedup"), ".1f", "x"))
    t.add_row(
        "feature cache, one-time",
        "-",
        f"{fmt(ours.get('cache_encode_s'), '.1f', ' s')} ({ours.get('cache_views', '-')} views)",
    )
    t.add_row(
        f"  amortised over {s.get('paper_epochs', '-')} epochs",
        "-",
        fmt(s.get("cache_amortised_s_per_epoch"), ".3f", " s / epoch"),
    )
    t.add_row("speed-up incl. amortised cache", "1x", fmt(s.get("speedup_with_cache"), ".1f", "x"))
    t.add_row(
        f"{s.get('paper_epochs', '-')}-epoch run (incl. cache)",
        fmt(s.get("reference_paper_run_s"), ".0f", " s"),
        fmt(s.get("dualpt_paper_run_s"), ".0f", " s"),
    )
    t.add_row("step time by phase", _phase_text(ref.get("phases", {})), _phase_text(ours.get("phases", {})))
    t.add_row(
        "graph matching share of step",
        fmt(ref.get("phases", {}).get("matching", {}).get("share"), ".1%"),
        fmt(ours.get("phases", {}).get("matching", {}).get("share"), ".1%"),
    )
    t.add_row("decode + augment (left out)", fmt(ref.get("data_s_per_epoch_excluded"), ".2f", " s / epoch"), "cached")
    t.add_row(
        "peak RSS (after model load)",
        f"{fmt(ref.get('peak_rss_gib'), '.2f', ' GiB')} ({fmt(ref.get('base_rss_gib'), '.2f', ' GiB')})",
        f"{fmt(ours.get('peak_rss_gib'), '.2f', ' GiB')} ({fmt(ours.get('base_rss_gib'), '.2f', ' GiB')})",
    )
    t.add_row(
        "CUDA max allocated",
        fmt(ref.get("cuda_max_alloc_gib"), ".2f", " GiB"),
        fmt(ours.get("cuda_max_alloc_gib"), ".2f", " GiB"),
    )
    for key in ("reference", "dualpt"):
        if "error" in r.get(key, {}):
            t.add_row(f"{key} error", r[key]["error"], "")
    con.print(t)

    if check:
        c = Table(title="Equality (same pixels, same context)")
        c.add_column("")
        c.add_column("value", justify="right")
        if "error" in check:
            c.add_row("error", check["error"])
        else:
            c.add_row(
                f"fp32 logits: max |dualpt - reference| ({check['check_images']} images)",
                f"{check['fp32_max_abs_logit_diff']:.2e} (max |logit| {check['fp32_max_logit']:.2f})",
            )
            c.add_row("fp32 logits: relative difference (goal <= 1e-4)", f"{check['fp32_rel_logit_diff']:.2e}")
            c.add_row("fp32 context gradient: relative difference", f"{check['fp32_rel_ctx_grad_diff']:.2e}")
            c.add_row("fp32 top-1 agreement", f"{check['fp32_top1_agreement']:.1%}")
            if "top1_agreement" in check:
                c.add_row(
                    f"{check['low_precision']} vs fp32 top-1 agreement ({check['agreement_images']} images)",
                    f"{check['top1_agreement']:.1%}",
                )
                c.add_row(
                    f"{check['low_precision']} vs fp32 max |logit diff|",
                    f"{check['max_abs_logit_diff_low_vs_fp32']:.3f} (median fp32 top-1/top-2 gap "
                    f"{check['median_top1_top2_gap_fp32']:.3f})",
                )
            for p, v in check.get("isolated_step_s", {}).items():
                c.add_row(f"dualpt step on a cached batch, {p} (fastest of 5)", f"{v:.3f} s")
        con.print(c)

    mem = r.get("memory", [])
    if mem:
        m = Table(title="One training step at scale (cached features; peak memory)")
        for col in (
            "classes x prompts",
            "text_chunk",
            "precision",
            "step",
            "peak RSS (after load)",
            "CUDA max alloc",
            "feature cache",
        ):
            m.add_column(col, justify="right")
        for row in mem:
            if "error" in row:
                m.add_row("-", "-", "-", "-", row["error"], "-", "-")
                continue
            m.add_row(
                f"{row['classes']} x {row['prompts']}",
                str(row["text_chunk"] or "none"),
                row["precision"],
                f"{row['step_s']:.1f} s",
                f"{row['peak_rss_gib']:.2f} GiB ({row['base_rss_gib']:.2f})",
                fmt(row["cuda_max_alloc_gib"], ".2f", " GiB"),
                f"{row['feature_cache_gib']:.1f} GiB",
            )
        con.print(m)
        con.print(
            f"feature cache = classes x {sc['shots']} shots x {sc['aug_views']} views x (N+1) x d, "
            "held by FeatureSet on the training device; not part of the step's peak above."
        )

    goals = {k: v for k, v in s.items() if k.startswith("goal_")}
    if goals:
        con.print("goals: " + ", ".join(f"{k[5:]} {'PASS' if v else 'FAIL'}" for k, v in goals.items()))


if __name__ == "__main__":
    main()
