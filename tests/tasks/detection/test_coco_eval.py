"""COCO mAP: identical to pycocotools run directly on COCO JSON files, and hand-computed cases.

COCO AP interpolates precision at the 101 recall points 0, 0.01, ..., 1: a precision-recall curve
that is 1 up to recall r and has no later points scores (number of points <= r) / 101.
"""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kvision.errors import InputTypeError, InputValueError
from kvision.tasks.detection.coco_eval import CocoEvaluator
from kvision.tasks.detection.nms import Detections

LABELS = ["cat", "dog", "bird"]
KEYS = ["mAP@[.5:.95]", "mAP@.5", "mAP@.75", "AP_small", "AP_medium", "AP_large", "AR@100"]
NONE = ([], [], [])  # no detections


def _random_case(seed, n_images=6):
    """Quarter-pixel boxes (exact in float32 and in JSON) of 8-150 px: all size buckets; each
    image's detections are jittered gts (some with the wrong class) plus false positives."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        n = 0 if i == 2 else int(rng.integers(1, 8))  # image 2 has no objects
        xy = rng.integers(0, 200 * 4, (n, 2)) / 4
        wh = np.round(np.exp(rng.uniform(np.log(8), np.log(150), (n, 2))) * 4) / 4
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        gt_cls = rng.integers(0, 3, n)
        crowd = (rng.random(n) < 0.1).astype(int)
        jitter = np.round(rng.uniform(-0.15, 0.15, (n, 4)) * np.tile(wh, 2) * 4) / 4
        det = np.concatenate([gt + jitter, gt[: n // 2] + 40], 0).astype(np.float32)
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        det_cls = np.concatenate([gt_cls, rng.integers(0, 3, n // 2)])
        det_cls[rng.random(len(det_cls)) < 0.15] = 2
        scores = (rng.integers(1, 40, len(det)) / 40).astype(np.float32)  # score ties
        if i == 4:
            det, scores, det_cls = det[:0], scores[:0], det_cls[:0]  # no detections
        images.append((10 + 7 * i, gt, gt_cls, crowd, (det, scores, det_cls)))
    return images


def _pycocotools_directly(images, tmp_path, category_ids):
    """Write COCO JSON files (xywh) by hand and evaluate with COCO() / loadRes / COCOeval."""
    gt = {"images": [], "annotations": [], "categories": []}
    gt["categories"] = [{"id": c, "name": n} for c, n in zip(category_ids, LABELS, strict=True)]
    results = []
    for image_id, boxes, classes, crowd, (dboxes, scores, dcls) in images:
        gt["images"].append({"id": image_id})
        for (x1, y1, x2, y2), c, k in zip(boxes.tolist(), classes, crowd, strict=True):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[c],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(k),
                }
            )
        for (x1, y1, x2, y2), s, c in zip(dboxes.tolist(), scores.tolist(), dcls, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_ids[c],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": s,
                }
            )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_dt = coco_gt.loadRes(str(tmp_path / "dt.json"))
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1])
def test_map_equals_pycocotools_on_the_same_detections(seed, tmp_path, capsys):
    images = _random_case(seed)
    category_ids = [1, 5, 18]
    ev = CocoEvaluator(LABELS, category_ids)
    for image_id, boxes, classes, crowd, dets in images:
        ev.update(image_id, boxes, classes, dets, gt_iscrowd=crowd)
    got = ev.result()
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced

    ref = _pycocotools_directly(images, tmp_path, category_ids)
    stats = dict(zip(KEYS, ref.stats[[0, 1, 2, 3, 4, 5, 8]], strict=True))
    for key in KEYS:
        assert got[key] == pytest.approx(stats[key], abs=1e-12), key
        assert 0 < got[key] < 1, key  # a non-trivial case
    precision = ref.eval["precision"][:, :, :, 0, 2]  # area "all", maxDets 100
    for k, label in enumerate(LABELS):
        p = precision[:, :, k]
        assert got["per_class_AP"][label] == pytest.approx(p[p > -1].mean(), abs=1e-12)
        assert got["per_class_AP50"][label] == pytest.approx(p[0][p[0] > -1].mean(), abs=1e-12)


def _single(gt_boxes, gt_classes, dets, labels=("cat",), **kw):
    ev = CocoEvaluator(list(labels))
    ev.update(1, gt_boxes, gt_classes, dets, **kw)
    return ev.result()


def test_perfect_detections_score_one():
    gt = np.float32([[10, 10, 50, 60], [100, 20, 220, 200], [5, 150, 20, 165]])
    cls = np.int32([0, 1, 0])
    res = _single(gt, cls, Detections(gt, [0.9, 0.8, 0.7], cls), labels=("cat", "dog"))
    for key in KEYS:
        assert res[key] == pytest.approx(1.0), key
    assert res["per_class_AP"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}


def test_one_of_two_objects_found():
    # precision 1 up to recall 0.5, nothing after: 51 of the 101 recall points
    gt = np.float32([[10, 10, 50, 50], [100, 100, 150, 150]])
    res = _single(gt, [0, 0], (gt[:1], [0.9], [0]))
    assert res["mAP@[.5:.95]"] == pytest.approx(51 / 101)
    assert res["mAP@.5"] == pytest.approx(51 / 101)
    assert res["AR@100"] == pytest.approx(0.5)


def test_higher_score_false_positive_ahead_of_a_true_positive():
    # ranks: FP (p 0, r 0), TP (p 0.5, r 1); interpolated precision is 0.5 at every recall
    gt = np.float32([[10, 10, 50, 50]])
    dets = (np.float32([[200, 200, 240, 240], [10, 10, 50, 50]]), [0.9, 0.8], [0, 0])
    assert _single(gt, [0], dets)["mAP@[.5:.95]"] == pytest.approx(0.5)
    # the same detections with the false positive scored lower: AP 1
    dets_low = (dets[0], [0.7, 0.8], [0, 0])
    assert _single(gt, [0], dets_low)["mAP@[.5:.95]"] == pytest.approx(1.0)


def test_wrong_class_detection():
    gt = np.float32([[10, 10, 50, 50]])
    res = _single(gt, [0], (gt, [0.9], [1]), labels=("cat", "dog"))
    assert res["mAP@[.5:.95]"] == 0.0 and res["mAP@.5"] == 0.0
    # "dog" has no ground truth: pycocotools' -1 is None, and it is left out of the mean
    assert res["per_class_AP"] == {"cat": 0.0, "dog": None}
    assert res["per_class_AP50"] == {"cat": 0.0, "dog": None}


def test_iou_threshold_of_a_shifted_detection():
    # 40x40 box shifted by 10 px: IoU 30*40 / (2*1600 - 1200) = 0.6 -> TP at .5, .55, .6 only
    gt = np.float32([[0, 0, 40, 40]])
    res = _single(gt, [0], (np.float32([[10, 0, 50, 40]]), [0.9], [0]))
    assert res["mAP@.5"] == pytest.approx(1.0)
    assert res["mAP@.75"] == 0.0
    assert res["mAP@[.5:.95]"] == pytest.approx(3 / 10)


def test_ap_by_size_bucket():
    # small (20 px: 400 < 32**2), medium (50 px), large (120 px: 14400 >= 96**2); only the small
    # one is found
    gt = np.float32([[0, 0, 20, 20], [100, 0, 150, 50], [0, 100, 120, 220]])
    res = _single(gt, [0, 0, 0], (gt[:1], [0.9], [0]))
    assert res["AP_small"] == pytest.approx(1.0)
    assert res["AP_medium"] == 0.0 and res["AP_large"] == 0.0
    assert res["mAP@[.5:.95]"] == pytest.approx(34 / 101)  # recall 1/3: points 0 .. 0.33
    # gt_area replaces the box area for the buckets (e.g. COCO's mask areas)
    res = _single(gt, [0, 0, 0], (gt[:1], [0.9], [0]), gt_area=[5000, 500, 500])
    assert res["AP_small"] == 0.0 and res["AP_medium"] == pytest.approx(1.0)
    assert res["AP_large"] is None  # no large object: nothing to score


def test_crowd_regions_are_neither_missed_nor_false_positives():
    gt = np.float32([[10, 10, 50, 50], [100, 100, 200, 200]])
    dets = (np.float32([[120, 120, 140, 140], [10, 10, 50, 50]]), [0.9, 0.8], [0, 0])
    assert _single(gt, [0, 0], dets, gt_iscrowd=[0, 1])["mAP@.5"] == pytest.approx(1.0)
    # not crowd: the small detection inside is a false positive ranked first and the big box
    # is missed -> precision 0.5 up to recall 0.5
    assert _single(gt, [0, 0], dets)["mAP@.5"] == pytest.approx(51 / 101 * 0.5)


def test_empty_detections_and_images_without_objects():
    ev = CocoEvaluator(["cat"])
    ev.update(1, [[10, 10, 50, 50]], [0], NONE)
    assert ev.result()["mAP@[.5:.95]"] == 0.0
    # a false positive on an image without objects, ranked above the true positive
    ev = CocoEvaluator(["cat"])
    ev.update(1, [[10, 10, 50, 50]], [0], ([[10, 10, 50, 50]], [0.5], [0]))
    ev.update(2, np.zeros((0, 4)), [], ([[0, 0, 30, 30]], [0.9], [0]), width=64, height=64)
    assert ev.result()["mAP@[.5:.95]"] == pytest.approx(0.5)
    # no ground truth at all: every number is None
    ev = CocoEvaluator(["cat"])
    ev.update(1, [], [], NONE)
    res = ev.result()
    assert all(res[k] is None for k in KEYS) and res["per_class_AP"] == {"cat": None}


def test_merge_equals_one_evaluator(tmp_path):
    images = _random_case(3)
    whole, left, right = (CocoEvaluator(LABELS) for _ in range(3))
    for i, (image_id, boxes, classes, crowd, dets) in enumerate(images):
        whole.update(image_id, boxes, classes, dets, gt_iscrowd=crowd)
        (left if i % 2 else right).update(image_id, boxes, classes, dets, gt_iscrowd=crowd)
    assert left.merge(right) is left and left.num_images == len(images)
    assert left.result() == whole.result()
    with pytest.raises(InputValueError, match="in both evaluators"):
        left.merge(right)
    with pytest.raises(InputValueError, match="same labels"):
        left.merge(CocoEvaluator(["cat"]))


def test_to_coco_writes_xywh_and_category_ids():
    ev = CocoEvaluator(["cat", "dog"], category_ids=[3, 7])
    ev.update(5, [[10, 20, 30, 60]], [1], ([[1, 2, 4, 8]], [0.5], [0]), width=80, height=90)
    gt, results = ev.to_coco()
    assert gt["images"] == [{"id": 5, "width": 80, "height": 90}]
    ann = gt["annotations"][0]
    assert (ann["id"], ann["category_id"], ann["bbox"], ann["area"]) == (
        1,
        7,
        [10, 20, 20, 40],
        800,
    )
    assert results == [{"image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 6], "score": 0.5}]


def test_bad_inputs_name_the_argument():
    ev = CocoEvaluator(["cat", "dog"])
    with pytest.raises(InputValueError, match="call update"):
        ev.result()
    ev.update(1, [], [], NONE)
    with pytest.raises(InputValueError, match="`image_id` 1 was already added"):
        ev.update(1, [], [], NONE)
    with pytest.raises(InputTypeError, match="`image_id` should be an integer"):
        ev.update("a.jpg", [], [], NONE)
    with pytest.raises(InputValueError, match="`gt_classes` holds class index 2; allowed: 0 to 1"):
        ev.update(2, [[0, 0, 1, 1]], [2], NONE)
    with pytest.raises(InputValueError, match="`gt_boxes` should be finite"):
        ev.update(3, [[0, 0, np.nan, 1]], [0], NONE)
    with pytest.raises(InputValueError, match="`gt_iscrowd` should be 1 values 0 or 1"):
        ev.update(4, [[0, 0, 1, 1]], [0], NONE, gt_iscrowd=[2])
    with pytest.raises(InputTypeError, match="`detections` should be a Detections"):
        ev.update(5, [], [], None)
    with pytest.raises(InputValueError, match="strictly increasing"):
        CocoEvaluator(["cat", "dog"], category_ids=[7, 3])
    with pytest.raises(InputValueError, match="distinct class names"):
        CocoEvaluator(["cat", "cat"])
