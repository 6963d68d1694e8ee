"""The one score of a global image feature against class vectors, shared by every classifier that uses it
(zero-shot CLIP, the prior, CoOp, the linear probe, the residual head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def global_logits(z: torch.Tensor, weights: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """(B, K) ``logit_scale * <normalize(z), w_k>`` for global features ``z`` (B, d) of any norm and class vectors
    ``weights`` (K, d), used as they are (normalise them first for cosines); computed in float32."""
    return logit_scale * F.normalize(z.float(), dim=-1) @ weights.float().T
