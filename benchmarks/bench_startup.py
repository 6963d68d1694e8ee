"""Start-up: ``dualpt --help`` (and the other commands that need no model) as whole processes, two versions.

    python benchmarks/bench_startup.py --before /path/to/old/checkout/src
    python benchmarks/bench_startup.py --before OLD_SRC --commands "train -h" "cache info"
    python benchmarks/bench_startup.py --before OLD_SRC --commands=--help   # one command that starts with --

``--before`` is the ``src`` folder of the version to compare with (e.g. a ``git worktree`` of main), ``--after``
this checkout's by default. Each command runs ``--runs`` times per version, alternating (see ``ab.py``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab import ROOT, ab, show  # noqa: E402

COMMANDS = ["--help", "train -h", "cache info"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="src folder of the version to compare with")
    p.add_argument("--after", default=str(ROOT / "src"), help="src folder of this version (default: this checkout)")
    p.add_argument("--commands", nargs="+", default=COMMANDS, help="dualpt arguments, one string per command")
    p.add_argument("--runs", type=int, default=5, help="timed runs per command and version")
    p.add_argument("--save", default=None, help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"DUALPT_CACHE": str(Path(tmp) / "cache")}
        results = {
            c: ab(shlex.split(c), args.before, args.after, args.runs, prepare=lambda label, i: env, cwd=tmp)
            for c in args.commands
        }
    for command, result in results.items():
        show(f"dualpt {command}", result)
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
