"""Smoke test: benchmarks/bench_predict.py runs end to end on the tiny model, so the script never rots."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_predict_runs_on_tiny_model(tiny_rn, tmp_path, capsys):
    bench = load_script("bench_predict")
    out = tmp_path / "result.json"
    results = bench.main(["--model", tiny_rn, "--images", "6", "--image-size", "48x40", "--batch-size", "4",
                          "--classes", "3", "--prompts", "2", "--ctx-len", "2", "--workers", "0",
                          "--precision", "bf16", "--inline", "--json", "--save", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    for path in ("dualpt", "floor", "plain", "check"):
        assert results[path]["images_per_s"] > 0, path
        assert results[path]["peak_rss_gib"] > 0, path
    assert results["dualpt"]["precision"] == "bf16" and results["check"]["precision"] == "fp32"
    assert results["dualpt"]["errors"] == 0
    assert set(results["dualpt"]["parts"]) == {"decode_workers_s", "encode_s", "matching_s"}
    s = results["summary"]
    assert s["vs_floor"] > 0 and s["vs_plain_fp32"] > 0
    assert 0.0 <= s["top1_agreement_vs_fp32"] <= 1.0 and s["agreement_images"] == 6


def test_bench_predict_table_output(tiny_rn, capsys):
    bench = load_script("bench_predict")
    bench.main(["--model", tiny_rn, "--images", "3", "--image-size", "40", "--batch-size", "2", "--classes", "2",
                "--prompts", "1", "--ctx-len", "2", "--workers", "0", "--precision", "fp32", "--skip-plain",
                "--skip-check", "--inline"])
    text = capsys.readouterr().out
    assert "images / s" in text and "floor: encode_image on tensors" in text
    assert "plain open_clip" not in text
