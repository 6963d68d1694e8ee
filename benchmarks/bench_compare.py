"""A ``dualpt compare`` grid on the demo world (examples/shapes) as a whole process, two versions side by side.

    python benchmarks/bench_compare.py --before /path/to/old/checkout/src
    python benchmarks/bench_compare.py --before OLD_SRC --methods zero-shot,coop,plot,dualpt --shots 1,2,4,8,16 \\
        --seeds 1,2,3 --epochs 10

Every run starts from an empty feature cache and an empty project (what a user's first grid pays), on the
demo dataset that ``examples/shapes/make_dataset.py`` writes (6 classes, 96 training and 240 test images)
and the demo CLIP. The two versions must give the same accuracy in every cell (checked).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab import ROOT, ab, show  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="src folder of the version to compare with")
    p.add_argument("--after", default=str(ROOT / "src"), help="src folder of this version (default: this checkout)")
    p.add_argument("--methods", default="zero-shot,dualpt")
    p.add_argument("--shots", default="1,2")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--epochs", type=int, default=5, help="epochs of every trained cell (short schedules)")
    p.add_argument("--runs", type=int, default=1, help="timed runs per version")
    p.add_argument("--save", default=None, help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "shapes" / "make_dataset.py"), str(work / "shapes")],
            check=True,
            env={"PYTHONPATH": args.after, "PATH": "/usr/bin:/bin"},
        )
        command = [
            "compare", str(work / "shapes" / "train"), "--test", str(work / "shapes" / "test"),
            "--model", f"local-dir:{ROOT / 'examples' / 'shapes' / 'model'}", "--methods", args.methods,
            "--shots", args.shots, "--seeds", args.seeds, "--epochs", str(args.epochs), "-p", str(work / "project"),
            "--json", "-q",
        ]  # fmt: skip
        accuracies = {}

        def fresh(label: str, i: int) -> dict[str, str]:
            """An empty cache and project per run; the finished run's cell accuracies are kept."""
            previous = work / "project" / "compare" / "train" / "compare.json"
            if previous.is_file():
                cells = json.loads(previous.read_text())["cells"]
                accuracies.setdefault(fresh.last, {k: c.get("accuracy") for k, c in cells.items()})
            shutil.rmtree(work / "project", ignore_errors=True)
            shutil.rmtree(work / "cache", ignore_errors=True)
            fresh.last = label
            return {"DUALPT_CACHE": str(work / "cache")}

        fresh.last = None
        result = ab(command, args.before, args.after, args.runs, prepare=fresh, warmup=False, cwd=tmp)
        fresh("done", 0)
    result["cells"] = len(args.methods.split(",")) * len(args.shots.split(",")) * len(args.seeds.split(","))
    result["same_accuracies"] = accuracies.get("before") == accuracies.get("after")
    show(f"dualpt compare ({result['cells']} cells)", result)
    print(f"every cell's accuracy equal before and after: {result['same_accuracies']}")
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
