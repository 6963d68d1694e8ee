"""Smoke tests: every benchmark script runs end to end on the tiny model, so the scripts never rot."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_train_runs_on_tiny_model(tiny_rn, tmp_path, capsys):
    bench = load_script("bench_train")
    out = tmp_path / "result.json"
    results = bench.main([
        "--model", tiny_rn, "--classes", "2", "--shots", "2", "--batch-size", "4", "--epochs", "1",
        "--aug-views", "1", "--check-images", "4", "--memory-classes", "6", "--memory-chunk", "4",
        "--inline", "--save", str(out),
    ])
    text = capsys.readouterr().out
    assert "seconds / epoch" in text and "feature cache, one-time" in text and "goals:" in text
    saved = json.loads(out.read_text())
    assert saved["summary"] == pytest.approx(results["summary"])
    ours, ref, check = results["dualpt"], results["reference"], results["check"]
    assert ours["sec_per_epoch"] > 0 and ref["sec_per_epoch"] > 0
    assert ours["cache_views"] == 2 * 2 * 1
    assert "matching" in ours["phases"] and "image encoder" in ref["phases"]
    # the two paths compute the same fp32 logits and context gradient
    assert check["fp32_rel_logit_diff"] <= 1e-4
    assert check["fp32_rel_ctx_grad_diff"] <= 1e-3
    assert 0.0 <= check.get("top1_agreement", 1.0) <= 1.0
    assert [m["text_chunk"] for m in results["memory"]] == [4, 0]
    assert all(m["peak_rss_gib"] > 0 for m in results["memory"])
    assert math.isfinite(results["summary"]["speedup"])
