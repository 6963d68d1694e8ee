"""Issue 23's hostile outputs, the cases that attack core: moved from tests/test_hostile_outputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from clihelpers import CPU, invoke, one_line_error
from dualpt_cli.core.distributed import Dist
from dualpt_cli.core.project import atomic_write_bytes
from dualpt_cli.data.stream import shard_inputs
from dualpt_cli.errors import DistributedError, ProjectError

# ---------------------------------------------------------------------------------------------------------
# 2. a device or pipe is never replaced by a regular file, whichever command writes


def test_report_output_onto_a_pipe_is_refused(project, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = invoke("report", "--project", project, "-o", fifo, "--examples", 0)
    one_line_error(result, "--output", "not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not (project / "report.html").exists()


def test_every_atomic_writer_refuses_a_device(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ProjectError, match="not a regular file"):
        atomic_write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["fifo"]  # no temp file left


# ---------------------------------------------------------------------------------------------------------
# 5. torchrun ranks compare everything that shapes the output


class _Peer(Dist):
    """Rank 0 of 2 whose peer resolved ``other`` (a digest per setting) instead of what rank 0 did."""

    def __init__(self, change):
        super().__init__(rank=0, world_size=2, backend="gloo")
        self.change = change

    def all_gather_json(self, value, what=""):
        return [value, {**value, **self.change(value)}]


def test_ranks_with_other_settings_stop_naming_them(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    settings = {"--format": "jsonl", "--batch-size": 2, "--top-k": 5}
    assert shard_inputs(paths, _Peer(lambda v: {}), 2, "predict", settings) == (0, 2)
    differ = r"predict: the ranks were started with different settings \(--batch-size, --format\)"
    with pytest.raises(DistributedError, match=differ):
        shard_inputs(paths, _Peer(lambda v: {"--format": "x", "--batch-size": "y"}), 2, "predict", settings)
    with pytest.raises(DistributedError, match="different images"):
        shard_inputs(paths, _Peer(lambda v: {"images": "z"}), 2, "predict", settings)


# ---------------------------------------------------------------------------------------------------------
# 5. (cont.) torchrun: a rank started with other options stops before anything is written


@pytest.mark.slow
@pytest.mark.parametrize("other, named", [("--batch-size 3", "--batch-size"), ("--format csv", "--format")])
def test_torchrun_rank_with_other_options_stops_before_writing(project, victim, tmp_path, other, named):
    import subprocess
    import sys

    from test_distributed import TESTS, free_port, worker_env

    out = tmp_path / "rows" / "rows.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    cmd += ["--master-port", str(free_port()), str(TESTS / "dist_settings_worker.py")]
    cmd += ["predict", str(victim.parent), "--project", str(project), "-o", str(out), "--batch-size", "2", *CPU]
    env = worker_env(tmp_path / "cache", DUALPT_TEST_RANK1_ARGS=other)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert done.returncode != 0 and errors, done.stderr[-3000:]
    assert all("different settings" in ln and named in ln for ln in errors), errors
    assert not re.search(r'File "[^"]*dualpt_cli', done.stderr)  # the launcher's own traceback is not ours
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no rows, no part files


# ---------------------------------------------------------------------------------------------------------
# low: what a killed or refused torchrun job left beside the output; /dev/stderr as an output


def test_a_later_run_removes_stale_temp_and_part_files(project, victim, tmp_path):
    """rank 0 killed (-9) left its .tmp, a job refused on one rank left .part files; nothing removed them."""
    import fcntl

    from dualpt_cli.core.project import mkstemp_beside
    from dualpt_cli.predict.partfiles import part_path

    out = tmp_path / "rows" / "rows.jsonl"
    out.parent.mkdir()
    fd, tmp = mkstemp_beside(out)  # what rank 0 was writing when it was killed
    os.close(fd)
    stale = [Path(tmp), part_path(out, "0a1b2c3d", 1), part_path(out, "0a1b2c3d", 2)]
    live = part_path(out, "ffffffff", 1)  # a job still writing: locked, as partfiles.hold does
    others = [out.with_name(".rows.jsonl.notes"), out.with_name(".other.jsonl.abcdefgh.tmp"), out.with_name("keep")]
    for path in [*stale[1:], live, *others]:
        path.write_text("{}\n")
    with open(live) as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke("predict", victim, "--project", project, "-o", out, *CPU)
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale)
    assert live.exists() and all(p.exists() for p in others)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, live.name, *(p.name for p in others)])


def test_stderr_as_output_is_refused_by_name_and_stdout_is_stdout(project, victim):
    """-o /dev/stderr was refused as "a symbolic link" while -o /dev/stdout wrote to stdout."""
    result = invoke("predict", victim, "--project", project, "-o", "/dev/stderr", *CPU)
    one_line_error(result, "--output /dev/stderr", "standard error", "messages, not results", "file name")
    assert result.stdout == ""
    stdout = invoke("predict", victim, "--project", project, "-o", "/dev/stdout", "--format", "jsonl", *CPU)
    assert stdout.exit_code == 0, stdout.output
    assert json.loads(stdout.stdout)["image"] == str(victim)
    report = invoke("report", "--project", project, "-o", "/dev/stderr")
    one_line_error(report, "--output /dev/stderr", "standard error")
