"""``dualpt predict`` and ``eval`` under torchrun: 2 gloo ranks on 127.0.0.1 give what one process gives.

The single-process reference runs in this process (CliRunner); the 2-rank runs are the real command line
under ``python -m torch.distributed.run -m dualpt_cli`` (tests/dist_predict_worker.py for the rank that dies).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.core.distributed import Dist
from dualpt_cli.data.images import expand_inputs
from dualpt_cli.data.stream import shard_inputs
from dualpt_cli.errors import DistributedError
from dualpt_cli.predict.output import JsonlWriter
from dualpt_cli.predict.partfiles import _append, part_path
from imagegen import make_image_folder, write_corrupt_image
from test_distributed import TESTS, free_port, worker_env
from trained import TRAINED_CLASSES

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    """The in-process reference computes with one thread, as each rank does (OMP_NUM_THREADS=1): a float sum
    split over another number of threads may differ in its last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BATCH = 2  # 10 images in 5 batches: rank 0 classifies 2 batches, rank 1 the 3 after them
COMMON = ["--batch-size", str(BATCH), "--device", "cpu", "--precision", "fp32"]


def torchrun(args: list[str], tmp: Path, script: Path | None = None) -> subprocess.CompletedProcess:
    """``dualpt ARGS`` (or ``script ARGS``) under torchrun with 2 gloo ranks."""
    target = [str(script)] if script else ["-m", "dualpt_cli"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *target,
        *args,
    ]
    return subprocess.run(cmd, env=worker_env(tmp / "cache"), capture_output=True, text=True, timeout=240, cwd=tmp)


@pytest.fixture
def images(tmp_path) -> Path:
    """10 images: blue 0-2, green 0-2, a corrupt green one (in rank 1's shard), red 0-2."""
    folder = make_image_folder(tmp_path / "img", classes=TRAINED_CLASSES, per_class=3, seed=7)
    write_corrupt_image(folder / "green" / "zz_broken.png")
    paths = expand_inputs([str(folder)])
    assert len(paths) == 10 and paths[6].name == "zz_broken.png"  # rank 1 has images 4-9
    return folder


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [("out.jsonl", []), ("out.csv", []), ("-", ["--format", "json"])])
def test_two_ranks_write_the_rows_of_one_process(name, extra, images, prompts, tmp_path):
    args = ["predict", str(images), "--prompt-file", prompts, "-k", "2", *extra, *COMMON]
    one = runner.invoke(app, [*args, "--output", str(tmp_path / "one" / name) if name != "-" else "-"])
    assert one.exit_code == 1 and "1 of 10 image(s) could not be read" in one.stderr
    out = tmp_path / "two" / name
    two = torchrun([*args, "--output", str(out) if name != "-" else "-"], tmp_path)
    assert two.returncode == 1, two.stderr[-3000:]
    assert "1 of 10 image(s) could not be read" in "\n".join(error_lines(two.stderr)), two.stderr[-3000:]
    if name == "-":  # rank 0 printed every rank's rows, once
        assert json.loads(two.stdout) == json.loads(one.stdout)
        return
    expected = (tmp_path / "one" / name).read_bytes()
    assert out.read_bytes() == expected  # the same rows, the same order, byte for byte
    assert [p.name for p in out.parent.iterdir()] == [name]  # the parts were merged and removed
    assert two.stdout == ""


@pytest.mark.slow
def test_two_rank_eval_reports_the_metrics_of_one_process(prompts, tmp_path):
    folder = make_image_folder(tmp_path / "test", classes=TRAINED_CLASSES, per_class=2, seed=7)
    make_image_folder(folder, classes=["yellow", "purple"], per_class=2, seed=5)
    write_corrupt_image(folder / "red" / "zz_broken.png")  # 11 images: rank 1 has 6-10
    (tmp_path / "new.txt").write_text("yellow\npurple\n")
    args = [
        "eval",
        str(folder),
        "--prompt-file",
        prompts,
        "--classes",
        str(tmp_path / "new.txt"),
        "--zero-shot",
        "--json",
        *COMMON,
    ]
    one = runner.invoke(app, args)
    assert one.exit_code == 1, one.output
    two = torchrun(args, tmp_path)
    assert two.returncode == 1, two.stderr[-3000:]
    assert "1 image(s) could not be read" in "\n".join(error_lines(two.stderr))
    got, ref = json.loads(two.stdout), json.loads(one.stdout)  # rank 0 alone printed its report
    assert got == ref
    assert ref["dualpt"]["images"] == 10 and ref["dualpt"]["H"] is not None and len(ref["failed"]) == 1


@pytest.mark.slow
def test_a_rank_dying_mid_predict_leaves_no_output_and_no_parts(images, prompts, tmp_path):
    out = tmp_path / "two" / "out.jsonl"
    proc = torchrun(
        ["predict", str(images), "--prompt-file", prompts, "--output", str(out), *COMMON],
        tmp_path,
        script=TESTS / "dist_predict_worker.py",
    )
    assert proc.returncode != 0
    errors = error_lines(proc.stderr)
    assert errors and "rank 0 of 2" in errors[0] and "another rank" in errors[0], proc.stderr[-3000:]
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary output, no part of either rank


def test_part_files_are_hidden_beside_the_output(tmp_path):
    assert part_path(tmp_path / "out.csv", "ab12", 3) == tmp_path / ".out.csv.ab12.part3"


class _OtherListing(Dist):
    """Rank 0 of 2 whose peer found another image list (its folder is not the one rank 0 sees)."""

    def __init__(self):
        super().__init__(rank=0, world_size=2, backend="gloo")

    def all_gather_json(self, value, what=""):
        return [value, "another listing"]


def test_ranks_that_found_different_images_stop(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    assert shard_inputs(paths, Dist(), 2, "predict") == (0, 4)
    with pytest.raises(DistributedError, match="predict: the ranks found different images .4 on rank 0."):
        shard_inputs(paths, _OtherListing(), 2, "predict")


def test_a_part_rank_0_cannot_see_is_one_clear_error(tmp_path):
    part = part_path(tmp_path / "out.jsonl", "ab12", 1)
    with pytest.raises(DistributedError, match="rank 0 cannot read .*rank 1 wrote.*0 of 120 bytes.*shares"):
        _append(part, 120, 1, "jsonl", io.StringIO(), JsonlWriter(io.StringIO(), 1))
    part.write_text('{"image": "a.png"}\n')  # only some of the rows arrived
    with pytest.raises(DistributedError, match="19 of 120 bytes"):
        _append(part, 120, 1, "jsonl", io.StringIO(), JsonlWriter(io.StringIO(), 1))
