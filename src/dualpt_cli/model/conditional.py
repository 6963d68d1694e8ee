"""CoDUAL-PT (method card, "Conditional variant"): every image gets its own prompts, the shared context shifted
by a meta-net token of its global feature (:class:`~dualpt_cli.model.prompts.ConditionalPromptLearner`), and is scored
by Eq. 8 with them. CoCoOp (Zhou et al., CVPR 2022) is the same learner with one prompt, scored as CoCoOp does:
``logit_scale * cos(z_b, w_bk)`` with image b's own class features (:func:`per_image_global_logits`).

Training reads the frozen image features from the feature cache like every method; only the text side depends
on the image, and it runs through the shared-prefix path batched over the images of a step (docs/method.md).
At predict time :class:`~dualpt_cli.predict.conditional.ConditionalScorer` rebuilds the learner from the prompt
file (context + meta-net weights, stored as ``meta_net.*`` tensors) for any class names: the meta-net never sees
the classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .matcher import Matcher
from .matching import MatchingStats
from .prompts import ConditionalPromptLearner

META_NET = "meta_net."  # prefix of the meta-net's tensors in the prompt file
TEXT_BUDGET = 4096  # prompts (images x classes x M) encoded at once at predict time


def per_image_logits(matcher: Matcher, Z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Eq. 8 where image b has its own prompts: (B, K) logits from Z (B, N, d) and W (B, K, M, d)."""
    return torch.cat([matcher.logits(Z[b : b + 1], W[b]) for b in range(len(Z))])  # (B, K)


def per_image_global_logits(z: torch.Tensor, W: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """CoCoOp's logits: (B, K) ``logit_scale * <normalize(z_b), w_bk>`` from global features z (B, d) and image b's
    own normalised single-prompt class features W (B, K, 1, d); computed in float32."""
    f = F.normalize(z.float(), dim=-1)  # (B, d)
    return logit_scale * torch.einsum("bd,bkd->bk", f, W[:, :, 0].float())


def per_image_logits_with_stats(
    matcher: Matcher, Z: torch.Tensor, W: torch.Tensor
) -> tuple[torch.Tensor, MatchingStats]:
    """:func:`per_image_logits` and the solver's statistics over the images."""
    outs = [matcher.logits_with_stats(Z[b : b + 1], W[b]) for b in range(len(Z))]
    return torch.cat([o[0] for o in outs]), MatchingStats.merge([o[1] for o in outs])  # (B, K)


def meta_net_tensors(learner: ConditionalPromptLearner) -> dict[str, torch.Tensor]:
    """The meta-net's weights as prompt-file tensors (``meta_net.linear1.weight`` ...)."""
    return {META_NET + k: v.detach().float() for k, v in learner.meta_net.state_dict().items()}
