#!/usr/bin/env bash
# The pictures in README.md and docs/pictures.md, from the demo CLIP that ships in examples/shapes/model (or
# another open_clip local-dir model): a 6-class colour x shape task of its world, 4 shots, descriptions from
# the world's own attribute phrases, train, eval --plot, explain, report.
#
#   bash examples/pictures.sh WORKDIR [MODEL_DIR]
set -euo pipefail
work=${1:?usage: pictures.sh WORKDIR [MODEL_DIR]}
here=$(cd "$(dirname "$0")/.." && pwd)
model_dir=$(cd "${2:-$here/examples/shapes/model}" && pwd)
mkdir -p "$work" && cd "$work"

# train/ (4 per class) and test/ (20 per class) of the shipped demo classes (examples/shapes/classes.txt), then
# the world's own attribute phrases ("red colour", "star shape") standing in for an LLM's descriptions
python "$here/examples/shapes/make_dataset.py" . --train 4 --test 20
python - "$here/examples/shapes/classes.txt" <<'EOF'
import json, sys
folders = [line.split(":")[0].strip() for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]
phrases = {f: [f"{f.split('_')[0]} colour", f"{f.split('_')[1]} shape"] for f in folders}
json.dump(phrases, open("phrases.json", "w"), indent=1)
EOF
dualpt describe "$here/examples/shapes/classes.txt" --phrases phrases.json

model="local-dir:$model_dir"
dualpt train train --shots 4 --model "$model" --pretrained "" --seed 1
dualpt eval test --zero-shot --plot dualpt-project/eval
dualpt explain test/red_star/000.png test/blue_square/000.png -o explain --classes top
dualpt report --examples 3
