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

model="local-dir:$synthclip/model"
dualpt train train --shots 4 --model "$model" --pretrained "" --seed 1
dualpt eval test --zero-shot --plot dualpt-project/eval
dualpt explain test/red_star/000.png test/blue_square/000.png -o explain --classes top
dualpt report --examples 3
