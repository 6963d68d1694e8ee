"""CoDUAL-PT (method card, "Conditional variant"): every image gets its own prompts, the shared context shifted
by a meta-net token of its global feature (:class:`~dualpt_cli.model.prompts.ConditionalPromptLearner`), and is scored
by Eq. 8 with them.

Training reads the frozen image features from the feature cache like every method; only the text side depends
on the image, and it runs through the shared-prefix path batched over the images of a step (docs/method.md).
At predict time :class:`~dualpt_cli.predict.conditional.ConditionalScorer` rebuilds the learner from the prompt
file (context + meta-net weights, stored as ``meta_net.*`` tensors) for any class names: the meta-net never sees
the classes.
"""

from __future__ import annotations

import torch

from .matching import Matcher, MatchingStats
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
