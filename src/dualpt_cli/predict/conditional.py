"""A codualpt or cocoop prompt file at predict time: the learned context and meta-net rebuilt for a classifier's
classes (:class:`ConditionalScorer`); the per-image scores themselves (Eq. 8, CoCoOp's cosine) are
:mod:`dualpt_cli.model.conditional`."""

from __future__ import annotations

import torch

from ..clip.backbone import Backbone
from ..data.classes import ClassEntry, find_trained
from ..errors import PromptFileError
from ..model.conditional import META_NET, TEXT_BUDGET, per_image_global_logits, per_image_logits
from ..model.matcher import Matcher
from ..model.prompts import ConditionalPromptLearner
from ..promptfile.meta import PromptMeta


class ConditionalScorer:
    """The learned context and meta-net of a codualpt or cocoop prompt file, for the classes of a classifier.

    Classes the prompt file knows keep their prompt texts (descriptions or ``"{name}."``); new ones end in
    ``"{name}."``.
    """

    def __init__(
        self,
        bb: Backbone,
        tensors: dict[str, torch.Tensor],
        meta: PromptMeta,
        classes: list[ClassEntry],
        matcher: Matcher,
        global_scores: bool = False,
    ):
        state = {k[len(META_NET) :]: v for k, v in tensors.items() if k.startswith(META_NET)}
        if not state:
            raise PromptFileError(
                f"the prompt file is a {meta.method} one without its meta-net weights (meta_net.*); "
                f"re-create it with dualpt train --method {meta.method}"
            )
        known = meta.classes
        texts = None
        if meta.prompt_texts:
            index = [find_trained(c, known) for c in classes]
            plain = [meta.name_template.format(name=c.name) for c in classes]  # a new class's text
            texts = [meta.prompt_texts[i] if i is not None else [p] * meta.n_prompts for p, i in zip(plain, index)]
        self.learner = ConditionalPromptLearner(
            bb, [c.name for c in classes], meta.n_prompts, meta.n_ctx, ctx_init="", class_texts=texts
        )
        try:
            with torch.no_grad():
                self.learner.ctx.copy_(tensors["ctx"].to(self.learner.ctx))
            self.learner.meta_net.load_state_dict({k: v.to(bb.device) for k, v in state.items()})
        except (RuntimeError, KeyError) as exc:
            raise PromptFileError(
                f"the prompt file's {meta.method} weights do not fit this model ({exc}); "
                f"re-create it with dualpt train --method {meta.method}"
            ) from None
        self.learner.eval()
        self.matcher = matcher
        self.global_scores = global_scores  # cocoop: CoCoOp's cosine of the global feature, not Eq. 8

    @torch.no_grad()
    def logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) logits of images with global (B, d) and local (B, N, d) features, each with its prompts: Eq. 8
        (codualpt) or ``logit_scale * cos(z_b, w_bk)`` (cocoop)."""
        K, M = self.learner.num_classes, self.learner.n_prompts
        step = max(1, TEXT_BUDGET // (K * M))  # images whose prompts are encoded together
        out = []
        for start in range(0, len(z), step):
            zb, Zb = z[start : start + step], Z[start : start + step]
            W = self.learner.forward_conditional(zb.to(self.learner.ctx.device))  # (b, K, M, d)
            if self.global_scores:
                out.append(per_image_global_logits(zb.to(W.device), W, self.matcher.logit_scale))
                continue
            with self.learner.bb.autocast():
                out.append(per_image_logits(self.matcher, Zb.to(W.device), W).float())
        return torch.cat(out)
