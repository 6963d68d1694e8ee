"""benchmarks/bench_text_split.py runs on the tiny model, and the split gives the replicated gradient."""

from __future__ import annotations

import pytest

from test_benchmarks import load_script


@pytest.mark.slow
def test_bench_text_split_runs_and_the_split_changes_no_gradient(tiny_rn, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    bench = load_script("bench_text_split")
    runs = bench.main(["--model", tiny_rn, "--classes", "5", "--prompts", "2", "--steps", "1"])
    assert all(r["seconds_per_step"] > 0 for r in runs.values())
    one, replicated, split = (runs[k]["grad_norm"] for k in ("one", "replicated", "split"))
    assert replicated == pytest.approx(2 * one, rel=1e-6)  # each of the 2 ranks adds the whole gradient
    assert split == pytest.approx(2 * one, rel=1e-6)  # and so does the split, from half the text encoder each
