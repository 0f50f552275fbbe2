"""Segmentation losses against NumPy references: cross-entropy with ignore_index and class
weights, the focal term, soft Dice."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.segmentation.losses import SegmentationLoss, build_loss


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 3, 4)).astype(np.int32)
    labels[0, 0, :2] = 255
    return logits, labels


def test_cross_entropy_skips_ignore_index_and_weighs_classes(case):
    logits, labels = case
    weights = np.array([0.5, 2.0, 1.0])
    loss = SegmentationLoss(ce=1.0, dice=0.0, class_weights=weights.tolist())
    p = _softmax(logits.astype(np.float64))
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    ce = -np.log(np.take_along_axis(p, safe[..., None], -1)[..., 0])
    w = weights[safe] * valid
    assert float(loss(labels, logits)) == pytest.approx((ce * w).sum() / w.sum(), rel=1e-5)
    focal = SegmentationLoss(ce=1.0, dice=0.0, gamma=2.0)
    pt = np.exp(-ce)
    expected = (ce * (1 - pt) ** 2 * valid).sum() / valid.sum()
    assert float(focal(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_soft_dice_by_hand(case):
    logits, labels = case
    p = _softmax(logits.astype(np.float64))
    valid = (labels != 255)[..., None]
    onehot = np.eye(3)[np.where(labels == 255, 0, labels)] * valid
    p = p * valid
    inter, denom = (p * onehot).sum((0, 1, 2)), p.sum((0, 1, 2)) + onehot.sum((0, 1, 2))
    expected = 1 - ((2 * inter + 1) / (denom + 1)).mean()
    loss = SegmentationLoss(ce=0.0, dice=1.0)
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    both = build_loss("ce_dice")
    ce = float(build_loss("ce")(labels, logits))
    assert float(both(labels, logits)) == pytest.approx(ce + expected, rel=1e-5)


def test_a_perfect_prediction_costs_almost_nothing():
    labels = np.array([[[0, 1], [2, 1]]], np.int32)
    logits = np.eye(3)[labels].astype(np.float32) * 30.0
    assert float(build_loss("ce_dice")(labels, logits)) < 0.05


def test_bad_loss_specs_are_named():
    with pytest.raises(InputValueError, match="Unknown segmentation loss `dise`"):
        build_loss("dise")
    with pytest.raises(InputValueError, match="positive sum"):
        SegmentationLoss(ce=0.0, dice=0.0)
