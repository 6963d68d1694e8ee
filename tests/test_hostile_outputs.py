"""Issue 23, high items: outputs that would replace an input or a project file, devices as outputs, a glob
beaten by a real file name, script in the report, torchrun ranks with other options.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.core.distributed import Dist
from dualpt_cli.core.project import atomic_write_bytes
from dualpt_cli.data.stream import shard_inputs
from dualpt_cli.errors import DistributedError, ProjectError
from imagegen import make_image_folder
from test_hostile import one_line_error  # noqa: F401  (also used by test_hostile_inputs)
from trained import TRAINED_CLASSES

runner = CliRunner()
CPU = ["--device", "cpu", "--precision", "fp32"]


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def project(trained, tmp_path) -> Path:
    """A copy of the trained tiny project (never the session's own: a failing test must not damage it)."""
    return Path(shutil.copytree(trained[0] / "proj", tmp_path / "proj"))


@pytest.fixture
def victim(tmp_path) -> Path:
    folder = make_image_folder(tmp_path / "imgs", classes=TRAINED_CLASSES[:1], per_class=2, seed=3)
    return sorted(folder.rglob("*.png"))[0]


# ---------------------------------------------------------------------------------------------------------
# 1. an output is never an input or a file the project owns


@pytest.mark.parametrize("target", ["prompts.safetensors", "run_config.json", "split.json"])
def test_predict_output_onto_a_project_file_is_refused(project, victim, target):
    before = snapshot(project)
    result = invoke("predict", victim, "--project", project, "-o", project / target, *CPU)
    one_line_error(result, "--output", "would overwrite", target)
    assert snapshot(project) == before


def test_predict_output_onto_the_prompt_file_it_reads_is_refused(project, victim, tmp_path):
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.copy(project / "prompts.safetensors", elsewhere)
    before = elsewhere.read_bytes()
    result = invoke("predict", victim, "--prompt-file", elsewhere, "-o", elsewhere, *CPU)
    one_line_error(result, "would overwrite", "the prompt file")
    assert elsewhere.read_bytes() == before


def test_predict_output_onto_its_input_image_is_refused(project, victim):
    before = victim.read_bytes()
    result = invoke("predict", victim, "--project", project, "-o", victim, *CPU)
    one_line_error(result, "would overwrite", "an input image")
    assert victim.read_bytes() == before
    link = victim.with_name("hard.png")
    os.link(victim, link)  # the same file by another name
    one_line_error(invoke("predict", victim, "--project", project, "-o", link, *CPU), "would overwrite")
    assert victim.read_bytes() == before


def test_explain_into_the_folder_of_its_images_is_refused(project, victim):
    folder = victim.parent
    before = snapshot(folder)
    result = invoke("explain", folder, "-o", folder, "--project", project, *CPU)
    one_line_error(result, "--output", "would overwrite", "an input image")
    assert snapshot(folder) == before


def test_explain_into_another_folder_still_works(project, victim, tmp_path):
    result = invoke("explain", victim, "-o", tmp_path / "pics", "--project", project, *CPU)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pics" / f"{victim.stem}.png").is_file()


def test_report_output_onto_a_project_file_is_refused(project):
    before = snapshot(project)
    result = invoke("report", "--project", project, "-o", project / "prompts.safetensors", "--examples", 0)
    one_line_error(result, "would overwrite", "prompts.safetensors")
    assert snapshot(project) == before


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
# 3. a name that exists is taken as given, not as a glob


def _shape(path: Path, color: str, star: bool) -> None:
    im = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(im)
    if star:
        draw.polygon([(32, 2), (40, 24), (62, 24), (44, 38), (52, 62), (32, 48), (12, 62), (20, 38), (2, 24)], color)
    else:
        draw.ellipse((8, 8, 56, 56), color)
    im.save(path)


def test_a_file_named_like_a_glob_is_that_file(project, tmp_path):
    (tmp_path / "gl").mkdir()
    _shape(tmp_path / "gl" / "a[1].png", "red", star=False)
    _shape(tmp_path / "gl" / "a1.png", "blue", star=True)
    result = invoke("predict", "gl/a[1].png", "--project", project, "--json", *CPU)
    assert result.exit_code == 0, result.output
    assert [row["image"] for row in json.loads(result.stdout)] == ["gl/a[1].png"]
    result = invoke("predict", "gl/a?.png", "--project", project, "--json", *CPU)  # no such name: a glob
    assert [row["image"] for row in json.loads(result.stdout)] == ["gl/a1.png"]


# ---------------------------------------------------------------------------------------------------------
# 4. the report escapes every eval.json field and stays inert


def _eval_dir(tmp_path: Path, **changes) -> Path:
    method = {
        "images": 2,
        "classes": 1,
        "top1": 0.5,
        "top5": 1.0,
        "top5_k": 1,
        "ece": 0.1,
        "per_class": [{"class": "red", "folder": "red", "images": 2, "correct": 1, "accuracy": 0.5}],
        "confused": [],
    }
    data = {"images": "imgs", "model": "tiny", "dualpt": method}
    for key, value in changes.items():
        if key.startswith("m_"):
            method[key[2:]] = value
        else:
            data[key] = value
    folder = tmp_path / "ev"
    folder.mkdir(exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(data))
    return folder


SCRIPT = '<script>fetch("http://127.0.0.1:9/x")</script><img src=x onerror=alert(1)>'


def test_report_escapes_text_fields_of_eval_json(tmp_path):
    (tmp_path / "p").mkdir()
    folder = _eval_dir(tmp_path, images=SCRIPT, model=SCRIPT)
    result = invoke("report", "--project", tmp_path / "p", "--eval", folder, "--examples", 0)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "p" / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page and "&lt;script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


@pytest.mark.parametrize(
    "change, field",
    [
        ({"m_images": SCRIPT}, "dualpt.images"),
        ({"m_classes": SCRIPT}, "dualpt.classes"),
        ({"gain_top1": "x"}, "gain_top1"),
        ({"m_per_class": None}, "dualpt.per_class"),
        ({"m_confused": [1]}, "dualpt.confused[0]"),
        ({"dualpt": [1]}, "dualpt should be an object"),
        ({"dualpt": None}, "no results"),
    ],
)
def test_report_refuses_malformed_eval_json(tmp_path, change, field):
    (tmp_path / "p").mkdir()
    folder = _eval_dir(tmp_path, **change)
    result = invoke("report", "--project", tmp_path / "p", "--eval", folder, "--examples", 0)
    one_line_error(result, "eval.json", field)
    assert not (tmp_path / "p" / "report.html").exists()


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
# 6. a $ in a class or compare name is drawn as it is (matplotlib's mathtext would fail on it)

MATH = r"a $\bad{$ b"


def test_dollar_in_class_names_draws(tmp_path):
    import torch

    from dualpt_cli.pictures import plots

    png = plots.confusion_png(torch.tensor([[2, 0], [1, 1]]), [MATH, "b$"], MATH)
    assert png.startswith(b"\x89PNG")
    per_class = {"dualpt": [{"class": MATH, "accuracy": 0.5}, {"class": "$x$", "accuracy": 1.0}]}
    assert plots.per_class_png(per_class, {"dualpt": MATH}).startswith(b"\x89PNG")


def test_dollar_in_compare_names_draws():
    from types import SimpleNamespace

    from dualpt_cli.pictures import plots

    rows = [SimpleNamespace(method=MATH, shots=s, mean=0.5, std=0.1, best=s == 2, runs=1) for s in (1, 2)]
    assert plots.compare_png({MATH: rows}, title=MATH).startswith(b"\x89PNG")


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
