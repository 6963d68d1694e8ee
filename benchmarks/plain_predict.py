"""Plain fp32 open_clip zero-shot prediction as a user writes it: the whole-process baseline of bench_e2e.py.

    python benchmarks/plain_predict.py FOLDER --model RN50 --pretrained WEIGHTS --classes a,b,c -o rows.jsonl

``create_model_and_transforms``, ``preprocess(Image.open(p))`` in the main process, fp32 ``encode_image`` in
batches, softmax against the ``"a photo of a {name}."`` text features, one JSON line with the top-k per image.
It imports neither dualpt nor anything beyond open_clip, torch and PIL.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import open_clip
import torch
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--model", default="RN50")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--classes", required=True, help="comma-separated class names")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=args.pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    names = args.classes.split(",")
    paths = sorted(q for q in Path(args.folder).rglob("*") if q.suffix.lower() in SUFFIXES)
    with torch.no_grad():
        text = model.encode_text(tokenizer([f"a photo of a {n}." for n in names]))
        text = text / text.norm(dim=-1, keepdim=True)  # (K, d)
        with open(args.output, "w") as fh:
            for start in range(0, len(paths), args.batch_size):
                group = paths[start : start + args.batch_size]
                x = torch.stack([preprocess(Image.open(q)) for q in group])  # (b, 3, H, W)
                f = model.encode_image(x)
                f = f / f.norm(dim=-1, keepdim=True)
                probs = (100.0 * f @ text.T).softmax(dim=-1)  # (b, K)
                top = probs.topk(min(args.top_k, len(names)), dim=-1)
                for q, v, i in zip(group, top.values.tolist(), top.indices.tolist()):
                    row = {"image": str(q), "top": [{"class": names[k], "prob": s} for k, s in zip(i, v)]}
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
