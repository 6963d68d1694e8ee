"""What a classifier keeps of its prompt file: the stored context (one prompt learner per load) and the class
features, priors, probe weights and Tip-Adapter cache it gives for trained and new classes, with the checks that
the CLIP is the trained one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from ..clip.backbone import Backbone
from ..data.classes import ClassEntry, find_trained
from ..errors import DataError, ModelLoadError, PromptFileError, first_names
from ..model.head import name_features
from ..model.prompts import PromptLearner
from ..model.tip_adapter import TipCache
from ..promptfile.meta import PromptMeta

FINGERPRINT_CLASSES = 4  # trained classes re-encoded to check that an overriding --model is the trained one


class StoredContext:
    """The prompt file's learned context, turned into class prompt features of any class names.

    One :class:`PromptLearner` holds the context; it is built on first use and given new class names after.
    """

    def __init__(self, bb: Backbone, ctx: torch.Tensor, meta: PromptMeta):
        self.bb, self.ctx, self.meta = bb, ctx, meta
        self._learner: PromptLearner | None = None

    def encode(self, names: list[str], texts: list[list[str]] | None = None) -> torch.Tensor:
        """(K, M, d) normalised features of ``names`` (``texts``: each prompt's text after the context)."""
        if self._learner is None:
            self._learner = self._build(names, texts)
        else:
            self._learner.set_classes(names, texts)
        with torch.no_grad():
            features: torch.Tensor = self._learner()
            return features.float()

    def _build(self, names: list[str], texts: list[list[str]] | None) -> PromptLearner:
        m = self.meta
        ctx = self.ctx[: len(names)] if m.class_specific else self.ctx  # class-specific: one context per class
        learner = PromptLearner(
            self.bb,
            names,
            m.n_prompts,
            m.n_ctx,
            class_specific=m.class_specific,
            class_texts=texts,
            placeholder=m.placeholder,
            name_template=m.name_template,
        )
        if tuple(ctx.shape) != tuple(learner.ctx.shape):
            raise PromptFileError(
                f"the prompt file's context has shape {tuple(ctx.shape)}, expected "
                f"{tuple(learner.ctx.shape)} for this model; re-create it with dualpt train"
            )
        with torch.no_grad():
            learner.ctx.copy_(ctx.to(learner.ctx.device))
        learner.eval()
        return learner


def check_same_weights(context: StoredContext, tensors: dict[str, torch.Tensor]) -> None:
    """An overriding --model must reproduce a few stored class features from the stored context."""
    meta = context.meta
    known = meta.classes
    n = min(FINGERPRINT_CLASSES, len(known))
    texts = meta.prompt_texts
    again = context.encode([c.name for c in known[:n]], texts[:n] if texts else None)
    cos = F.cosine_similarity(again, tensors["class_features"][:n].to(again.device), dim=-1).min()
    if float(cos) < 0.99:
        raise ModelLoadError(
            f"model {context.bb.spec.label} has the right shape but different weights from the one "
            f"{meta.model} the prompt file was trained with (text features disagree); use "
            "the same weights"
        )


def class_features(
    context: StoredContext, tensors: dict[str, torch.Tensor], known: list[ClassEntry], classes: list[ClassEntry]
) -> tuple[torch.Tensor, list[bool]]:
    """(K, M, d) features for ``classes``: stored ones for trained classes, encoded ones for new classes."""
    stored = tensors["class_features"].to(context.bb.device)  # (K_trained, M, d)
    index = [find_trained(c, known) for c in classes]
    new = [c for c, i in zip(classes, index) if i is None]
    fresh: Iterator[torch.Tensor] = iter(encode_new_classes(context, [c.name for c in new]) if new else [])
    W = torch.stack([stored[i] if i is not None else next(fresh) for i in index])  # (K, M, d)
    return W, [i is not None for i in index]


def class_priors(
    bb: Backbone, tensors: dict[str, torch.Tensor], meta: PromptMeta, known: list[ClassEntry], classes: list[ClassEntry]
) -> torch.Tensor | None:
    """(K, d) prior prototypes for ``classes``: stored for trained classes, the name prompt for new ones."""
    stored = tensors.get("prior_features")
    if stored is None:
        return None
    index, new = trained_index(known, classes)
    fresh: Iterator[torch.Tensor] = iter(name_features(bb, new, meta.zero_shot_template) if new else [])
    return torch.stack([stored[i].to(bb.device) if i is not None else next(fresh) for i in index])  # (K, d)


def residual_weights(
    bb: Backbone, tensors: dict[str, torch.Tensor], known: list[ClassEntry], classes: list[ClassEntry]
) -> torch.Tensor | None:
    """(K, d) residual head weights for ``classes`` (None without a head): fitted for trained classes, zero for
    new ones (no shots moved them: they score by the blend alone)."""
    stored = tensors.get("residual_weights")
    if stored is None:
        return None
    index = [find_trained(c, known) for c in classes]
    zero = torch.zeros(stored.shape[1], device=bb.device)
    return torch.stack([stored[i].to(bb.device) if i is not None else zero for i in index])  # (K, d)


def trained_index(known: list[ClassEntry], classes: list[ClassEntry]) -> tuple[list[int | None], list[str]]:
    """Each class's row in the prompt file (None: not trained), and the names of the classes without one."""
    index = [find_trained(c, known) for c in classes]
    return index, [c.name for c, i in zip(classes, index) if i is None]


def probe_weights(
    bb: Backbone,
    tensors: dict[str, torch.Tensor],
    meta: PromptMeta,
    known: list[ClassEntry],
    classes: list[ClassEntry],
    path: Path,
) -> torch.Tensor:
    """(K, d) linear-probe weights for ``classes``: fitted for trained classes, the zero-shot name prompt (the
    probe's starting point) for new ones."""
    stored = tensors.get("probe_weights")
    if stored is None or tuple(stored.shape) != (len(known), meta.embed_dim):
        raise PromptFileError(
            f"{path} is a linear-probe prompt file without probe_weights of shape "
            f"({len(known)}, {meta.embed_dim}); re-create it with dualpt train --method linear-probe"
        )
    index, new = trained_index(known, classes)
    fresh: Iterator[torch.Tensor] = iter(name_features(bb, new, meta.zero_shot_template) if new else [])
    return torch.stack([stored[i].to(bb.device) if i is not None else next(fresh) for i in index])  # (K, d)


def probe_bias(
    tensors: dict[str, torch.Tensor], known: list[ClassEntry], classes: list[ClassEntry], path: Path
) -> torch.Tensor | None:
    """(K,) the LP-CLIP bias for ``classes`` (None for the cosine probes, which have none). LP-CLIP's raw-feature
    logistic regression has no zero-shot form, so a class it was not fitted on is a DataError."""
    stored = tensors.get("probe_bias")
    if stored is None:
        return None
    if tuple(stored.shape) != (len(known),):
        raise PromptFileError(f"{path}: probe_bias has shape {tuple(stored.shape)}, not ({len(known)},)")
    index, new = trained_index(known, classes)
    if new:
        raise DataError(
            f"class(es) not in the prompt file: {first_names(new)}; an LP-CLIP probe (linear-probe with "
            "--probe-constraint none) scores only the classes it was fitted on"
        )
    return stored[index]


def tip_cache(
    bb: Backbone,
    tensors: dict[str, torch.Tensor],
    meta: PromptMeta,
    known: list[ClassEntry],
    classes: list[ClassEntry],
    path: Path,
) -> TipCache:
    """A tip-adapter(-f) file's cache for ``classes``: the stored keys (n, d), and values (n, K) whose column k is the
    stored one of a trained class and zero for a new class (no shot of it is cached: it scores by zero-shot CLIP)."""
    keys, values = tensors.get("tip_keys"), tensors.get("tip_values")
    if (
        keys is None
        or values is None
        or meta.tip_alpha is None
        or meta.tip_beta is None
        or keys.dim() != 2
        or keys.shape[1] != meta.embed_dim
        or tuple(values.shape) != (len(keys), len(known))
    ):
        raise PromptFileError(
            f"{path} is a {meta.method} prompt file without a consistent cache (tip_keys (n, {meta.embed_dim}), "
            f"tip_values (n, {len(known)}), tip_alpha, tip_beta); re-create it with dualpt train --method {meta.method}"
        )
    index = [find_trained(c, known) for c in classes]
    zero = torch.zeros(len(values))
    columns = torch.stack([values[:, i] if i is not None else zero for i in index], dim=1)  # (n, K)
    return TipCache(keys.to(bb.device), columns.to(bb.device), meta.tip_alpha, meta.tip_beta, float("nan"))


def encode_new_classes(context: StoredContext, names: list[str]) -> torch.Tensor:
    """(K_new, M, d) features of new class names with the learned shared context (base-to-new)."""
    if context.meta.class_specific:
        shown = first_names(names)
        raise DataError(
            f"class(es) not in the prompt file: {shown}; these prompts were trained with "
            "--class-specific context, which cannot describe new classes (retrain without "
            "--class-specific, or use only trained class names)"
        )
    return context.encode(names)
