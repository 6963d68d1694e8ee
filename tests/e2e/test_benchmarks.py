"""Smoke tests: every benchmark script runs end to end on the tiny model, so the scripts never rot."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from dualpt_cli.clip.load import select_device, select_precision
from dualpt_cli.promptfile.io import read_prompt_file

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


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
    results = bench.main(
        [
            "--model",
            tiny_rn,
            "--classes",
            "2",
            "--shots",
            "2",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--aug-views",
            "1",
            "--check-images",
            "4",
            "--memory-classes",
            "6",
            "--memory-chunk",
            "4",
            "--inline",
            "--save",
            str(out),
        ]
    )
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
    assert check["fp32_top1_agreement"] == 1.0  # equal logits up to 1e-4: the same top-1 class
    low = select_precision("auto", select_device("auto"))  # the script's default --precision
    if low == "fp32":  # no low-precision run to compare
        assert "top1_agreement" not in check and "low_precision" not in check
    else:
        assert check["low_precision"] == low and 0.0 <= check["top1_agreement"] <= 1.0
    assert [m["text_chunk"] for m in results["memory"]] == [4, 0]
    assert all(m["peak_rss_gib"] > 0 for m in results["memory"])
    assert math.isfinite(results["summary"]["speedup"])


def test_bench_predict_runs_on_tiny_model(tiny_rn, tmp_path, capsys):
    bench = load_script("bench_predict")
    out = tmp_path / "result.json"
    results = bench.main(
        [
            "--model",
            tiny_rn,
            "--images",
            "6",
            "--image-size",
            "48x40",
            "--batch-size",
            "4",
            "--classes",
            "3",
            "--prompts",
            "2",
            "--ctx-len",
            "2",
            "--workers",
            "0",
            "--precision",
            "bf16",
            "--inline",
            "--json",
            "--save",
            str(out),
        ]
    )
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
    bench.main(
        [
            "--model",
            tiny_rn,
            "--images",
            "3",
            "--image-size",
            "40",
            "--batch-size",
            "2",
            "--classes",
            "2",
            "--prompts",
            "1",
            "--ctx-len",
            "2",
            "--workers",
            "0",
            "--precision",
            "fp32",
            "--skip-plain",
            "--skip-check",
            "--inline",
        ]
    )
    text = capsys.readouterr().out
    assert "images / s" in text and "floor: encode_image on tensors" in text
    assert "plain open_clip" not in text


@pytest.mark.slow
def test_bench_scale_runs_one_and_two_processes(tiny_rn, tmp_path, capsys):
    bench = load_script("bench_scale")
    out = tmp_path / "result.json"
    results = bench.main(
        [
            "--model",
            tiny_rn,
            "--images",
            "4",
            "--image-size",
            "40",
            "--views",
            "1",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--classes",
            "3",
            "--prompts",
            "2",
            "--ctx-len",
            "4",
            "--json",
            "--save",
            str(out),
        ]
    )
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())
    for workload in ("encode", "predict"):
        one, two = results[workload]
        assert "error" not in one and "error" not in two, results[workload]
        assert (one["nproc"], one["world_size"], one["backend"]) == (1, 1, None)
        assert (two["nproc"], two["world_size"], two["backend"]) == (2, 2, "gloo")
        assert one["images"] == two["images"] == 4 and one["threads"] == two["threads"] == 1
        assert one["vs_fewest"] == 1.0
        assert two["vs_fewest"] == pytest.approx(two["images_per_s"] / one["images_per_s"])


def test_bench_scale_rejects_bad_process_counts():
    bench = load_script("bench_scale")
    with pytest.raises(SystemExit):
        bench.parse_args(["--nproc", "0,2"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--workloads", "encode,train"])


@pytest.mark.slow
def test_bench_learning_methods_and_base_to_new(tiny_rn, tmp_path, capsys):
    """One task, one shot, one seed, on the project's copy of the synthclip generator and the tiny model."""
    bench = load_script("bench_learning")
    assert "dualpt" in bench.METHODS
    common = [
        "--model",
        tiny_rn,
        "--synthclip",
        str(BENCHMARKS.parent / "examples" / "shapes"),
        "--tasks",
        "named",
        "--shots",
        "1",
        "--seeds",
        "1",
        "--recipes",
        "default",
        "--methods",
        "dualpt",
        "--test-per-class",
        "1",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--workdir",
        str(tmp_path / "work"),
    ]
    few = bench.main([*common, "--save", str(tmp_path / "few.json")])
    methods = [r["method"] for r in few["rows"]]
    assert methods == ["zero-shot", "descriptions", "linear probe", "dualpt --recipe default"]
    assert all((r["task"], r["seed"], r["shots"]) == ("named", 1, 1) and 0 <= r["top1"] <= 1 for r in few["rows"])
    b2n = bench.main([*common, "--base-to-new", "--save", str(tmp_path / "b2n.json")])
    rows = {r["method"]: r for r in b2n["rows"]}
    assert list(rows) == ["zero-shot --base-classes half", "dualpt --recipe default --base-classes half"]
    for row in rows.values():
        assert row["protocol"] == "base-to-new" and 0 <= row["base"] <= 1 and 0 <= row["new"] <= 1
        assert row["H"] == pytest.approx(2 * row["base"] * row["new"] / (row["base"] + row["new"] or 1))
    trained = tmp_path / "work" / "project-named-seed1-1shot-dualpt-default-b2n" / "prompts.safetensors"
    assert len(read_prompt_file(trained)[1].class_names) == 6  # trained on the first 6 of 12 classes
    capsys.readouterr()
    merged = bench.main(["--merge", str(tmp_path / "few.json"), str(tmp_path / "b2n.json")])
    assert len(merged["rows"]) == 6
    assert merged["summary"]["named|1|dualpt --recipe default --base-classes half"]["H"]["n"] == 1
    text = capsys.readouterr().out
    assert "| shots | zero-shot | descriptions | linear probe | dualpt --recipe default |" in text
    assert "named, base-to-new: base / new / H %" in text and "| zero-shot --base-classes half | 1 |" in text


