"""``--method tip-adapter`` and ``tip-adapter-f`` (Zhang et al., ECCV 2022): the cache model of the shots built from
their cached features, alpha and beta searched on the shots (:mod:`dualpt_cli.model.tip_adapter`); -F fine-tunes
the cache keys for 20 short epochs over the cache. The prompt file stores the cache (keys, values) and alpha, beta;
its zero-shot term is the prior at weight 1.
"""

from __future__ import annotations

from typing import Any

from ..model.head import Decision
from ..model.tip_adapter import FINE_TUNE_EPOCHS, fit_tip_adapter, tip_logits
from .config import TrainConfig
from .method import FitInputs, Fitted, TrainMethod, closed_form_settings, no_resume

TIP_AUG_VIEWS = 10  # Tip-Adapter's augment_epoch: the cache keys average 10 augmented views per shot


def settings(cfg: TrainConfig) -> dict[str, Any]:
    """Its 10 augmented views per shot for the cache keys, unless --aug-views is given."""
    no_resume(cfg, "fits in seconds on the cached features")
    given = cfg.aug_views != TrainConfig.__dataclass_fields__["aug_views"].default
    return closed_form_settings(cfg, **({} if given else {"aug_views": TIP_AUG_VIEWS}))


def fit(inputs: FitInputs) -> Fitted:
    """Tip-Adapter: the cache of the shots, alpha and beta searched on the shots."""
    return fit_cache(inputs, 0)


def fit_tuned(inputs: FitInputs) -> Fitted:
    """Tip-Adapter-F: the cache with its keys fine-tuned (20 epochs from the defaults, or --epochs)."""
    return fit_cache(inputs, inputs.cfg.epochs or FINE_TUNE_EPOCHS)


def fit_cache(inputs: FitInputs, epochs: int) -> Fitted:
    """The cache of the shots, its keys fine-tuned for ``epochs`` (0: none), alpha and beta searched on the shots."""
    cfg, bb, data, text = inputs.cfg, inputs.bb, inputs.data, inputs.text
    n_images, n_views = data.train.global_.shape[:2]
    views = data.train.global_.to(bb.device)  # (images, views, d)
    tip = fit_tip_adapter(
        views, data.train_labels.to(bb.device), text, bb.logit_scale, len(inputs.names), epochs, cfg.seed
    )
    tuned = f", keys fine-tuned for {epochs} epochs" if epochs else ""
    inputs.cb.info(
        f"{cfg.method}: cache of {n_images} shots x {n_views} views{tuned}; alpha {tip.alpha:.3g}, "
        f"beta {tip.beta:.3g} (leave-one-out accuracy of the shots {tip.search_acc:.1%})"
    )
    return Fitted(
        Decision("trained", 1.0, 1.0, "names", reason="Tip-Adapter cache model + zero-shot CLIP"),
        tip_logits(inputs.z, tip, text, bb.logit_scale),
        prior=text,  # the zero-shot term of the logits, blended at weight 1
        tensors={"tip_keys": tip.keys, "tip_values": tip.values},
        meta={"tip_alpha": tip.alpha, "tip_beta": tip.beta},
        epochs=epochs,
    )


# RandomResizedCrop(scale=(0.5, 1)) for the cache views; -F: train_epoch 20 of the keys, also base-to-new
TIP_ADAPTER = TrainMethod("tip-adapter", fit=fit, defaults={"crop_scale": 0.5}, settings=settings)
TIP_ADAPTER_F = TrainMethod(
    "tip-adapter-f", fit=fit_tuned, defaults={"crop_scale": 0.5, "epochs": 20}, settings=settings
)
