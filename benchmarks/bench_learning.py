"""Does training beat zero-shot CLIP? Three kinds of few-shot task from the synthclip world, several seeds.

No real CLIP can be downloaded on our machines, and a random CLIP learns nothing meaningful, so this
benchmark uses the small CLIP pretrained on a synthetic world of coloured shapes (shared/synthclip, also
shipped as the demo model under examples/) and that world's generator. Tasks:

- named: 12 colour x shape classes whose names say what they are ("red circle");
- shift: the 10 shapes drawn in the generator's shifted domain (muted colours, tinted backgrounds,
  distractors), images unlike pretraining;
- opaque: 12 colour x shape classes with made-up names ("wug"), so only the descriptions (what an LLM
  would say: "orange colour", "five points") carry the class.

Each class gets LLM-style phrases written into descriptions.json (the real describe command with provider
none, then the phrases filled in). For each task, seed and shot count the k-shot training folder holds
exactly k images per class; every method sees only those (the default recipe holds some of them out for
its guard). Rows: zero-shot CLIP ("a photo of a {name}."), the description ensemble, a linear probe
(logistic regression on the frozen global features of the same k images), and `dualpt train` with each
recipe, evaluated by `dualpt eval` on a test folder.

    python benchmarks/bench_learning.py --model local-dir:../shared/synthclip/model --save results.json

`--methods` names the training methods of `dualpt train --method` to run with each recipe (default: every
method TrainConfig knows); their rows are labelled as the command line would be, ``dualpt --recipe default``
for the default method and ``dualpt --method coop --recipe default`` for others.

`--base-to-new` runs CoCoOp's protocol instead: each method trains on the first half of the classes
(``TrainConfig.base_classes = "half"``; ceil(K/2) classes in folder order) and `dualpt eval --classes` scores
the whole test folder: accuracy on base classes among base (B), on new among new (N) and H = 2BN / (B + N).
Its rows are labelled ``... --base-classes half`` (zero-shot CLIP's as ``zero-shot --base-classes half``) and
carry ``base``, ``new`` and ``H``.

Not a CI test: the full grid (3 tasks x 4 shot counts x 3 seeds x 2 recipes) takes about an hour on 2 cores
per method; `--recipes`, `--methods`, `--tasks` and `--base-to-new` split it over processes (`--threads 1`
each), `--merge` joins their JSON files (a later file's row replaces an earlier one's with the same task,
seed, shots and method).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dualpt_cli.clip.features import EVAL_VIEW, encode_views
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.core.project import atomic_write_json, resolve_project
from dualpt_cli.describe.ask import DescribeConfig, plan_describe, run_describe
from dualpt_cli.model.calibration import expected_calibration_error
from dualpt_cli.model.head import name_features, prior_features
from dualpt_cli.model.prompts import description_features
from dualpt_cli.predict.evaluate import EvalConfig, evaluate_folder, harmonic_mean, split_accuracy
from dualpt_cli.train import config as trainconfig
from dualpt_cli.train.loop import TrainConfig, run_training

# "partial", "muted" and "shapes" (issue 20): partial is made-up names whose descriptions give only the shape, so
# the images must add the colour (a task where few-shot training can show learning); muted and shapes must hold.
TASKS = ("named", "shift", "opaque", "muted", "shapes", "partial")
METHODS = tuple(getattr(trainconfig, "METHODS", ("dualpt",)))  # the methods `dualpt train --method` knows
OPAQUE_NAMES = ["wug", "dax", "blicket", "toma", "fep", "zib", "kiki", "bouba", "lorp", "snib", "quav", "mipo"]


def load_generator(folder: Path):
    spec = importlib.util.spec_from_file_location("synthclip_generator", folder / "generator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_classes(gen, kind: str) -> list[dict]:
    """Folder, name, fixed attributes, domain and LLM-style phrases of each class of a task."""

    def colour_shape(colours, shapes, names=None):
        pairs = [(c, s) for c in colours for s in shapes]
        return [
            {
                "folder": f"{c}_{s}",
                "name": names[i] if names else f"{c} {s}",
                "domain": "pretrain",
                "fixed": {"colour": c, "shape": s},
                "phrases": [f"{c} colour", f"a {c} object", *gen.SHAPE_PHRASES[s][:2]],
            }
            for i, (c, s) in enumerate(pairs)
        ]

    if kind == "named":
        return colour_shape(("red", "blue", "green", "yellow"), ("circle", "triangle", "heart"))
    if kind == "opaque":
        return colour_shape(("orange", "cyan", "purple", "pink"), ("square", "star", "hexagon"), OPAQUE_NAMES)
    if kind == "partial":  # made-up names whose descriptions say only the shape: the images must add the colour
        opaque = colour_shape(("orange", "cyan", "purple", "pink"), ("square", "star", "hexagon"), OPAQUE_NAMES)
        return [{**c, "phrases": c["phrases"][2:]} for c in opaque]
    if kind == "muted":  # the muted colours (rare in pretraining, their names rarely in captions), any shape
        return [
            {"folder": c, "name": c, "domain": "pretrain", "fixed": {"colour": c},
             "phrases": [*gen.colour_phrases(c)[:2], f"{c} colour", f"a {c} object"]}
            for c in gen.MUTED
        ]  # fmt: skip
    if kind == "shapes":  # the 10 shapes in the pretraining domain (shape is the model's weakest attribute)
        return [
            {"folder": s, "name": s, "domain": "pretrain", "fixed": {"shape": s}, "phrases": list(gen.SHAPE_PHRASES[s])}
            for s in gen.SHAPES
        ]
    return [
        {"folder": s, "name": s, "domain": "shift", "fixed": {"shape": s}, "phrases": list(gen.SHAPE_PHRASES[s])}
        for s in gen.SHAPES
    ]


def build_task(gen, kind: str, root: Path, seed: int, pool: int, test: int) -> list[dict]:
    """train/ (``pool`` images per class), test/, classes.txt and answers.json under ``root``."""
    classes = task_classes(gen, kind)
    if (root / "answers.json").is_file():
        return classes
    rng = np.random.default_rng([seed, TASKS.index(kind)])
    for c in classes:
        for split, n in (("train", pool), ("test", test)):
            out = root / split / c["folder"]
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                attrs = gen.sample_attrs(rng, c["domain"], fixed=c["fixed"])
                Image.fromarray(gen.render(attrs, rng)).save(out / f"{i:03d}.png")
    (root / "classes.txt").write_text("".join(f"{c['folder']}: {c['name']}\n" for c in classes))
    (root / "answers.json").write_text(json.dumps({c["folder"]: c["phrases"] for c in classes}, indent=1))
    return classes


def k_shot_folder(root: Path, k: int, base_only: bool = False) -> Path:
    """train{k}/: the first k images of each class of train/ (symlinks); train{k}-base/: of the base classes."""
    out = root / f"train{k}{'-base' if base_only else ''}"
    if not out.is_dir():
        folders = sorted((root / "train").iterdir())
        for folder in folders[: base_count(len(folders))] if base_only else folders:
            (out / folder.name).mkdir(parents=True)
            for path in sorted(folder.glob("*.png"))[:k]:
                (out / folder.name / path.name).symlink_to(path.resolve())
    return out


def base_count(k: int) -> int:
    """Base classes of the base-to-new protocol: the first ceil(K/2) (CoCoOp's subsample_classes)."""
    return math.ceil(k / 2)


def describe_from_answers(root: Path, project: Path) -> None:
    """The real describe (provider none) for the class list, then the phrases of answers.json filled in."""
    run_describe(
        plan_describe(
            DescribeConfig(classes=str(root / "classes.txt"), project=resolve_project(project), provider="none")
        )
    )
    doc = json.loads((project / "descriptions.json").read_text())
    answers = json.loads((root / "answers.json").read_text())
    for entry in doc["classes"]:
        entry["phrases"], entry["status"] = answers[entry["folder"]], "ok"
        entry["provenance"]["provider"] = "file:answers.json"
    atomic_write_json(project / "descriptions.json", doc)


def features(bb, folder: Path, classes: list[dict], cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Global features (eval view) of every image of an ImageFolder, and labels in ``classes`` order."""
    paths, labels = [], []
    for i, c in enumerate(classes):
        found = sorted((folder / c["folder"]).glob("*.png"))
        paths += found
        labels += [i] * len(found)
    fs = encode_views(bb, paths, [EVAL_VIEW], cache)
    return fs.global_[:, 0].float(), torch.tensor(labels)


def linear_probe(z: torch.Tensor, y: torch.Tensor, K: int, wd: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on L2-normalised features (L-BFGS, L2 penalty ``wd``)."""
    X = F.normalize(z, dim=-1)
    W = torch.zeros(K, X.shape[1], requires_grad=True)
    b = torch.zeros(K, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W.T + b, y) + wd * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def run_cell(args, gen, kind: str, seed: int, shots: int, work: Path) -> list[dict]:
    """All rows of one (task, seed, shots) cell."""
    root = work / f"{kind}-seed{seed}"
    classes = build_task(gen, kind, root, seed, pool=args.pool or max(args.shots), test=args.test_per_class)
    bb = load_backbone(ModelSpec(args.model, ""), args.device, args.precision)
    cache = work / "cache"
    z_test, y_test = features(bb, root / "test", classes, cache)
    names = name_features(bb, [c["name"] for c in classes])
    zs_logits = F.normalize(z_test, dim=-1) @ names.T
    if args.base_to_new:
        base = torch.arange(len(classes)) < base_count(len(classes))
        b, n = split_accuracy(zs_logits, y_test, base)[0], split_accuracy(zs_logits, y_test, ~base)[0]
        rows = [
            {
                "method": "zero-shot --base-classes half",
                "protocol": "base-to-new",
                "top1": accuracy(zs_logits, y_test),
                "base": b,
                "new": n,
                "H": harmonic_mean(b, n),
            }
        ]
    else:
        z_train, y_train = features(bb, k_shot_folder(root, shots), classes, cache)
        mean, has, _ = description_features(bb, [c["name"] for c in classes], [c["phrases"] for c in classes])
        W, b = linear_probe(z_train, y_train, len(classes))
        scale = bb.logit_scale
        free = {
            "zero-shot": scale * zs_logits,
            "descriptions": scale * F.normalize(z_test, dim=-1) @ prior_features(names, mean, has).T,
            "linear probe": scale * F.normalize(z_test, dim=-1) @ W.T + b,
        }
        rows = [
            {"method": m, "top1": accuracy(lg, y_test), "ece": expected_calibration_error(lg.softmax(-1), y_test)}
            for m, lg in free.items()
        ]
    for recipe in args.recipes:
        for method in args.methods:
            rows.append(train_row(args, root, kind, seed, shots, method, recipe, work))
    return [{"task": kind, "seed": seed, "shots": shots, **r} for r in rows]


def method_label(method: str, recipe: str, base_to_new: bool = False) -> str:
    """The row's method: the flags of `dualpt train` that made it."""
    flags = "" if method == "dualpt" else f" --method {method}"
    return f"dualpt{flags} --recipe {recipe}" + (" --base-classes half" if base_to_new else "")


def train_row(args, root: Path, kind: str, seed: int, shots: int, method: str, recipe: str, work: Path) -> dict:
    """`dualpt train --method METHOD --recipe RECIPE` on the k-shot folder, then `dualpt eval` on the test folder.

    Base-to-new: TrainConfig.base_classes "half" where TrainConfig has it, else the same protocol by hand (a
    training folder of the base classes only); evaluated on every test class with the task's class list.
    """
    b2n = args.base_to_new
    project = work / f"project-{kind}-seed{seed}-{shots}shot-{method}-{recipe}{'-b2n' if b2n else ''}"
    describe_from_answers(root, project)
    options = {}
    if b2n and "base_classes" in {f.name for f in dataclasses.fields(TrainConfig)}:
        options["base_classes"] = "half"
    train_k = k_shot_folder(root, shots, base_only=b2n and not options)
    t0 = time.perf_counter()
    result = run_training(
        TrainConfig(
            images=str(train_k),
            project=str(project),
            shots=shots,
            model=args.model,
            pretrained="",
            seed=seed,
            recipe=recipe,
            method=method,
            epochs=args.epochs,
            device=args.device,
            precision=args.precision,
            **options,
        )
    )
    seconds = time.perf_counter() - t0
    res = evaluate_folder(
        EvalConfig(
            images=str(root / "test"),
            project=str(project),
            device=args.device,
            classes=str(root / "classes.txt") if b2n else None,
            precision=args.precision,
            workers=0,
        )
    ).results["dualpt"]
    guard = result.guard.to_json() if result.guard else {}
    row = {
        "method": method_label(method, recipe, b2n),
        "top1": res["top1"],
        "ece": res.get("ece"),
        "train_seconds": round(seconds, 1),
        "kept": guard.get("classifier"),
        "prior_weight": guard.get("prior_weight"),
        "collapsed": guard.get("collapsed"),
        "head": result.head.to_json() if getattr(result, "head", None) else None,
    }
    if b2n:
        row.update(protocol="base-to-new", base=res["base"]["accuracy"], new=res["new"]["accuracy"], H=res["H"])
    return row


def summarise(rows: list[dict]) -> dict:
    """mean and std of top-1 (and of base, new and H for base-to-new rows) per (task, shots, method) over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["shots"], r["method"]), []).append(r)
    out = {}
    for (t, k, m), group in sorted(groups.items()):
        entry = spread([r["top1"] for r in group])
        eces = [r["ece"] for r in group if r.get("ece") is not None]
        if eces:
            entry["ece"] = spread(eces)
        for key in ("base", "new", "H"):
            values = [r[key] for r in group if r.get(key) is not None]
            if values:
                entry[key] = spread(values)
        out[f"{t}|{k}|{m}"] = entry
    return out


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def print_table(rows: list[dict]) -> None:
    summary = summarise(rows)
    pm = lambda s: f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}" if s else "-"  # noqa: E731
    pe = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}" if s else "-"  # noqa: E731
    for protocol in ("few-shot", "base-to-new"):
        chosen = [r for r in rows if r.get("protocol", "few-shot") == protocol]
        methods = list(dict.fromkeys(r["method"] for r in chosen))
        for task in dict.fromkeys(r["task"] for r in chosen):
            shots = sorted({r["shots"] for r in chosen if r["task"] == task})
            if protocol == "few-shot":
                print(f"\n{task}: top-1 %, mean ± std over seeds")
                print("| shots | " + " | ".join(methods) + " |")
                print("|---:|" + "---:|" * len(methods))
                for k in shots:
                    print(f"| {k} | " + " | ".join(pm(summary.get(f"{task}|{k}|{m}")) for m in methods) + " |")
                print(f"\n{task}: expected calibration error (15 bins), mean ± std over seeds")
                print("| shots | " + " | ".join(methods) + " |")
                print("|---:|" + "---:|" * len(methods))
                for k in shots:
                    cells = [(summary.get(f"{task}|{k}|{m}") or {}).get("ece") for m in methods]
                    print(f"| {k} | " + " | ".join(pe(c) for c in cells) + " |")
                continue
            print(f"\n{task}, base-to-new: base / new / H %, mean ± std over seeds")
            print("| method | shots | base | new | H |")
            print("|---|---:|---:|---:|---:|")
            for m in methods:
                for k in shots:
                    s = summary.get(f"{task}|{k}|{m}")
                    if s:
                        print(f"| {m} | {k} | {pm(s.get('base'))} | {pm(s.get('new'))} | {pm(s.get('H'))} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="local-dir:<path to the synthclip model>")
    parser.add_argument(
        "--synthclip",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "synthclip"),
        help="folder with the synthclip generator.py",
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recipes", nargs="+", default=["default", "paper"], choices=["default", "paper"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=METHODS,
        help="training methods (dualpt train --method), each run with every recipe",
    )
    parser.add_argument(
        "--base-to-new", action="store_true", help="train on the first half of the classes; evaluate base, new and H"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: by shots)")
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument(
        "--pool",
        type=int,
        default=0,
        help="training images generated per class (default: the largest --shots); "
        "the same pool gives the same images, so runs with other --shots can be merged",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--workdir", default=None, help="keep the generated tasks here (default: a temp dir)")
    parser.add_argument("--save", default=None, help="write the rows as JSON to this file")
    parser.add_argument(
        "--merge", nargs="+", default=None, help="print (and with --save write) the table of these saved JSON files"
    )
    args = parser.parse_args(argv)

    if args.merge:  # one row per (task, seed, shots, method): a later file's row replaces an earlier one's
        merged = {
            (r["task"], r["seed"], r["shots"], r["method"]): r
            for f in args.merge
            for r in json.loads(Path(f).read_text())["rows"]
        }
        rows = list(merged.values())
        print_table(rows)
        out = {"files": args.merge, "rows": rows, "summary": summarise(rows)}
        if args.save:
            atomic_write_json(Path(args.save), out)
        return out
    if not args.model:
        parser.error("--model is required")
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = load_generator(Path(args.synthclip))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dualpt-bench-learning-"))
    rows: list[dict] = []
    for kind in args.tasks:
        for seed in args.seeds:
            for shots in args.shots:
                rows += run_cell(args, gen, kind, seed, shots, work)
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                out = {
                    "model": args.model,
                    "test_per_class": args.test_per_class,
                    "rows": rows,
                    "summary": summarise(rows),
                }
                if args.save:
                    atomic_write_json(Path(args.save), out)
    print_table(rows)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
