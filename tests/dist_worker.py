"""What each rank runs in the torchrun tests of tests/e2e/test_distributed.py (also runs as one plain process).

    python -m torch.distributed.run --nproc-per-node 2 ... tests/dist_worker.py MODE OUT MODEL IMAGES

MODE ``cache``: encode the images' views through ``encode_views`` (the cache in ``$DUALPT_CACHE``) and save
what this rank got to ``OUT/rank<R>.safetensors`` + ``.json`` (with the number of views it encoded); also
shard a list of words, upper-case each rank's share and merge the parts on rank 0 into ``OUT/merged.json``.
MODE ``die``: as ``cache``, but rank 1 ends itself with ``os._exit(3)`` once rank 0 has written a cache
entry, and rank 0 then encodes slowly, so it is still working when the launcher stops it.
MODE ``hang``: rank 1 sleeps instead of reaching the barrier; rank 0 must give up after $DUALPT_DIST_TIMEOUT.

A :class:`DualptError` ends the process as the CLI does: ``dualpt: error: <message>`` on stderr, its exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from dualpt_cli.clip.features import EVAL_VIEW, encode_views
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.core.distributed import distributed
from dualpt_cli.core.project import user_cache_dir
from dualpt_cli.core.shards import merge_shards
from dualpt_cli.errors import DualptError

VIEWS = [0, 1, EVAL_VIEW]
BATCH = 6  # views per batch: ranks get whole blocks of 2 images
WORDS = [f"item{i}" for i in range(11)]


def run(mode: str, out: Path, model: str, images: Path) -> None:
    with distributed(device="cpu") as dist:
        bb = load_backbone(ModelSpec(model), device=dist.device, precision="fp32")
        paths = sorted(images.rglob("*.png"))
        if mode == "hang":
            if dist.rank == 1:
                time.sleep(120)
            dist.barrier("test: waiting for rank 1")
            return
        if mode == "die":
            original, folder = bb.encode_images, user_cache_dir() / "features"

            def encode(x):
                if dist.rank == 1:  # dies once rank 0 has written an entry
                    deadline = time.monotonic() + 60
                    while not any(folder.rglob("*.safetensors")) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    os._exit(3)
                if any(folder.rglob("*.safetensors")):
                    time.sleep(0.5)  # rank 0 is mid-encoding when torchrun stops it
                return original(x)

            bb.encode_images = encode
        counted, encoded = bb.encode_images, []
        bb.encode_images = lambda x: encoded.append(len(x)) or counted(x)
        fs = encode_views(bb, paths, VIEWS, user_cache_dir() / "features", aug_seed=3, batch_size=BATCH, dist=dist)
        name = f"rank{dist.rank}" if dist.distributed else "single"
        save_file({"global": fs.global_.contiguous(), "local": fs.local.contiguous()}, str(out / f"{name}.safetensors"))
        (out / f"{name}.json").write_text(
            json.dumps(
                {
                    "paths": [str(p) for p in fs.paths],
                    "meta": dist.meta(),
                    "bad": [[str(p), why] for p, why in fs.bad],
                    "encoded_views": sum(encoded),
                }
            )
        )
        parts = dist.gather_json([w.upper() for w in dist.shard(WORDS)], "test: gathering words")
        total = dist.sum(len(dist.shard(WORDS)))
        ones = dist.all_reduce_sum(torch.ones(3))
        told = dist.broadcast_json({"from": dist.rank})
        if dist.is_main:
            (out / "merged.json").write_text(
                json.dumps({"merged": merge_shards(parts), "total": total, "ones": ones.tolist(), "told": told})
            )


if __name__ == "__main__":
    mode, out, model, images = sys.argv[1:5]
    try:
        run(mode, Path(out), model, Path(images))
    except DualptError as exc:
        print(f"dualpt: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
