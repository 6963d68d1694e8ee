#!/usr/bin/env bash
# The pictures in README.md and docs/pictures.md, from the small synthclip CLIP (shared/synthclip in the
# steering repository): a 6-class colour x shape task of that world, 4 shots, descriptions from the world's
# own attribute phrases, train, eval --plot, explain, report.
#
#   bash examples/pictures.sh /path/to/synthclip WORKDIR
set -euo pipefail
synthclip=$(cd "${1:?usage: pictures.sh SYNTHCLIP_DIR WORKDIR}" && pwd)
work=${2:?usage: pictures.sh SYNTHCLIP_DIR WORKDIR}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work" && cd "$work"

# train/ (4 per class), test/ (20 per class), classes.txt ("red_circle: red circle"), answers.json (phrases)
python - "$here/benchmarks" "$synthclip" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench_learning import CLASSES, build_task, describe_from_file, load_generator
build_task(load_generator(Path(sys.argv[2])), Path("."), [f"{c} {s}" for c, s in CLASSES], 4, 20, seed=1)
describe_from_file(Path("."), Path("dualpt-project"))  # stands in for an LLM: the world's attribute phrases
EOF

model="local-dir:$synthclip/model"
dualpt train train --shots 4 --model "$model" --pretrained "" --seed 1
dualpt eval test --zero-shot --plot dualpt-project/eval
dualpt explain test/red_star/000.png test/blue_square/000.png -o explain --classes top
dualpt report --examples 3
