"""Expected calibration error and reliability bins (model/calibration.py), checked against numbers by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dualpt_cli.model.calibration import ReliabilityBin, expected_calibration_error, reliability_bins


def _probs(top: list[float], K: int = 4) -> torch.Tensor:
    """(n, K) probabilities whose largest entry, on class 0, is ``top[i]``; the rest spread evenly."""
    rows = [[p] + [(1 - p) / (K - 1)] * (K - 1) for p in top]
    return torch.tensor(rows, dtype=torch.float64)


def test_ece_is_zero_when_accuracy_equals_confidence_in_every_bin():
    # bin (0.4667, 0.5333]: 4 images at 0.5, 2 right; bin (0.9333, 1]: 5 images at 1.0, all right
    probs = _probs([0.5] * 4 + [1.0] * 5)
    labels = torch.tensor([0, 0, 1, 2] + [0] * 5)
    assert expected_calibration_error(probs, labels) == 0.0


def test_ece_by_hand():
    # 10 images: 6 at confidence 0.9 (4 right), 4 at 0.6 (3 right)
    # ECE = 6/10 |4/6 - 0.9| + 4/10 |3/4 - 0.6| = 0.6 * 0.2333... + 0.4 * 0.15 = 0.14 + 0.06 = 0.2
    probs = _probs([0.9] * 6 + [0.6] * 4)
    labels = torch.tensor([0, 0, 0, 0, 1, 2] + [0, 0, 0, 3])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2)
    # one bin: the gap of the mean confidence (0.78) to the accuracy (0.7)
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.08)
    # always right at confidence 0.9: under-confident by 0.1; always wrong: over-confident by 0.9
    assert expected_calibration_error(_probs([0.9] * 3), torch.zeros(3, dtype=torch.long)) == pytest.approx(0.1)
    assert expected_calibration_error(_probs([0.9] * 3), torch.ones(3, dtype=torch.long)) == pytest.approx(0.9)


def test_reliability_bins_edges_empty_bins_and_certainty():
    probs = _probs([1.0, 1.0, 0.5, 0.3], K=4)
    labels = torch.tensor([0, 1, 0, 0])
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and all(isinstance(b, ReliabilityBin) for b in bins)
    assert bins[0].lower == 0.0 and bins[-1].upper == 1.0
    assert all(a.upper == pytest.approx(b.lower) for a, b in zip(bins, bins[1:]))
    assert all(b.upper - b.lower == pytest.approx(1 / 15) for b in bins)
    full = {i: b for i, b in enumerate(bins) if b.count}
    # confidence 1.0 is in the last bin (14/15, 1]; 0.5 in (7/15, 8/15]; 0.3 in (4/15, 5/15]
    assert sorted(full) == [4, 7, 14]
    assert (full[14].count, full[14].confidence, full[14].accuracy) == (2, 1.0, 0.5)
    assert (full[7].count, full[7].confidence, full[7].accuracy) == (1, 0.5, 1.0)
    assert (full[4].count, full[4].confidence, full[4].accuracy) == (1, pytest.approx(0.3), 1.0)
    empty = bins[0]
    assert empty.count == 0 and math.isnan(empty.confidence) and math.isnan(empty.accuracy)
    assert empty.to_json() == {"lower": 0.0, "upper": 1 / 15, "count": 0, "confidence": None, "accuracy": None}
    assert sum(b.count for b in bins) == 4
    # the ECE is the count-weighted gap of the bins
    gaps = sum(b.count * abs(b.accuracy - b.confidence) for b in bins if b.count) / 4
    assert expected_calibration_error(probs, labels) == pytest.approx(gaps) == pytest.approx((2 * 0.5 + 0.5 + 0.7) / 4)


def test_a_confidence_on_an_edge_belongs_to_the_bin_below():
    # bins=2: (0, 0.5] and (0.5, 1]; 0.5 is in the first
    bins = reliability_bins(_probs([0.5, 0.75], K=2), torch.tensor([0, 0]), bins=2)
    assert [b.count for b in bins] == [1, 1]
    assert bins[0].confidence == 0.5 and bins[1].confidence == 0.75


def test_ece_without_images_and_bad_shapes():
    assert math.isnan(expected_calibration_error(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))
    assert all(b.count == 0 for b in reliability_bins(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="probs must be"):
        expected_calibration_error(torch.ones(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="probs must be"):
        expected_calibration_error(torch.ones(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="bins must be >= 1"):
        reliability_bins(torch.ones(3, 2) / 2, torch.zeros(3, dtype=torch.long), bins=0)


def test_ece_stays_in_unit_interval_for_random_softmax():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        logits = 4 * torch.randn(200, 10, generator=gen)
        labels = torch.randint(10, (200,), generator=gen)
        ece = expected_calibration_error(logits.softmax(dim=1), labels)
        assert 0.0 <= ece <= 1.0
