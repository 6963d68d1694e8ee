"""Does training learn? A few-shot task from the synthclip world: describe -> train -> eval.

No real CLIP can be downloaded on our machines, and a random CLIP learns nothing meaningful, so this
benchmark uses the small CLIP pretrained on a synthetic world of coloured shapes (shared/synthclip) and
that world's generator. Classes are attribute combinations (colour x shape) with opaque names ("wug",
"dax", ...) by default, so the name alone tells zero-shot CLIP nothing and the LLM-style descriptions
("red colour", "star shape") carry the information a real LLM would give. For each shot count it trains
with and without descriptions and prints zero-shot vs trained top-1 accuracy on a held-out test folder.

    python benchmarks/bench_learning.py --model local-dir:../shared/synthclip/model

Not a CI test: it takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dualpt_cli.describe import DescribeConfig, plan_describe, run_describe
from dualpt_cli.evaluate import EvalConfig, evaluate_folder
from dualpt_cli.project import atomic_write_json, resolve_project
from dualpt_cli.train import TrainConfig, run_training

# (colour, shape) combinations: each colour and each shape appears twice, so neither alone separates them
CLASSES = [("red", "circle"), ("blue", "star"), ("green", "square"), ("red", "star"), ("blue", "square"),
           ("green", "circle")]
OPAQUE = ["wug", "dax", "blicket", "toma", "fep", "zib"]


def load_generator(folder: Path):
    spec = importlib.util.spec_from_file_location("synthclip_generator", folder / "generator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_task(gen, root: Path, names: list[str], train_per_class: int, test_per_class: int, seed: int) -> None:
    """Write train/ and test/ ImageFolders, classes.txt and answers.json (the descriptions) under root."""
    rng = np.random.default_rng(seed)
    lines, answers = [], {}
    for (colour, shape), name in zip(CLASSES, names):
        folder = f"{colour}_{shape}"
        lines.append(f"{folder}: {name}")
        answers[folder] = [f"{colour} colour", f"a {colour} object", f"{shape} shape", f"the outline of a {shape}"]
        for split, n in (("train", train_per_class), ("test", test_per_class)):
            out = root / split / folder
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                attrs = gen.sample_attrs(rng, "pretrain", fixed={"colour": colour, "shape": shape})
                Image.fromarray(gen.render(attrs, rng)).save(out / f"{i:03d}.png")
    (root / "classes.txt").write_text("\n".join(lines) + "\n")
    (root / "answers.json").write_text(json.dumps(answers, indent=2))


def describe_from_file(root: Path, project: Path) -> None:
    """Run the real describe (provider none) for the class list, then fill in the phrases from the file."""
    run_describe(plan_describe(DescribeConfig(classes=str(root / "classes.txt"), project=resolve_project(project),
                                              provider="none")))
    doc = json.loads((project / "descriptions.json").read_text())
    answers = json.loads((root / "answers.json").read_text())
    for entry in doc["classes"]:
        entry["phrases"], entry["status"] = answers[entry["folder"]], "ok"
        entry["provenance"]["provider"] = "file:answers.json"
    atomic_write_json(project / "descriptions.json", doc)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local-dir:<path to shared/synthclip/model>")
    parser.add_argument("--synthclip", default=str(Path(__file__).resolve().parents[2] / "shared" / "synthclip"),
                        help="folder with the synthclip generator.py")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--names", choices=["opaque", "plain"], default="opaque",
                        help="opaque: made-up class names; plain: 'red circle'")
    parser.add_argument("--class-specific", action="store_true", help="per-class context (CoOp's CSC)")
    parser.add_argument("--epochs", type=int, default=None, help="override the paper's schedule (50/100/100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workdir", default=None, help="keep the generated task here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    gen = load_generator(Path(args.synthclip))
    names = OPAQUE if args.names == "opaque" else [f"{c} {s}" for c, s in CLASSES]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dualpt-bench-learning-"))
    build_task(gen, work, names, train_per_class=max(args.shots), test_per_class=args.test_per_class, seed=args.seed)

    rows = []
    for shots in args.shots:
        for with_desc in (False, True):
            project = work / f"project-{shots}shot-{'desc' if with_desc else 'none'}"
            if with_desc:
                describe_from_file(work, project)
            else:
                run_describe(plan_describe(DescribeConfig(classes=str(work / "classes.txt"),
                                                          project=resolve_project(project), provider="none")))
            t0 = time.perf_counter()
            run_training(TrainConfig(images=str(work / "train"), project=str(project), shots=shots, model=args.model,
                                     pretrained="", seed=args.seed, epochs=args.epochs, device=args.device,
                                     precision=args.precision, class_specific=args.class_specific))
            seconds = time.perf_counter() - t0
            res = evaluate_folder(EvalConfig(images=str(work / "test"), project=str(project), zero_shot=True,
                                             device=args.device, precision=args.precision, workers=0)).results
            rows.append({"shots": shots, "descriptions": with_desc, "zero_shot_top1": res["zero_shot"]["top1"],
                         "dualpt_top1": res["dualpt"]["top1"], "train_seconds": round(seconds, 1)})

    out = {"model": args.model, "names": args.names, "class_specific": args.class_specific, "classes": len(CLASSES),
           "test_per_class": args.test_per_class,
           "seed": args.seed, "rows": rows}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        context = "class-specific" if args.class_specific else "shared"
        print(f"synthclip few-shot task: {len(CLASSES)} classes (colour x shape), {args.names} names, {context} "
              f"context, {args.test_per_class} test images per class, seed {args.seed}")
        print(f"{'shots':>5}  {'descriptions':>12}  {'zero-shot':>9}  {'DUAL-PT':>8}  {'train s':>7}")
        for r in rows:
            print(f"{r['shots']:>5}  {'yes' if r['descriptions'] else 'no':>12}  {r['zero_shot_top1']:>9.1%}  "
                  f"{r['dualpt_top1']:>8.1%}  {r['train_seconds']:>7.1f}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
