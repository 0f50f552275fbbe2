"""Segmentation metrics against hand-computed cases: confusion matrix, IoU / Dice, foreground
Dice, instance extraction and stardist-matched F1 / AP."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.tasks.segmentation.metrics import (
    InstanceCounts,
    confusion_matrix,
    instances_from_classes,
    scores_from_confusion,
)


def test_iou_dice_and_pixel_accuracy_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])
    cm = confusion_matrix(truth, pred, 3)
    # truth 0: 3 pixels (pred 0, 1, 0); truth 1: 2 (pred 1, 1); truth 2: 2 (pred 2, 0); 255 skipped
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 2, 0], [1, 0, 1]])
    s = scores_from_confusion(cm, ["bg", "a", "b"])
    # IoU: bg 2/(2+1+1)=0.5, a 2/(2+1+0)=2/3, b 1/(1+0+1)=0.5
    assert s["per_class_IoU"] == pytest.approx({"bg": 0.5, "a": 2 / 3, "b": 0.5}, abs=1e-6)
    assert s["mIoU"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3, abs=1e-6)
    # Dice: bg 4/6, a 4/5, b 2/3
    assert s["per_class_Dice"] == pytest.approx({"bg": 4 / 6, "a": 4 / 5, "b": 2 / 3}, abs=1e-6)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7, abs=1e-6)
    # foreground (a or b) vs bg: TP 3 (a->a twice, b->b once), FP 1 (bg->a), FN 1 (b->bg)
    assert s["foreground_Dice"] == pytest.approx(6 / 8, abs=1e-6)
    assert s["labelled_pixels"] == 7


def test_a_class_absent_everywhere_has_no_iou():
    s = scores_from_confusion(confusion_matrix([[0, 1]], [[0, 1]], 3), ["bg", "a", "b"])
    assert s["per_class_IoU"]["b"] is None and s["mIoU"] == 1.0


def test_touching_nuclei_split_by_their_boundary_class():
    classes = np.zeros((10, 20), np.uint8)
    classes[2:8, 2:9] = 2  # nucleus 1 with its border
    classes[3:7, 3:8] = 1
    classes[2:8, 9:17] = 2  # nucleus 2 touches nucleus 1 through boundary pixels only
    classes[3:7, 10:16] = 1
    classes[0, 0] = 1  # a 1-px speck: below min_size, dropped
    ids = instances_from_classes(classes, [1], [1, 2], min_size=4, grow_px=1)
    assert ids.max() == 2 and ids[0, 0] == 0
    assert ids[5, 5] != ids[5, 12] and ids[5, 5] > 0 and ids[5, 12] > 0
    assert ids[2, 4] == ids[5, 5]  # the boundary pixel belongs to its own nucleus
    assert (ids[classes == 0] == 0).all()  # never grows into background


def test_instance_f1_and_ap_summed_over_images():
    truth = np.zeros((20, 20), np.int32)
    truth[1:6, 1:6] = 1
    truth[10:16, 10:16] = 2
    pred = np.zeros_like(truth)
    pred[1:6, 1:6] = 1  # exact match
    pred[10:16, 13:19] = 2  # IoU 18/54 = 0.33 with truth 2: FP and FN at 0.5
    pred[17:19, 1:3] = 3  # no truth: FP
    counts = InstanceCounts()
    counts.update(truth, pred)
    counts.update(truth, truth)  # a perfect second image: TP 2
    r = counts.result()
    assert (r["instance_TP@0.5"], r["instance_FP@0.5"], r["instance_FN@0.5"]) == (3, 2, 1)
    assert r["instance_F1@0.5"] == pytest.approx(6 / 9)
    assert r["instance_AP@0.5"] == pytest.approx(3 / 6)
    # at every threshold up to 0.9 the exact matches stay TP and nothing else matches
    assert r["instance_AP@[.5:.9]"] == pytest.approx(0.5)