def test_bench_learning_builds_every_task_from_the_shipped_generator():
    """Each task (partial, muted and shapes too) has distinct classes with phrases, from examples/shapes."""
    bench = load_script("bench_learning")
    gen = bench.load_generator(BENCHMARKS.parent / "examples" / "shapes")
    assert {"partial", "muted", "shapes"} <= set(bench.TASKS)
    for task in bench.TASKS:
        classes = bench.task_classes(gen, task)
        assert len({c["folder"] for c in classes}) == len(classes) >= 8, task
        assert all(c["phrases"] for c in classes), task
    partial = {c["folder"]: c["phrases"] for c in bench.task_classes(gen, "partial")}
    opaque = {c["folder"]: c["phrases"] for c in bench.task_classes(gen, "opaque")}
    assert all(set(partial[k]) < set(opaque[k]) for k in opaque)  # the colour phrases are gone


def test_bench_startup_times_two_versions_side_by_side(tmp_path, capsys):
    """bench_startup.py (and ab.py under it) on one version against itself: one pair, both medians, a ratio."""
    bench = load_script("bench_startup")
    src = str(BENCHMARKS.parent / "src")
    out = bench.main(
        ["--before", src, "--after", src, "--commands=--version", "--runs", "1", "--save", str(tmp_path / "s.json")]
    )
    result = out["--version"]
    assert result["runs"] == 1 and result["before"]["wall_s"] > 0 and result["after"]["cpu_s"] > 0
    assert result["speedup_wall"] > 0 and json.loads((tmp_path / "s.json").read_text())["--version"]["runs"] == 1
    assert "dualpt --version: before" in capsys.readouterr().out


def test_bench_crops_times_fresh_crops_against_cached_views(tiny_rn, capsys, monkeypatch):
    monkeypatch.setenv("DUALPT_CACHE", "unused")  # the script points it at its own temporary folders
    bench = load_script("bench_crops")
    out = bench.main(
        ["--model", tiny_rn, "--classes", "2", "--shots", "2", "--epochs", "2", "--prompts", "1", "--size", "40x30"]
    )
    assert [r["views"] for r in out["rows"]] == ["8 cached views", "fresh crop per epoch"]
    assert all(r["epoch_s"] > 0 and r["run_s"] >= r["before_first_epoch_s"] for r in out["rows"])
    assert "s / epoch" in capsys.readouterr().out


def test_bench_e2e_reads_prompt_tensors_and_plain_predict_writes_rows(tiny_rn, tmp_path):
    """bench_e2e.py's check of equal prompt files reads every tensor's bytes (not the metadata), and
    plain_predict.py (its plain fp32 open_clip process) writes one top-k row per image."""
    import subprocess
    import sys

    import torch
    from PIL import Image
    from safetensors.torch import save_file

    bench = load_script("bench_e2e")
    a = {"ctx": torch.arange(6.0).reshape(2, 3), "w": torch.ones(4, dtype=torch.bfloat16)}
    save_file(a, str(tmp_path / "a.safetensors"), metadata={"time": "1"})
    save_file(a, str(tmp_path / "b.safetensors"), metadata={"time": "2"})
    save_file({**a, "ctx": a["ctx"] + 1e-6}, str(tmp_path / "c.safetensors"), metadata={"time": "1"})
    read = bench.tensors_of(tmp_path / "a.safetensors")
    assert sorted(read) == ["ctx", "w"] and read["ctx"] == a["ctx"].numpy().tobytes()
    assert read == bench.tensors_of(tmp_path / "b.safetensors") != bench.tensors_of(tmp_path / "c.safetensors")

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (40, 30), colour).save(photos / f"{i}.jpg")
    out = tmp_path / "rows.jsonl"
    script = [sys.executable, str(BENCHMARKS / "plain_predict.py"), str(photos), "--model", tiny_rn]
    subprocess.run([*script, "--classes", "red,blue", "--batch-size", "2", "-o", str(out)], check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["0.jpg", "1.jpg", "2.jpg"]
    assert all(len(r["top"]) == 2 and math.isclose(sum(t["prob"] for t in r["top"]), 1.0, rel_tol=1e-5) for r in rows)


def test_bench_text_step_times_the_pooled_last_block_and_checks_its_bits(tiny_model, capsys):
    bench = load_script("bench_text_step")
    out = bench.main(
        ["--model", tiny_model, "--precision", "fp32", "--classes", "3", "--context", "4", "--rounds", "2"]
    )
    assert out["same_bits"] is True
    assert set(out["ms"]) == {"whole last block", "pooled rows"} and all(ms > 0 for ms in out["ms"].values())
    assert "same features and gradients: True" in capsys.readouterr().out


def test_bench_image_chunk_checks_every_chunk_size_bit_for_bit(tiny_rn, tmp_path):
    from dualpt_cli.clip import backbone

    bench = load_script("bench_image_chunk")
    kept = backbone.IMAGE_CHUNK_CPU
    try:
        out = bench.main(["--model", tiny_rn, "--images", "5", "--chunks", "5", "2", "--repeats", "1"])
    finally:
        backbone.IMAGE_CHUNK_CPU = kept  # the script sets the module's chunk size
    assert [r["chunk"] for r in out["rows"]] == [5, 2] and all(r["same"] for r in out["rows"])
