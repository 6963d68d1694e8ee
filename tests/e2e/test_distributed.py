from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dualpt_cli.core import distributed as D
from dualpt_cli.core.distributed import Dist, distributed, launch_env
from dualpt_cli.core.shards import merge_shards, shard, shard_bounds
from dualpt_cli.data.images import file_digest
from dualpt_cli.errors import DistributedError
from imagegen import make_image_folder

TESTS = Path(__file__).resolve().parents[1]
WORKER = TESTS / "dist_worker.py"
LAUNCH = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


# ---------------------------------------------------------------------------------------------------------
# in this process: the launch environment, sharding, the single-process Dist


def test_launch_env_read_from_torchrun_variables():
    assert launch_env({}) is None
    assert launch_env({"MASTER_ADDR": "10.0.0.1", "LOCAL_RANK": "0"}) is None  # a cluster's exports alone
    env = launch_env(LAUNCH)
    assert (env.rank, env.world_size, env.local_rank, env.master) == (1, 2, 1, "127.0.0.1:29500")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"MASTER_PORT": None}, "MASTER_PORT is not"),
        ({"LOCAL_RANK": None, "MASTER_ADDR": None}, "LOCAL_RANK, MASTER_ADDR are not"),
        ({"RANK": "one"}, "expected whole numbers"),
        ({"RANK": "2"}, "0 <= RANK < WORLD_SIZE"),
    ],
)
def test_incomplete_launch_is_one_clear_error(change, message):
    env = {k: v for k, v in {**LAUNCH, **change}.items() if v is not None}
    with pytest.raises(DistributedError, match=message):
        launch_env(env)


