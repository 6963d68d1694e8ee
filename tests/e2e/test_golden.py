"""Golden outputs: predict and eval on the trained tiny fixture give exactly the rows and metrics stored in
tests/golden/ (made from the code before the issue-14 restructuring; a refactor must not change them).

The fixture is trained and run in fp32, whose last bits follow the CPU's instruction set (PyTorch and MKL
pick other kernels for AVX2 than for AVX-512: probabilities moved by up to 6e-5), so there is one golden file
per instruction set (``torch.backends.cpu.get_cpu_capability()``), each compared to 1e-6. On a CPU with
none, the AVX-512 file is compared to :data:`OTHER_CPU_TOLERANCE`, every class and count still exactly.
Regenerate only for an intended change of behaviour, on each kind of CPU that has a file:
DUALPT_REGEN_GOLDEN=1 pytest tests/e2e/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from typer.testing import CliRunner

from dualpt_cli.cli.app import app

GOLDENS = Path(__file__).parents[1] / "golden"
GOLDEN_BY_CPU = {"AVX512": GOLDENS / "predict_eval.json", "AVX2": GOLDENS / "predict_eval.AVX2.json"}
EXACT = 1e-6
OTHER_CPU_TOLERANCE = 2e-4  # 3x the largest AVX2 / AVX-512 difference seen
runner = CliRunner()


def _invoke(args: list[str]) -> dict | list:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _relative(rows: list[dict], root: Path) -> list[dict]:
    return [{**row, "image": Path(row["image"]).relative_to(root).as_posix()} for row in rows]


def _outputs(prompts: str, test_images: Path, tmp_path: Path) -> dict:
    """Predict rows (trained classes, and with one new class), eval metrics (with zero-shot, and base-to-new)."""
    classes = tmp_path / "classes.txt"
    classes.write_text("red\ngreen\nblue\nyellow\n")
    common = ["--prompt-file", prompts, "--device", "cpu", "--precision", "fp32", "--quiet"]
    out = {
        "predict": _relative(_invoke(["predict", str(test_images), "--format", "json", *common]), test_images),
        "predict_new_class": _relative(
            _invoke(["predict", str(test_images), "--format", "json", "--classes", str(classes), *common]), test_images
        ),
        "eval": _invoke(["eval", str(test_images), "--zero-shot", "--json", *common]),
        "eval_new_class": _invoke(["eval", str(test_images), "--classes", str(classes), "--json", *common]),
    }
    for key in ("eval", "eval_new_class"):
        out[key].pop("images")
        out[key].pop("prompt_file")
        out[key].pop("model")
    return out


def _compare(got, want, where: str = "", tol: float = EXACT) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            _compare(got[key], want[key], f"{where}.{key}", tol)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, f"{where}[{i}]", tol)
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} != {want!r}"
        assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= tol, f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def golden_file() -> tuple[Path, float]:
    """The golden file of this CPU's instruction set and its tolerance (another CPU: AVX-512's, looser)."""
    cpu = torch.backends.cpu.get_cpu_capability()
    if cpu in GOLDEN_BY_CPU:
        return GOLDEN_BY_CPU[cpu], EXACT
    return GOLDEN_BY_CPU["AVX512"], OTHER_CPU_TOLERANCE


def test_predict_and_eval_match_the_golden_outputs(prompts, test_images, tmp_path):
    got = _outputs(prompts, test_images, tmp_path)
    golden, tol = golden_file()
    if os.environ.get("DUALPT_REGEN_GOLDEN"):
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(golden.read_text())
    _compare(got, want, tol=tol)
    assert got["predict"] and all(row["error"] is None for row in got["predict"])  # the fixture is not empty


def test_golden_files_differ_only_in_the_last_bits():
    """The per-CPU golden files hold the same classes and counts, and numbers within the other-CPU tolerance."""
    files = [json.loads(f.read_text()) for f in GOLDEN_BY_CPU.values()]
    for other in files[1:]:
        _compare(other, files[0], tol=OTHER_CPU_TOLERANCE)
