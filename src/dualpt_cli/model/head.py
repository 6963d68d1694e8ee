"""The final classifier: DUAL-PT logits blended with a zero-shot prior, and the guard that chooses it.

logits(x) = dual_weight * DUAL-PT(x) + prior_weight * logit_scale * cos(z(x), p_k)

- DUAL-PT(x) is the paper's Eq. 8 score from the local features and the learned prompts;
- z(x) is the global image feature and p_k the class's *prior* prototype: the mean of the class's normalised
  description features ("{name}, which has {phrase}."), so cos(z, p_k) here is the mean of the per-description
  cosines (Menon & Vondrick's ensemble; :func:`prior_features`) where it has descriptions, else the hand-made
  prompt "a photo of a {name}." (zero-shot CLIP).

The prior carries what the LLM said (and what CLIP knows from the name) into inference without an LLM:
its features are computed at training time and stored in the prompt file. ``--recipe paper`` uses
dual_weight 1, prior_weight 0: exactly the paper's classifier.

The guard (:func:`choose`) compares, on held-out images, the blends for a few prior weights with the two
training-free classifiers (zero-shot with names, the description ensemble) and keeps the best; a
collapsed run (loss near ln K, train accuracy at chance) never wins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from ..clip.backbone import Backbone
from .scores import global_logits

ZERO_SHOT_TEMPLATE = "a photo of a {}."
PRIOR_WEIGHTS = (0.0, 1.0, 2.0, 4.0)  # the blends the guard compares with enough held-out images
CHOOSE_WEIGHT_MIN_VAL = 8  # held-out images per class from which the guard also chooses the blend weight


def name_features(bb: Backbone, class_names: list[str], template: str = ZERO_SHOT_TEMPLATE) -> torch.Tensor:
    """(K, d) normalised text features of the hand-made prompt for each class (zero-shot CLIP)."""
    return bb.encode_texts([template.format(name) for name in class_names])


def prior_features(names: torch.Tensor, desc_mean: torch.Tensor, desc_has: torch.Tensor) -> torch.Tensor:
    """(K, d) prior prototypes: the description ensemble where a class has descriptions, else its name prompt.

    The ensemble's prototype is the mean of the *normalised* description features, not renormalised, so that
    ``<normalize(z), p_k>`` is the mean of the per-description cosines: Menon & Vondrick's score (the mean of
    the per-descriptor similarities), not the cosine with the renormalised mean feature (which weighs a class's
    phrases differently when they disagree). The name prompt is a unit vector.

    Args:
        names: (K, d) name-prompt features; desc_mean: (K, d) mean of normalised description features;
        desc_has: (K,) bool.
    """
    return torch.where(desc_has[:, None], desc_mean.to(names), F.normalize(names, dim=-1))


def blend_logits(
    dual: torch.Tensor | None,
    z: torch.Tensor,
    prior: torch.Tensor | None,
    logit_scale: float,
    dual_weight: float,
    prior_weight: float,
) -> torch.Tensor:
    """(B, K) final logits from DUAL-PT logits ``dual`` (B, K), global features ``z`` (B, d), ``prior`` (K, d).

    Each part is computed only when its weight is non-zero (``dual`` / ``prior`` may then be None); with both
    weights zero the logits are zeros (the prior part of a paper-recipe blend under the residual head).
    """
    parts = []
    if dual_weight:
        if dual is None:
            raise ValueError("blend_logits: a non-zero dual_weight needs the DUAL-PT logits")
        parts.append(dual_weight * dual.float())
    if prior_weight:
        if prior is None:
            raise ValueError("blend_logits: a non-zero prior_weight needs the prior")
        parts.append(prior_weight * global_logits(z, prior, logit_scale))
    if not parts:
        scored = prior if prior is not None else dual
        if scored is None:
            raise ValueError("blend_logits: both weights are zero and neither part is given (no classes)")
        K = scored.shape[0] if scored is prior else scored.shape[-1]
        return torch.zeros(len(z), K, device=z.device)
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


def collapsed(loss_img: float, train_acc: float, num_classes: int) -> bool:
    """Training made every class score alike: cross-entropy within 2% of ln K and accuracy at chance."""
    chance = 1.0 / num_classes
    return loss_img >= 0.98 * math.log(num_classes) and train_acc <= 1.5 * chance


def auto_val_shots(shots: int | None, smallest_class: int) -> int:
    """Validation images per class held out for the guard when ``--val-shots`` is not given.

    One per 4 shots (4 -> 1, 8 -> 2, 16 -> 4), none below 4 shots or with ``--shots all``, and never more than
    a quarter of the smallest class's images.
    """
    if shots is None or shots < 4:
        return 0
    return min(shots // 4, smallest_class // 4)


@dataclass
class Decision:
    """What the guard kept, and the held-out accuracies it compared."""

    classifier: str  # "trained" (DUAL-PT, possibly blended), "zero-shot" or "descriptions"
    dual_weight: float
    prior_weight: float
    prior: str  # which prototypes the prior uses: "descriptions" or "names"
    val_images: int = 0
    val_acc: dict[str, float] = field(default_factory=dict)  # candidate -> held-out accuracy
    collapsed: bool = False
    reason: str = ""

    @property
    def kept_acc(self) -> float | None:
        """Held-out accuracy of the kept classifier (None without held-out images)."""
        key = f"trained+prior{self.prior_weight:g}" if self.classifier == "trained" else self.classifier
        return self.val_acc.get(key)

    @property
    def gain(self) -> float | None:
        """Held-out accuracy gained over zero-shot CLIP with class names (None without held-out images)."""
        kept, zs = self.kept_acc, self.val_acc.get("zero-shot")
        return None if kept is None or zs is None else kept - zs

    def to_json(self) -> dict:
        return {**asdict(self), "kept_acc": self.kept_acc, "gain_over_zero_shot": self.gain}


@dataclass(frozen=True)
class HeldOut:
    """The held-out images the guard compares the classifiers on."""

    dual: torch.Tensor  # (V, K) DUAL-PT logits
    z: torch.Tensor  # (V, d) global image features
    labels: torch.Tensor  # (V,) true class indices


@dataclass(frozen=True)
class Prototypes:
    """What the blend and the two training-free classifiers score with: logit_scale * cos(z, prototype)."""

    names: torch.Tensor  # (K, d) the name prompts "a photo of a {name}." (zero-shot CLIP)
    prior: torch.Tensor  # (K, d) the prior: the description ensemble where a class has descriptions, else names
    has_descriptions: bool  # whether the prior uses descriptions (then a third candidate)
    logit_scale: float


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1).cpu() == labels.cpu()).float().mean()) if len(labels) else float("nan")


def choose(
    held_out: HeldOut | None,
    protos: Prototypes,
    default_weight: float,
    is_collapsed: bool,
    choose_weight: bool = False,
) -> Decision:
    """The classifier to save, from the ``held_out`` images' DUAL-PT logits and global features.

    The trained prompts blended with the prior at ``default_weight`` are compared with the two training-free
    classifiers (zero-shot with names, the description ensemble); a training-free one is kept only when it is
    strictly better on the held-out images (or training collapsed). With ``choose_weight`` the blend weight
    is also chosen among :data:`PRIOR_WEIGHTS` (ties to the one closest to ``default_weight``): worth it only
    with many held-out images, since picking among several candidates on a dozen images mostly picks noise.
    Without held-out images (None, or none in it) the blend uses ``default_weight``; a collapsed run then falls
    back to the prior.
    """
    has_descriptions = protos.has_descriptions
    kind = "descriptions" if has_descriptions else "names"
    fallback = "descriptions" if has_descriptions else "zero-shot"
    if held_out is None or len(held_out.labels) == 0:
        if is_collapsed:
            return Decision(
                fallback,
                0.0,
                1.0,
                kind,
                collapsed=True,
                reason="training collapsed (loss near ln K, chance accuracy); kept the prior",
            )
        return Decision("trained", 1.0, default_weight, kind, reason="no held-out images; default blend")
    dual, z, labels, scale = held_out.dual, held_out.z, held_out.labels, protos.logit_scale
    weights = sorted(PRIOR_WEIGHTS if choose_weight else (default_weight,), key=lambda w: abs(w - default_weight))
    scores = {f"trained+prior{w:g}": _acc(blend_logits(dual, z, protos.prior, scale, 1.0, w), labels) for w in weights}
    scores["zero-shot"] = _acc(blend_logits(None, z, protos.names, scale, 0.0, 1.0), labels)
    if has_descriptions:
        scores["descriptions"] = _acc(blend_logits(None, z, protos.prior, scale, 0.0, 1.0), labels)
    best_w = max(weights, key=lambda w: scores[f"trained+prior{w:g}"])  # max keeps the first of equals
    best_trained = scores[f"trained+prior{best_w:g}"]
    free = max(("zero-shot", "descriptions"), key=lambda k: scores.get(k, -1.0))
    if is_collapsed or scores[free] > best_trained:
        why = "training collapsed" if is_collapsed else "training did not beat it on held-out images"
        if free == "zero-shot":
            kept = Decision("zero-shot", 0.0, 1.0, "names", reason=f"{why}; kept zero-shot CLIP")
        else:
            kept = Decision("descriptions", 0.0, 1.0, kind, reason=f"{why}; kept the description ensemble")
    else:
        kept = Decision("trained", 1.0, best_w, kind, reason="not beaten on held-out images")
    return replace(kept, val_images=len(labels), val_acc=scores, collapsed=is_collapsed)