@pytest.mark.parametrize(
    "text, expected", [("", D.DEFAULT_TIMEOUT_S), ("2.5", 2.5), ("0", None), ("soon", None), ("inf", None)]
)
def test_timeout_from_env(text, expected):
    if expected is None:
        with pytest.raises(DistributedError, match="DUALPT_DIST_TIMEOUT"):
            D.timeout_from_env({D.TIMEOUT_ENV: text})
    else:
        assert D.timeout_from_env({D.TIMEOUT_ENV: text}) == expected


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("align", [1, 3, 4])
def test_shards_are_contiguous_balanced_aligned_and_merge_back(world, align):
    for n in range(0, 23):
        items = [f"x{i}" for i in range(n)]
        bounds = [shard_bounds(n, r, world, align) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in rank order
        assert all(lo % align == 0 for lo, _ in bounds)  # cut only at whole blocks
        sizes = [hi - lo for lo, hi in bounds]
        assert max(sizes) - min(sizes) <= align  # at most one block apart (the last block may be short)
        assert merge_shards([shard(items, r, world, align) for r in range(world)]) == items


def test_shard_rejects_impossible_ranks():
    with pytest.raises(ValueError):
        shard_bounds(5, 2, 2)


def test_single_process_dist_answers_at_once(monkeypatch):
    for var in LAUNCH:
        monkeypatch.delenv(var, raising=False)
    with distributed(device="cpu") as dist:
        assert (dist.rank, dist.world_size, dist.is_main, dist.distributed) == (0, 1, True, False)
        assert dist.device == "cpu" and dist.meta() == {"world_size": 1, "backend": None}
        t = torch.arange(3.0)
        assert dist.all_reduce_sum(t) is t and t.tolist() == [0.0, 1.0, 2.0]
        assert dist.sum(4) == 4.0
        assert dist.gather_json({"a": 1}) == [{"a": 1}] and dist.all_gather_json([1]) == [[1]]
        assert dist.broadcast_json("x") == "x"
        assert dist.shard([1, 2, 3]) == [1, 2, 3]
        dist.barrier()


def test_world_of_one_needs_no_process_group(monkeypatch):
    for var, value in {**LAUNCH, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(var, value)
    with distributed(device="cpu") as dist:
        assert dist.backend is None and not dist.distributed


def test_a_fixed_gpu_under_torchrun_is_refused(monkeypatch):
    for var, value in LAUNCH.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(DistributedError, match="--device cuda:1 under torchrun"):
        with distributed(device="cuda:1"):
            pass


def test_collective_failure_becomes_one_line():
    dist = Dist(rank=1, world_size=2, backend="gloo", timeout_s=5)

    def fail():
        raise RuntimeError(
            "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:538] Connection closed by peer\nmore C++ context"
        )

    with pytest.raises(DistributedError) as info:
        dist._collective("feature cache: waiting", fail)
    text = str(info.value)
    assert "\n" not in text and "pair.cc" not in text
    assert text.startswith("feature cache: waiting: failed on rank 1 of 2") and "Connection closed by peer" in text


# ---------------------------------------------------------------------------------------------------------
# torchrun with 2 gloo processes on 127.0.0.1 (tests/dist_worker.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH and not k.startswith(("TORCHELASTIC", "GROUP_"))}
    src = str(TESTS.parent / "src")
    env.update(
        PYTHONPATH=os.pathsep.join([src, str(TESTS), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        DUALPT_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        **extra,
    )
    return env


def run_worker(
    mode: str, out: Path, model: str, images: Path, cache: Path, nproc: int | None = 2, **extra: str
) -> subprocess.CompletedProcess:
    """``dist_worker.py`` under torchrun with ``nproc`` ranks, or as one plain process (``nproc=None``)."""
    out.mkdir(parents=True, exist_ok=True)
    launcher = (
        []
        if nproc is None
        else [
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
        ]
    )
    cmd = [sys.executable, *launcher, str(WORKER), mode, str(out), model, str(images)]
    return subprocess.run(cmd, env=worker_env(cache, **extra), capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_rn):
    """The same encoding as one plain process and as 2 torchrun ranks, each with its own empty cache."""
    root = tmp_path_factory.mktemp("dist")
    images = make_image_folder(root / "img", per_class=3)
    (images / "red" / "zz_bad.png").write_bytes(b"not an image")  # last: reported, batches unchanged
    single = run_worker("cache", root / "single", tiny_rn, images, root / "cache-single", nproc=None)
    assert single.returncode == 0, single.stderr
    two = run_worker("cache", root / "two", tiny_rn, images, root / "cache-two")
    assert two.returncode == 0, two.stderr
    # an interrupted run left the first 4 images (rank 0's whole share above) in the cache
    single_cache = cache_files(root / "cache-single")
    ref_paths = json.loads((root / "single" / "single.json").read_text())["paths"]
    for path in ref_paths[:4]:
        name = f"{file_digest(Path(path))[:40]}.safetensors"
        target = root / "cache-half" / single_cache[name].relative_to(root / "cache-single")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(single_cache[name], target)
    half = run_worker("cache", root / "half", tiny_rn, images, root / "cache-half")
    assert half.returncode == 0, half.stderr
    return root


def cache_files(cache: Path) -> dict[str, Path]:
    return {p.name: p for p in cache.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_sharded_cache_equals_single_process_bit_for_bit(two_runs):
    ref = load_file(str(two_runs / "single" / "single.safetensors"))
    ref_meta = json.loads((two_runs / "single" / "single.json").read_text())
    assert ref_meta["meta"] == {"world_size": 1, "backend": None} and len(ref_meta["bad"]) == 1
    for rank in (0, 1):  # every rank holds the whole set, as one process would
        got = load_file(str(two_runs / "two" / f"rank{rank}.safetensors"))
        meta = json.loads((two_runs / "two" / f"rank{rank}.json").read_text())
        assert meta["meta"] == {"world_size": 2, "backend": "gloo"}
        assert meta["paths"] == ref_meta["paths"] and meta["bad"] == ref_meta["bad"]
        assert torch.equal(got["global"], ref["global"]) and torch.equal(got["local"], ref["local"])
    # 9 images + 1 bad in blocks of 2 images (6 views = 1 batch): 2 blocks on rank 0, 3 on rank 1
    assert ref_meta["encoded_views"] == 9 * 3
    assert [json.loads((two_runs / "two" / f"rank{r}.json").read_text())["encoded_views"] for r in (0, 1)] == [12, 15]
    # the cache files themselves: the same entries, the same tensors, nothing else left behind
    one, two = cache_files(two_runs / "cache-single"), cache_files(two_runs / "cache-two")
    assert sorted(one) == sorted(two) and len(one) == len(ref_meta["paths"])
    for name in one:
        a, b = load_file(str(one[name])), load_file(str(two[name]))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_half_filled_cache_is_shared_out_again(two_runs):
    ref = load_file(str(two_runs / "single" / "single.safetensors"))
    counts = []
    for rank in (0, 1):
        got = load_file(str(two_runs / "half" / f"rank{rank}.safetensors"))
        assert torch.equal(got["global"], ref["global"]) and torch.equal(got["local"], ref["local"])
        counts.append(json.loads((two_runs / "half" / f"rank{rank}.json").read_text())["encoded_views"])
    assert counts == [2 * 3, 3 * 3]  # the 5 missing images (+1 bad) dealt out again, not all left to rank 1


@pytest.mark.slow
def test_gather_restores_input_order(two_runs):
    from dist_worker import WORDS

    merged = json.loads((two_runs / "two" / "merged.json").read_text())
    assert merged["merged"] == [w.upper() for w in WORDS]
    assert merged["total"] == len(WORDS) and merged["ones"] == [2.0, 2.0, 2.0]
    assert merged["told"] == {"from": 0}


@pytest.mark.slow
def test_a_dead_rank_ends_the_job_with_a_clear_error(tmp_path, tiny_rn):
    images = make_image_folder(tmp_path / "img", per_class=2)
    cache = tmp_path / "cache"
    proc = run_worker("die", tmp_path / "out", tiny_rn, images, cache)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dualpt: error:")]
    assert errors, proc.stderr[-3000:]
    assert "rank 0 of 2" in errors[0] and "another rank" in errors[0]
    assert not (tmp_path / "out" / "rank0.safetensors").exists()
    # rank 0 was stopped mid-encoding: what it wrote is whole, temporary files are gone
    files = cache_files(cache)
    assert files and all(name.endswith(".safetensors") for name in files), sorted(files)
    for path in files.values():
        assert set(load_file(str(path))) == {"g0", "g1", "g-1", "l0", "l1", "l-1"}


@pytest.mark.slow
def test_a_silent_rank_times_out(tmp_path, tiny_rn):
    images = make_image_folder(tmp_path / "img", per_class=1)
    proc = run_worker("hang", tmp_path / "out", tiny_rn, images, tmp_path / "cache", DUALPT_DIST_TIMEOUT="3")
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dualpt: error:")]
    assert errors and errors[0].startswith("dualpt: error: test: waiting for rank 1: failed on rank 0 of 2"), (
        proc.stderr[-3000:]
    )
    assert "within 3 s" in errors[0]
