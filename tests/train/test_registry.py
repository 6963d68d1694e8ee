"""The two registries of methods (train/registry.py, predict/scorers.py) and the vocabulary they are keyed by."""

from __future__ import annotations

import pytest

from dualpt_cli.core.vocab import METHOD_TITLES, METHODS
from dualpt_cli.errors import DataError
from dualpt_cli.predict.scorers import PREDICT_METHODS, predict_method
from dualpt_cli.train.config import TrainConfig
from dualpt_cli.train.method import TrainMethod
from dualpt_cli.train.registry import TRAIN_METHODS, resolve_recipe, train_method


def test_both_registries_cover_the_vocabulary():
    """Every --method trains (a learner or a fit) and scores its prompt file; titles name each; nothing else."""
    assert tuple(TRAIN_METHODS) == METHODS
    assert tuple(PREDICT_METHODS) == METHODS
    assert tuple(METHOD_TITLES) == METHODS
    for name in METHODS:
        assert train_method(name).name == predict_method(name).name == name


def test_a_method_is_a_learner_or_a_fit():
    with pytest.raises(ValueError, match="not neither"):
        TrainMethod("dualpt")
    with pytest.raises(ValueError, match="not both"):
        TrainMethod("dualpt", learner=TRAIN_METHODS["dualpt"].learner, fit=TRAIN_METHODS["zero-shot"].fit)


@pytest.mark.parametrize("name", METHODS)
def test_the_loop_trains_exactly_the_prompt_learners(name):
    """The prompt-tuning methods (a learner) and only they are trained by the loop and checkpointed for --resume;
    explain shows a plan only for the shared-prompt matching ones."""
    method = train_method(name)
    prompt_tuning = name in ("dualpt", "codualpt", "coop", "cocoop", "plot")
    assert method.closed_form is not prompt_tuning
    assert predict_method(name).local_matching is (name in ("dualpt", "plot"))
    assert method.global_scores is (name in ("coop", "cocoop"))
    if method.closed_form:
        with pytest.raises(DataError, match="nothing to resume"):
            resolve_recipe(TrainConfig(images="x", method=name, resume=True))
    else:
        assert resolve_recipe(TrainConfig(images="x", method=name, resume=True)).resume


@pytest.mark.parametrize("name", METHODS)
def test_resolved_settings_are_a_fixed_point(name):
    """A method's defaults and settings applied to a resolved config change nothing (run_config.json reruns)."""
    cfg = resolve_recipe(TrainConfig(images="x", method=name))
    assert resolve_recipe(cfg) == cfg


def test_training_free_settings():
    """zero-shot and descriptions encode one view, choose nothing; descriptions refuses --context none."""
    for name in ("zero-shot", "descriptions"):
        cfg = resolve_recipe(TrainConfig(images="x", method=name, aug_views=5, val_shots=2))
        assert (cfg.aug_views, cfg.val_shots, cfg.guard, cfg.head, cfg.prior_weight) == (1, 0, False, "none", 0.0)
    with pytest.raises(DataError, match="descriptions needs the project's descriptions; drop --context none"):
        resolve_recipe(TrainConfig(images="x", method="descriptions", context="none"))


@pytest.mark.parametrize("name", METHODS)
def test_only_lp_clip_fits_the_unaugmented_view(name):
    """The paper's linear probe (CoOp's LP-CLIP) is the one method that encodes only the un-augmented view."""
    for recipe in ("default", "paper"):
        cfg = resolve_recipe(TrainConfig(images="x", method=name, recipe=recipe))
        assert train_method(name).raw_view(cfg) is (name == "linear-probe" and recipe == "paper")
