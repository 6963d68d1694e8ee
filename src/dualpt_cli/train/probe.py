"""``--method linear-probe``: a linear classifier on the cached global features, fitted in seconds.

With a constraint (clap, balanced; the default recipe) it is CLAP's probe (jusiro/CLAP): initialised from the
zero-shot prototypes of :func:`clap_templates`, fitted by its published SGD on 20 augmented views per image
(:mod:`dualpt_cli.model.linear_probe`). Without one (``--probe-constraint none``, the paper recipe) it is CoOp's
LP-CLIP: L2 logistic regression on the un-augmented features, C searched on held-out images
(:mod:`dualpt_cli.model.lpclip`). The prompt file stores the probe's weights (and LP-CLIP's bias).
"""

from __future__ import annotations

from typing import Any

import torch

from ..clip.backbone import Backbone
from ..data.coop import find_layout, parse_dataset_spec
from ..errors import DataError, ProjectError
from ..model.defaults import CLAP_REPS
from ..model.head import Decision
from ..model.linear_probe import clap_multipliers, fit_clap, probe_logits
from ..model.lpclip import LPClipResult, search_lpclip
from .config import RECIPES, TrainConfig
from .method import FitInputs, Fitted, TrainMethod, closed_form_settings, no_resume
from .trainset import TrainData

# CoOp's seven ImageNet templates (CLAP averages them with the dataset's own template for ImageNet)
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def lp_clip(cfg: TrainConfig) -> bool:
    """Whether the run is CoOp's LP-CLIP: ``--method linear-probe`` without a constraint (by recipe: paper)."""
    constraint = cfg.probe_constraint or RECIPES[cfg.recipe]["probe_constraint"]
    return cfg.method == "linear-probe" and constraint == "none"


def prepare(cfg: TrainConfig) -> dict[str, Any]:
    """LP-CLIP searches C on min(shots, 4) held-out images per class, as CoOp, unless --val-shots is given."""
    return {"val_shots": min(cfg.shots or 4, 4)} if lp_clip(cfg) and cfg.val_shots is None else {}


def settings(cfg: TrainConfig) -> dict[str, Any]:
    """CLAP: 20 augmented views per image; LP-CLIP: the un-augmented features, C searched on held-out images."""
    no_resume(cfg)
    if not lp_clip(cfg):
        return closed_form_settings(cfg, aug_views=CLAP_REPS)
    if not cfg.val_shots:
        raise DataError(
            "--method linear-probe --probe-constraint none (LP-CLIP) searches C on held-out images; "
            "give --val-shots 1 or more (or leave it unset: min(shots, 4), as CoOp)"
        )
    return {"guard": False, "prior_weight": 0.0, "head": "none", "fresh_crops": False, "aug_views": 1}


def fit(inputs: FitInputs) -> Fitted:
    """LP-CLIP or CLAP's probe on the cached views."""
    cfg, cb, bb, z, labels = inputs.cfg, inputs.cb, inputs.bb, inputs.z, inputs.labels
    if lp_clip(cfg):
        fitted = fit_lp_clip(inputs.data)
        cb.info(
            f"LP-CLIP: C = {fitted.model.C:.3g} (held-out accuracy {fitted.val_acc:.1%} over {len(fitted.tried)} fits)"
        )
        return Fitted(
            Decision("trained", 1.0, 0.0, "names", reason="linear probe (LP-CLIP)"),
            fitted.model.logits(z),
            tensors={"probe_weights": fitted.model.weights, "probe_bias": fitted.model.bias},
            meta={"probe_normalize": False},
        )
    names, n_images = inputs.names, inputs.data.train.global_.shape[0]
    anchors = clap_anchors(bb, names, cfg.dataset)  # (K, d), un-normalised
    zs = probe_logits(z, anchors, bb.logit_scale)
    multipliers = clap_multipliers(zs, labels, len(names)) if cfg.probe_constraint == "clap" else None
    if multipliers is None:
        multipliers = torch.ones(len(names))
    probe = fit_clap(z, labels, anchors, bb.logit_scale, multipliers, n_images, seed=cfg.seed)
    cb.info(f"CLAP probe: {len(labels)} views of {n_images} images, constraint {cfg.probe_constraint}")
    return Fitted(
        Decision("trained", 1.0, 0.0, "names", reason="linear probe"),
        probe.logits(z),
        tensors={"probe_weights": probe.weights},
        meta={"probe_normalize": probe.normalize_weights},
    )


def clap_templates(dataset: str | None) -> list[str]:
    """CLAP's templates: the CoOp dataset's own (ImageNet: the seven select ones too); "a photo of a {}." for an
    ImageFolder."""
    if not dataset:
        return ["a photo of a {}."]
    layout = find_layout(parse_dataset_spec(dataset))
    return [*IMAGENET_TEMPLATES_SELECT, layout.template] if layout.name == "ImageNet" else [layout.template]


@torch.no_grad()
def clap_anchors(bb: Backbone, names: list[str], dataset: str | None) -> torch.Tensor:
    """(K, d) CLAP's zero-shot prototypes: per class the mean over :func:`clap_templates` of the *un-normalised*
    text features (its ``_get_base_text_features``)."""
    templates = clap_templates(dataset)
    tokens = bb.tokenize([t.format(n) for n in names for t in templates])
    feats = bb.encode_text_embeds(bb.token_embeds(tokens), bb.eot_positions(tokens))  # (K * T, d)
    return feats.view(len(names), len(templates), -1).mean(1)


def fit_lp_clip(data: TrainData) -> LPClipResult:
    """CoOp's LP-CLIP on the un-augmented training images, C searched on the held-out ones."""
    if data.val is None or data.val_labels is None:
        raise ProjectError("LP-CLIP needs held-out images to search C; give --val-shots 1 or more")
    train_x = data.train.global_[:, 0].float()  # (I, d) raw features of the un-augmented view
    val_x = data.val.global_[:, 0].float()
    return search_lpclip(train_x, data.train_labels, val_x, data.val_labels, len(data.classes))


LINEAR_PROBE = TrainMethod("linear-probe", fit=fit, prepare=prepare, settings=settings, raw_view=lp_clip)
