"""``dualpt train`` and ``dualpt predict`` end to end as whole processes: the ratios of issue 24, two versions.

    python benchmarks/bench_e2e.py --before OLD_SRC --save e2e.json
    python benchmarks/bench_e2e.py --before OLD_SRC --parts predict --runs 3

train: ``dualpt train`` of 10 classes x 8 shots (a synthetic ImageFolder, 256 px PNGs) with the paper's recipe
on cached views (``--recipe paper --cached-views``: 200 epochs at 8 shots, M = 4, 16 context vectors, batch
32), the RN50 architecture with seeded random weights from a file, from an empty feature cache and project each
run: start-up, model load, scan, feature cache, epochs, checkpoints, prompt file, curves. Its ratio is the
reference's seconds per epoch (``bench_train.py``'s CoOp/PLOT step: fp32, the image encoder and the whole
77-token text encoder at every step; decoding left out) x the epochs, over the whole process's wall seconds;
the reference is timed in the same run, on the same images.

predict: ``dualpt predict`` of 320 JPEG photos (320x240, ``bench_predict.py``'s) with the prompt file the
after-version's train wrote, rows as jsonl to a file, against ``plain_predict.py`` (plain fp32 open_clip as a
user writes it, the same weights), each a whole process; runs alternate plain, before, after, and each ratio
is the median of the run-by-run ratios.

The two versions must write the same prompt-file tensors and the same rows (checked, bit for bit).
Standard library only in this process; the set-up and the reference run in child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab import ROOT, run_command, run_once  # noqa: E402

HERE = Path(__file__).resolve().parent
CLASSES, SHOTS, PHOTOS = 10, 8, 320


def setup(work: Path) -> None:
    """(child process) the training folder, the photos and the weights file."""
    import torch
    from safetensors.torch import save_file

    from bench_predict import make_photos
    from bench_train import make_image_folder
    from dualpt_cli.clip.load import ModelSpec, load_backbone

    make_image_folder(work / "train", CLASSES, SHOTS, 256, seed=1)
    make_photos(work / "photos", PHOTOS, (320, 240), seed=1)
    torch.manual_seed(0)
    bb = load_backbone(ModelSpec("RN50", ""), device="cpu", precision="fp32")
    save_file({k: v.contiguous() for k, v in bb.model.state_dict().items()}, str(work / "rn50.safetensors"))


def tensors_of(path: Path) -> dict[str, bytes]:
    """Every tensor's bytes in a safetensors file (its metadata, which holds times, left out)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = raw[8 + size :]
    return {k: body[v["data_offsets"][0] : v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}


def reference_epoch(work: Path, after: str) -> dict:
    """bench_train.py's reference path (one warm-up step, one timed epoch) on the training folder."""
    cmd = [sys.executable, str(HERE / "bench_train.py"), "--epochs", "1", "--memory-classes", "0"]
    cmd += ["--_worker", "reference", "--_data", str(work / "train")]
    env = {**os.environ, "PYTHONPATH": after}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads([ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")][-1][len("BENCH_RESULT ") :])


def bench_train(work: Path, args: argparse.Namespace) -> dict:
    weights = str(work / "rn50.safetensors")
    timings: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    prompts: dict[str, dict[str, bytes]] = {}
    for i in range(args.runs):
        for label, src in (("before", args.before), ("after", args.after)):
            project, cache = work / f"project-{label}", work / "cache"
            shutil.rmtree(project, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            command = ["train", str(work / "train"), "--model", "RN50", "--pretrained", weights, "--shots", str(SHOTS)]
            command += ["--recipe", "paper", "--cached-views", "-p", str(project), "-q"]
            command += ["--epochs", str(args.epochs)] if args.epochs else []
            wall, cpu = run_once(command, src, {"DUALPT_CACHE": str(cache)}, cwd=str(work))
            timings[label].append((wall, cpu))
            prompts[label] = tensors_of(project / "prompts.safetensors")
            print(f"  train {label:6} run {i}: {wall:.1f} s wall, {cpu:.1f} s cpu", file=sys.stderr, flush=True)
    ref = reference_epoch(work, args.after)
    epochs = args.epochs or 200
    result = {"epochs": epochs, "reference_s_per_epoch": ref["sec_per_epoch"], "reference_phases": ref["phases"]}
    for label, runs in timings.items():
        wall = statistics.median(w for w, _ in runs)
        result[label] = {"wall_s": wall, "cpu_s": statistics.median(c for _, c in runs)}
        result[label]["reference_ratio"] = ref["sec_per_epoch"] * epochs / wall
    pairs = zip(timings["before"], timings["after"])
    result["before_over_after_wall"] = statistics.median(b[0] / a[0] for b, a in pairs)
    result["same_prompts"] = prompts["before"] == prompts["after"]
    result["load_average"] = os.getloadavg()
    return result


def bench_predict(work: Path, args: argparse.Namespace) -> dict:
    prompt_file = work / "project-after" / "prompts.safetensors"
    if not prompt_file.is_file():  # --parts predict alone: a prompt file of a 2-epoch run
        command = ["train", str(work / "train"), "--model", "RN50", "--pretrained", str(work / "rn50.safetensors")]
        command += ["--recipe", "paper", "--cached-views", "--epochs", "2", "-p", str(work / "project-after"), "-q"]
        run_once(command, args.after, {"DUALPT_CACHE": str(work / "cache")}, cwd=str(work))
    names = json.loads((work / "project-after" / "split.json").read_text())["classes"]
    plain = [sys.executable, str(HERE / "plain_predict.py"), str(work / "photos"), "--model", "RN50"]
    plain += ["--pretrained", str(work / "rn50.safetensors"), "--classes", ",".join(c["name"] for c in names)]
    timings: dict[str, list[tuple[float, float]]] = {"plain": [], "before": [], "after": []}
    rows = {}
    for i in range(args.runs):
        for label in ("plain", "before", "after"):
            out = work / f"rows-{label}.jsonl"
            if label == "plain":
                wall, cpu = run_command([*plain, "-o", str(out)], args.after, cwd=str(work))
            else:
                src = args.before if label == "before" else args.after
                command = ["predict", str(work / "photos"), "--prompt-file", str(prompt_file), "--format", "jsonl"]
                wall, cpu = run_once([*command, "-o", str(out), "-q"], src, cwd=str(work))
                rows[label] = out.read_bytes()
            timings[label].append((wall, cpu))
            print(f"  predict {label:6} run {i}: {wall:.1f} s wall, {cpu:.1f} s cpu", file=sys.stderr, flush=True)
    result = {"images": PHOTOS}
    for label, runs in timings.items():
        result[label] = {"wall_s": statistics.median(w for w, _ in runs)}
        result[label]["cpu_s"] = statistics.median(c for _, c in runs)
    for label in ("before", "after"):
        pairs = list(zip(timings["plain"], timings[label]))
        result[label]["vs_plain_wall"] = statistics.median(p[0] / x[0] for p, x in pairs)
        result[label]["vs_plain_cpu"] = statistics.median(p[1] / x[1] for p, x in pairs)
    result["same_rows"] = rows["before"] == rows["after"]
    result["load_average"] = os.getloadavg()
    return result


def show(results: dict) -> None:
    if "train" in results:
        t = results["train"]
        print(
            f"train ({t['epochs']} epochs; reference {t['reference_s_per_epoch']:.2f} s/epoch): before "
            f"{t['before']['wall_s']:.1f} s ({t['before']['reference_ratio']:.2f}x the reference), after "
            f"{t['after']['wall_s']:.1f} s ({t['after']['reference_ratio']:.2f}x); before/after "
            f"{t['before_over_after_wall']:.2f}x; same prompts: {t['same_prompts']}"
        )
    if "predict" in results:
        p = results["predict"]
        print(
            f"predict ({p['images']} images): plain fp32 {p['plain']['wall_s']:.1f} s, before "
            f"{p['before']['wall_s']:.1f} s ({p['before']['vs_plain_wall']:.2f}x plain), after "
            f"{p['after']['wall_s']:.1f} s ({p['after']['vs_plain_wall']:.2f}x plain; cpu "
            f"{p['after']['vs_plain_cpu']:.2f}x); same rows: {p['same_rows']}"
        )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="src folder of the version to compare with")
    p.add_argument("--after", default=str(ROOT / "src"), help="src folder of this version (default: this checkout)")
    p.add_argument("--parts", default="train,predict", help="train, predict or both")
    p.add_argument("--epochs", type=int, default=None, help="train epochs (default: the paper's 200 at 8 shots)")
    p.add_argument("--runs", type=int, default=1, help="timed runs per version")
    p.add_argument("--save", default=None, help="also write the results as JSON to this file")
    p.add_argument("--_setup", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._setup:
        setup(Path(args._setup))
        return {}
    results: dict = {"command": "python benchmarks/bench_e2e.py " + " ".join(argv or sys.argv[1:])}
    with tempfile.TemporaryDirectory(prefix="dualpt-e2e-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "PYTHONPATH": args.after}
        subprocess.run([sys.executable, __file__, "--before", args.before, "--_setup", tmp], env=env, check=True)
        for part, run in (("train", bench_train), ("predict", bench_predict)):
            if part in args.parts.split(","):
                results[part] = run(work, args)
                if args.save:  # after each part: a long run that fails later keeps what it measured
                    Path(args.save).write_text(json.dumps(results, indent=1))
    show(results)
    return results


if __name__ == "__main__":
    main()
