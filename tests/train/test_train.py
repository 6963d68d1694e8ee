from __future__ import annotations

import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.crops import crop_pixels, draw_crops
from dualpt_cli.clip.load import load_backbone
from dualpt_cli.clip.spec import ModelSpec
from dualpt_cli.data.images import load_image
from dualpt_cli.model.prompts import PromptLearner
from dualpt_cli.promptfile.io import load_prompt_file
from dualpt_cli.train.loop import Callbacks, TrainConfig, epochs_for_shots, lr_at, run_training
from dualpt_cli.train.objective import matcher_for
from dualpt_cli.train.registry import resolve_recipe
from dualpt_cli.train.schedule import steps_per_epoch
from imagegen import make_image_folder
from trained import tiny_config

runner = CliRunner()


_cfg = partial(tiny_config, epochs=3)


def test_train_cli_end_to_end(images, tiny_rn, tmp_path):
    assert images == tmp_path / "images"  # the test runs in tmp_path: pass the folder relative, as users do
    result = runner.invoke(
        app,
        [
            "train",
            "images",
            "--shots",
            "2",
            "--model",
            tiny_rn,
            "--epochs",
            "6",
            "--lr",
            "0.05",
            "--precision",
            "fp32",
            "--project",
            "proj",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 6
    log = [json.loads(line) for line in (tmp_path / "proj" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and log[-1]["loss"] < log[0]["loss"]  # the loss falls
    tensors, meta = load_prompt_file(tmp_path / "proj" / "prompts.safetensors")
    assert tensors["ctx"].shape == (4, 4, 32)  # the default recipe: 4 context vectors ("a photo of a")
    assert tensors["class_features"].shape == (3, 4, 32)
    assert_close(tensors["class_features"].norm(dim=-1), torch.ones(3, 4))
    assert meta["class_folders"] == ["blue", "green", "red"]  # sorted folder names, as the class list is
    assert meta["n_prompts"] == 4 and meta["model"].startswith("local-dir:") and meta["beta"] == 0.0
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert all(len(v) == 2 for v in split["train"].values())
    config = json.loads((tmp_path / "proj" / "run_config.json").read_text())
    assert config["epochs"] == 6 and config["seed"] == 1


def test_same_seed_gives_identical_prompts(images, tiny_vit, tmp_path):
    a = run_training(_cfg(images, tiny_vit, tmp_path / "a"))
    b = run_training(_cfg(images, tiny_vit, tmp_path / "b"))
    ta, _ = load_prompt_file(a.prompt_file)
    tb, _ = load_prompt_file(b.prompt_file)
    assert torch.equal(ta["ctx"], tb["ctx"]) and torch.equal(ta["class_features"], tb["class_features"])
    c = run_training(_cfg(images, tiny_vit, tmp_path / "c", seed=2))
    assert not torch.equal(ta["ctx"], load_prompt_file(c.prompt_file)[0]["ctx"])


class _StopAfter(Callbacks):
    def __init__(self, epoch: int):
        self.stop = epoch

    def epoch_done(self, record):
        if record["epoch"] == self.stop:
            raise KeyboardInterrupt


def test_resume_equals_uninterrupted(images, tiny_rn, tmp_path):
    full = run_training(_cfg(images, tiny_rn, tmp_path / "full", epochs=4, val_shots=1))
    cfg = _cfg(images, tiny_rn, tmp_path / "cut", epochs=4, val_shots=1)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, _StopAfter(2))
    assert not (tmp_path / "cut" / "prompts.safetensors").exists()
    with open(tmp_path / "cut" / "train_log.jsonl", "a") as fh:  # epoch 3 logged, interrupted before its checkpoint
        fh.write('{"epoch": 3, "loss": 1.0}\n{"epoch": 4, "lo')
    cfg.resume = True
    resumed = run_training(cfg)
    t_full, m_full = load_prompt_file(full.prompt_file)
    t_res, m_res = load_prompt_file(resumed.prompt_file)
    assert torch.equal(t_full["ctx"], t_res["ctx"])
    assert m_full["best_epoch"] == m_res["best_epoch"]
    log = (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4]


def test_resume_with_changed_options_is_refused(images, tiny_rn, tmp_path):
    run_training(_cfg(images, tiny_rn, tmp_path / "p", epochs=1))
    result = runner.invoke(
        app,
        [
            "train",
            str(images),
            "--shots",
            "2",
            "--model",
            tiny_rn,
            "--epochs",
            "1",
            "--alpha",
            "0.5",
            "--project",
            str(tmp_path / "p"),
            "--resume",
        ],
    )
    assert result.exit_code == 2 and "alpha was 0.2" in result.output


def test_resume_without_checkpoint(images, tiny_rn):
    result = runner.invoke(app, ["train", str(images), "--model", tiny_rn, "--resume"])
    assert result.exit_code == 2 and "no checkpoint" in result.output


def test_corrupt_image_is_skipped(images, tiny_rn, tmp_path):
    (images / "red" / "red_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "green" / "empty.jpg").write_bytes(b"")
    result = runner.invoke(
        app,
        [
            "train",
            str(images),
            "--shots",
            "all",
            "--model",
            tiny_rn,
            "--epochs",
            "1",
            "--precision",
            "fp32",
            "--project",
            "p",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "red_broken.png" in result.output and "empty.jpg" in result.output


class _Steps(Callbacks):
    """Records the steps announced per epoch and the training accuracy after each step."""

    def __init__(self):
        self.steps: list[int] = []
        self.ticks: list[dict] = []

    def epoch(self, epoch, total, steps):
        self.steps.append(steps)
        return self.ticks.append


def test_one_shot_five_classes_keeps_partial_batch(tmp_path, tiny_rn):
    images = make_image_folder(tmp_path / "five", classes=["red", "green", "blue", "yellow", "purple"], per_class=1)
    steps = _Steps()
    result = run_training(_cfg(images, tiny_rn, tmp_path / "p", shots=1, epochs=2, batch_size=32), steps)
    assert result.epochs == 2 and steps.steps == [1, 1] and len(steps.ticks) == 2  # one (partial) batch an epoch
    # the accuracy counts all 5 images of that batch: a multiple of 1/5
    for acc in [t["acc"] for t in steps.ticks] + [result.train_acc]:
        assert math.isfinite(acc) and abs(5 * acc - round(5 * acc)) < 1e-9


def test_descriptions_are_used(images, tiny_rn, tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    doc = {
        "format": "dualpt-descriptions/1",
        "classes": [
            {"folder": f, "name": f"{f} thing", "phrases": [f"{f} colour", "round shape"], "status": "ok"}
            for f in ("blue", "green", "red")
        ],
    }
    (project / "descriptions.json").write_text(json.dumps(doc))
    result = run_training(_cfg(images, tiny_rn, project, epochs=2))
    _, meta = load_prompt_file(result.prompt_file)
    assert meta["beta"] == 0.2 and meta["llm_context"]
    assert set(meta["class_names"]) == {"blue thing", "green thing", "red thing"}
    log = [json.loads(line) for line in (project / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["loss_llm"] > 0


def test_llm_loss_choice_changes_the_loss(images, tiny_rn, tmp_path):
    """cosine, wd and ce give different L_LLM values and updates; the image loss of the first step is the same."""
    doc = {
        "format": "dualpt-descriptions/1",
        "classes": [
            {"folder": f, "name": f, "phrases": [f"{f} colour", "round shape"], "status": "ok"}
            for f in ("blue", "green", "red")
        ],
    }
    records, ctx = {}, {}
    for llm_loss in ("cosine", "wd", "ce"):
        project = tmp_path / llm_loss
        project.mkdir()
        (project / "descriptions.json").write_text(json.dumps(doc))
        # one epoch of one batch (6 images): the same data and start for every choice
        result = run_training(_cfg(images, tiny_rn, project, epochs=1, batch_size=8, llm_loss=llm_loss))
        (records[llm_loss],) = [json.loads(line) for line in (project / "train_log.jsonl").read_text().splitlines()]
        ctx[llm_loss] = load_prompt_file(result.prompt_file)[0]["ctx"]
    for r in records.values():
        assert r["loss_llm"] > 0 and math.isfinite(r["loss_llm"])
        assert r["loss"] == pytest.approx(0.2 * r["loss_llm"] + 0.8 * r["loss_img"], rel=1e-6)  # beta = 0.2
        assert r["loss_img"] == pytest.approx(records["cosine"]["loss_img"], rel=1e-6)
    for a, b in (("cosine", "wd"), ("cosine", "ce"), ("wd", "ce")):
        assert abs(records[a]["loss_llm"] - records[b]["loss_llm"]) > 1e-4, (a, b, records)
        assert not torch.equal(ctx[a], ctx[b]), (a, b)  # the choice reaches the gradient


def test_class_specific_and_ctx_init(images, tiny_rn, tmp_path):
    result = run_training(
        _cfg(
            images,
            tiny_rn,
            tmp_path / "p",
            epochs=1,
            class_specific=True,
            ctx_init="a photo of a",
            n_prompts=2,
            n_ctx=6,
        )
    )
    tensors, meta = load_prompt_file(result.prompt_file)
    assert tensors["ctx"].shape == (3, 2, 6, 32) and meta["class_specific"]


def test_feature_cache_is_reused(images, tiny_rn, tmp_path, monkeypatch):
    run_training(_cfg(images, tiny_rn, tmp_path / "p", epochs=1))
    from dualpt_cli.clip.backbone import Backbone

    def boom(self, x):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(Backbone, "encode_images", boom)
    run_training(_cfg(images, tiny_rn, tmp_path / "p", epochs=1))


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty_class", [], "no images"),
        ("no_classes", [], "no class sub-folders"),
        ("missing", [], "does not exist"),
        ("ok", ["--shots", "0"], "--shots must be a positive number or 'all', got 0"),
        ("ok", ["--shots", "many"], "expected a number"),
        ("ok", ["--alpha", "2"], "--alpha must be in [0, 1]"),
        ("ok", ["--llm-loss", "kl"], "is not one of 'cosine'"),
        ("ok", ["--context", "llm"], "no descriptions"),
        ("ok", ["--ctx-init", "a b c d e f g h i j k l m n o p q r s"], "--ctx-init"),
    ],
)
def test_bad_input_clean_errors(tmp_path, tiny_rn, setup, args, message):
    root = tmp_path / "data"
    if setup != "missing":
        make_image_folder(root, per_class=2)
    if setup == "empty_class":
        (root / "zebra").mkdir()
    if setup == "no_classes":
        for sub in root.iterdir():
            for f in sub.iterdir():
                f.unlink()
            sub.rmdir()
    result = runner.invoke(app, ["train", str(root), "--model", tiny_rn, "--epochs", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_shots_larger_than_classes_warns(images, tiny_rn):
    result = runner.invoke(app, ["train", str(images), "--shots", "50", "--model", tiny_rn, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "has only 4 training image(s) for --shots 50" in result.output  # every image trains (no guard)
    assert "holding out" not in result.output


def dassl_lrs(base: float, max_epoch: int, warmup: int, warmup_lr: float) -> list[float]:
    """CoOp's schedule built from torch's own scheduler, as Dassl's ConstantWarmupScheduler wraps it: the
    warm-up epochs at ``warmup_lr``, then CosineAnnealingLR(T_max=max_epoch) from its step 0, stepped once
    per epoch after the warm-up."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(probe, T_max=max_epoch)
    lrs = [warmup_lr] * warmup
    for _ in range(max_epoch - warmup):
        lrs.append(cosine.get_last_lr()[0])
        probe.step()
        cosine.step()
    return lrs


def test_schedule():
    assert [epochs_for_shots(s) for s in (1, 2, 4, 8, 16, None)] == [50, 100, 100, 200, 200, 200]
    cfg = TrainConfig(images=".")
    for total in (2, 3, 10, 50, 200):
        got = [lr_at(e, cfg, total) for e in range(total)]
        assert got == pytest.approx(dassl_lrs(0.002, total, 1, 1e-5), rel=1e-9)
    assert lr_at(1, cfg, 10) == pytest.approx(0.002)  # the full rate right after the warm-up
    assert lr_at(2, cfg, 10) == pytest.approx(0.001 * (1 + math.cos(math.pi / 10)))  # (e - 1) / E, not / (E - 1)
    assert lr_at(0, cfg, 1) == pytest.approx(0.002)  # --epochs 1 trains at --lr, not only the warm-up rate
    assert lr_at(9, cfg, 10) < lr_at(5, cfg, 10) < lr_at(1, cfg, 10)


def test_steps_per_epoch_drops_the_last_partial_batch_as_dassl():
    assert [steps_per_epoch(n, 4, True) for n in (3, 4, 9, 12)] == [1, 1, 2, 3]  # fewer than a batch: one step
    assert [steps_per_epoch(n, 4, False) for n in (3, 4, 9, 12)] == [1, 1, 3, 3]


def test_paper_recipe_epochs_equal_a_plain_loop(tmp_path, tiny_rn):
    """Three --recipe paper epochs equal a loop written out here: per epoch a generator seeded by (seed, epoch)
    gives the order, then every image's fresh crop; the last partial batch is dropped; the learning rate follows
    torch's CosineAnnealingLR inside Dassl's constant warm-up; SGD with momentum and weight decay."""
    images = make_image_folder(tmp_path / "images", per_class=4)
    project = tmp_path / "p"
    cfg = TrainConfig(
        images=str(images), project=str(project), recipe="paper", shots=3, epochs=3, batch_size=4, lr=0.5,
        n_prompts=2, n_ctx=3, model=tiny_rn, pretrained="", precision="fp32", device="cpu", seed=5,
    )  # fmt: skip
    result = run_training(cfg)
    trained, meta = load_prompt_file(result.prompt_file)
    assert meta["n_ctx"] == 3

    bb = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="fp32")
    split = json.loads((project / "split.json").read_text())
    paths = [images / rel for rels in split["train"].values() for rel in rels]
    labels = torch.tensor([k for k, rels in enumerate(split["train"].values()) for _ in rels])
    decoded = [load_image(p) for p in paths]
    names = [c["name"] for c in split["classes"]]
    learner = PromptLearner(bb, names, 2, 3, "", False, 5)  # the run's random context (seeded)
    assert (trained["ctx"] - learner.ctx).abs().max() > 1e-3  # the run moved it
    matcher = matcher_for(resolve_recipe(cfg), bb)
    optimizer = torch.optim.SGD([learner.ctx], lr=0.5, momentum=0.9, weight_decay=5e-4)
    n, batch = len(paths), 4
    assert n == 9  # two full batches; the ninth image is dropped each epoch
    for epoch, lr in enumerate(dassl_lrs(0.5, 3, 1, 1e-5)):
        for group in optimizer.param_groups:
            group["lr"] = lr
        gen = torch.Generator().manual_seed(5 * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen)
        crops = draw_crops([(im.height, im.width) for im in decoded], (0.08, 1.0), gen)
        for step in range(n // batch):
            idx = order[step * batch : (step + 1) * batch].tolist()
            z, Z = bb.encode_images(torch.stack([crop_pixels(bb, decoded[i], crops[i]) for i in idx]))
            loss = F.cross_entropy(matcher.logits(Z, learner()), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert_close(trained["ctx"], learner.ctx.detach(), rtol=1e-5, atol=1e-6)


def test_profile_reports_phases(images, tiny_rn, tmp_path):
    result = run_training(_cfg(images, tiny_rn, tmp_path / "p", epochs=1, profile=True))
    assert {"text", "matching", "backward", "optimizer"} <= set(result.profile)


def test_ctrl_c_keeps_checkpoint_and_resume_finishes(images, tiny_rn, monkeypatch):
    from dualpt_cli.ui import train as train_ui

    def interrupt(self, record):
        raise KeyboardInterrupt

    args = ["train", str(images), "--shots", "2", "--model", tiny_rn, "--epochs", "3", "--precision", "fp32"]
    with monkeypatch.context() as m:
        m.setattr(train_ui.RichCallbacks, "epoch_done", interrupt)
        result = runner.invoke(app, args)
    assert result.exit_code == 130 and "--resume" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 1 of 3" in result.output


def _l_llm_written_out(W: torch.Tensor, H: list[torch.Tensor]) -> float:
    """Eq. 5 by hand: (1/K) sum_k (1 - cos(mean_j w_kj, mean_e h_ke)), over the classes that have phrases."""
    terms = []
    for w_k, h_k in zip(W.tolist(), [h.tolist() for h in H]):
        if not h_k:
            continue
        a = [sum(col) / len(w_k) for col in zip(*w_k)]  # mean_j w_kj
        b = [sum(col) / len(h_k) for col in zip(*h_k)]  # mean_e h_ke
        dot = sum(x * y for x, y in zip(a, b))
        terms.append(1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("described", [(True, True, True), (True, False, True)])
def test_l_llm_value(tiny_rn, described):
    """The cosine L_LLM of a step equals Eq. 5 written out, with h_ke = g("{name}, which has {phrase}.")."""
    from dualpt_cli.clip.load import ModelSpec, load_backbone
    from dualpt_cli.model.matcher import Matcher
    from dualpt_cli.model.prompts import description_features
    from dualpt_cli.train.loop import Objective

    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    names = ["red circle", "green square", "blue"]
    phrases = [["round shape", "red colour"], ["four corners"], ["blue colour", "no corners", "a smooth edge"]]
    phrases = [p if keep else [] for p, keep in zip(phrases, described)]
    mean, has, sets = description_features(bb, names, phrases)
    # h_ke by hand: open_clip's own text encoder on the descriptor texts, normalised
    texts = [[f"{n}, which has {p}." for p in ps] for n, ps in zip(names, phrases)]
    with torch.no_grad():
        H = [
            torch.nn.functional.normalize(bb.model.encode_text(bb.tokenize(t)), dim=-1) if t else torch.zeros(0, 32)
            for t in texts
        ]
    W = torch.nn.functional.normalize(torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    objective = Objective(
        matcher=Matcher(bb.logit_scale), beta=0.2, llm_loss="cosine", desc_mean=mean, desc_has=has, desc_sets=sets
    )
    got = objective.llm_loss_value(W, logits=torch.zeros(1, 3), z_global=torch.zeros(1, 32))
    assert has.tolist() == list(described)
    assert float(got) == pytest.approx(_l_llm_written_out(W, H), rel=1e-5)


def test_context_none_keeps_the_class_lists_names(images, tiny_rn, tmp_path):
    """--context none drops the LLM phrases, not the readable names the user's class list gave the folders."""
    (tmp_path / "classes.txt").write_text("red: wug\ngreen: dax\nblue: blicket\n")
    described = runner.invoke(app, ["describe", "classes.txt", "--provider", "none", "-p", "proj"])
    assert described.exit_code == 0, described.output
    for context in ("auto", "none"):
        run_training(_cfg(images, tiny_rn, tmp_path / "proj", epochs=1, context=context))
        _, meta = load_prompt_file(tmp_path / "proj" / "prompts.safetensors")
        assert meta["class_folders"] == ["blue", "green", "red"]
        assert meta["class_names"] == ["blicket", "dax", "wug"], context


class _Warnings(Callbacks):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@pytest.mark.parametrize("stored", ["empty", "failed"])
def test_train_warns_when_the_descriptions_are_empty_or_failed(images, tiny_rn, tmp_path, stored):
    """A descriptions.json without phrases (an old failed describe run) trains without LLM context: say so."""
    from dualpt_cli.data.descriptions import FORMAT

    failed = {"phrases": [], "status": "failed", "error": "server error 503", "provenance": {}}
    entries = [] if stored == "empty" else [{"folder": c, "name": c, **failed} for c in ("red", "green")]
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "descriptions.json").write_text(json.dumps({"format": FORMAT, "classes": entries}))
    cb = _Warnings()
    run_training(_cfg(images, tiny_rn, tmp_path / "proj", epochs=1), cb)
    expected = "describes no class" if stored == "empty" else "2 of 2 class(es) in"
    assert any(expected in w and "dualpt describe again" in w for w in cb.warnings), cb.warnings


def test_solver_settings_that_no_prompt_file_could_keep_are_refused(tmp_path):
    """tol 0 (or no iterations) once trained and then wrote a prompt file that PromptMeta refuses to read."""
    from dualpt_cli.errors import DataError

    for bad, message in [({"tol": 0.0}, "tol .* must be > 0"), ({"inner_iters": 0}, "inner_iters must be >= 1")]:
        with pytest.raises(DataError, match=message):
            TrainConfig(images=str(tmp_path), **bad)


@pytest.mark.parametrize(
    ("dataset", "batch", "epochs"),
    [
        (None, 128, None),
        ("coop:/data/oxford_flowers", 32, None),
        ("coop:/data/fgvc_aircraft", 32, None),
        ("coop:/data/StanfordCars", 32, None),
        ("coop:/data/dtd", 128, None),
        ("coop:/data/imagenet", 128, 50),
        ("coop:/data/not-a-coop-set", 128, None),
    ],
)
def test_plot_paper_recipe_uses_plots_batch_and_imagenet_epochs(dataset, batch, epochs):
    """PLOT's configs: batch 128, 32 on Flowers102, FGVCAircraft and StanfordCars; ImageNet 50 epochs."""
    plot = resolve_recipe(TrainConfig(images="", dataset=dataset, method="plot", recipe="paper"))
    assert (plot.batch_size, plot.epochs) == (batch, epochs)
    given = resolve_recipe(TrainConfig(images="", dataset=dataset, method="plot", recipe="paper", batch_size=8))
    assert given.batch_size == 8  # an explicit --batch-size wins
    for method, recipe in (("plot", "default"), ("dualpt", "paper"), ("coop", "paper")):
        other = resolve_recipe(TrainConfig(images="", dataset=dataset, method=method, recipe=recipe))
        assert (other.batch_size, other.epochs) == (32, None)
