"""CoDUAL-PT (method card, "Conditional variant"): every image gets its own prompts, the shared context shifted
by a meta-net token of its global feature (:class:`~dualpt_cli.prompts.ConditionalPromptLearner`), and is scored
by Eq. 8 with them.

Training reads the frozen image features from the feature cache like every method; only the text side depends
on the image, and it runs through the shared-prefix path batched over the images of a step (docs/method.md).
At predict time :class:`ConditionalScorer` rebuilds the learner from the prompt file (context + meta-net
weights, stored as ``meta_net.*`` tensors) for any class names: the meta-net never sees the classes.
"""

from __future__ import annotations

import torch

from .backbone import Backbone
from .classes import ClassEntry, find_trained
from .errors import PromptFileError
from .matching import Matcher, MatchingStats
from .promptmeta import PromptMeta
from .prompts import ConditionalPromptLearner

META_NET = "meta_net."  # prefix of the meta-net's tensors in the prompt file
TEXT_BUDGET = 4096  # prompts (images x classes x M) encoded at once at predict time


def per_image_logits(matcher: Matcher, Z: torch.Tensor, W: torch.Tensor, return_stats: bool = False):
    """Eq. 8 where image b has its own prompts: (B, K) logits from Z (B, N, d) and W (B, K, M, d)."""
    outs = [matcher.logits(Z[b : b + 1], W[b], return_stats=True) for b in range(len(Z))]
    logits = torch.cat([o[0] for o in outs])  # (B, K)
    return (logits, MatchingStats.merge([o[1] for o in outs])) if return_stats else logits


def meta_net_tensors(learner: ConditionalPromptLearner) -> dict[str, torch.Tensor]:
    """The meta-net's weights as prompt-file tensors (``meta_net.linear1.weight`` ...)."""
    return {META_NET + k: v.detach().float() for k, v in learner.meta_net.state_dict().items()}


class ConditionalScorer:
    """The learned context and meta-net of a codualpt prompt file, for the classes of a classifier.

    Classes the prompt file knows keep their prompt texts (descriptions or ``"{name}."``); new ones end in
    ``"{name}."``.
    """

    def __init__(self, bb: Backbone, tensors: dict[str, torch.Tensor], meta: PromptMeta, classes: list[ClassEntry],
                 matcher: Matcher):
        state = {k[len(META_NET):]: v for k, v in tensors.items() if k.startswith(META_NET)}
        if not state:
            raise PromptFileError("the prompt file is a codualpt one without its meta-net weights (meta_net.*); "
                                  "re-create it with dualpt train --method codualpt")
        known = meta.classes
        texts = None
        if meta.prompt_texts:
            index = [find_trained(c, known) for c in classes]
            plain = [meta.name_template.format(name=c.name) for c in classes]  # a new class's text
            texts = [meta.prompt_texts[i] if i is not None else [p] * meta.n_prompts
                     for p, i in zip(plain, index)]
        self.learner = ConditionalPromptLearner(bb, [c.name for c in classes], meta.n_prompts, meta.n_ctx,
                                                ctx_init="", class_texts=texts)
        try:
            with torch.no_grad():
                self.learner.ctx.copy_(tensors["ctx"].to(self.learner.ctx))
            self.learner.meta_net.load_state_dict({k: v.to(bb.device) for k, v in state.items()})
        except (RuntimeError, KeyError) as exc:
            raise PromptFileError(f"the prompt file's codualpt weights do not fit this model ({exc}); "
                                  "re-create it with dualpt train --method codualpt") from None
        self.learner.eval()
        self.matcher = matcher

    @torch.no_grad()
    def logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) Eq. 8 logits of images with global (B, d) and local (B, N, d) features, each with its prompts."""
        K, M = self.learner.num_classes, self.learner.n_prompts
        step = max(1, TEXT_BUDGET // (K * M))  # images whose prompts are encoded together
        out = []
        for start in range(0, len(z), step):
            zb, Zb = z[start : start + step], Z[start : start + step]
            W = self.learner.forward_conditional(zb.to(self.learner.ctx.device))  # (b, K, M, d)
            with self.learner.bb.autocast():
                out.append(per_image_logits(self.matcher, Zb.to(W.device), W).float())
        return torch.cat(out)
