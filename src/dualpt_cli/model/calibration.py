"""Calibration of a classifier's probabilities: the expected calibration error (ECE) and its reliability bins.

The confidence of an image is its largest class probability. Confidences fall into ``bins`` equal-width bins
over [0, 1], bin b holding (b / bins, (b + 1) / bins] (a confidence of exactly 1.0 is in the last bin); per bin
the accuracy is the share of its images whose most probable class is the true one. The ECE (Guo et al. 2017)
is the mean gap between accuracy and confidence, bins weighted by their share of the images:
``ECE = sum_b (n_b / n) |acc_b - conf_b|``, 0 for a perfectly calibrated classifier, at most 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

BINS = 15  # Guo et al.'s number of bins


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin (lower, upper]: its images, their mean confidence and accuracy (NaN when empty)."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float

    def to_json(self) -> dict[str, float | int | None]:
        """The bin as a dict; NaN (an empty bin) becomes None, which JSON can hold."""
        return {k: None if v != v else v for k, v in asdict(self).items()}


def _binned(probs: Tensor, labels: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per bin: image counts, confidence sums and correct counts, each (bins,) float64.

    Args:
        probs: (n, K) class probabilities; labels: (n,) true class indices; bins: how many bins.
    """
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (n, K) and labels (n,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    conf, pred = probs.detach().double().cpu().max(dim=1)  # (n,), (n,)
    correct = (pred == labels.detach().cpu().long()).double()  # (n,)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)  # (bins + 1,)
    index = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, bins - 1)  # edges[b] < conf <= edges[b + 1]
    count = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, conf)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    return count, conf_sum, correct_sum


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = BINS) -> float:
    """ECE of probabilities ``probs`` (n, K) against ``labels`` (n,) over ``bins`` equal-width confidence bins.

    Returns a value in [0, 1]; NaN without images.
    """
    count, conf_sum, correct_sum = _binned(probs, labels, bins)
    n = float(count.sum())
    if n == 0:
        return float("nan")
    return float((correct_sum - conf_sum).abs().sum() / n)  # sum_b (n_b / n) |acc_b - conf_b|


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = BINS) -> list[ReliabilityBin]:
    """The ``bins`` reliability bins of ``probs`` (n, K) against ``labels`` (n,), lowest confidence first."""
    count, conf_sum, correct_sum = _binned(probs, labels, bins)
    out = []
    for b in range(bins):
        n = int(count[b])
        out.append(
            ReliabilityBin(
                lower=b / bins,
                upper=(b + 1) / bins,
                count=n,
                confidence=float(conf_sum[b] / n) if n else float("nan"),
                accuracy=float(correct_sum[b] / n) if n else float("nan"),
            )
        )
    return out
