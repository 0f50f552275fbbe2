"""NMS and post-processing against brute-force references written from the definitions."""

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.detection.boxes import decode, encode
from kvision.tasks.detection.nms import (
    Detections,
    batched_nms,
    nms,
    postprocess,
    postprocess_batch,
)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy_nms(boxes, scores, classes, thr):
    """Visit by (score desc, index asc); keep unless IoU > thr with a kept box of its class."""
    order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(
            classes[k] != classes[i] or _iou(boxes[i].tolist(), boxes[k].tolist()) <= thr
            for k in kept
        ):
            kept.append(i)
    return kept


def _clustered_boxes(rng, n, clusters=4):
    """Integer boxes around a few centres: many overlaps; duplicates and score ties."""
    centres = rng.integers(20, 80, (clusters, 2))[rng.integers(0, clusters, n)]
    half = rng.integers(3, 15, (n, 2))
    jitter = rng.integers(-6, 7, (n, 2))
    boxes = np.concatenate([centres + jitter - half, centres + jitter + half], 1)
    boxes[1] = boxes[0]  # an exact duplicate
    scores = rng.integers(0, 10, n) / 10  # many ties
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_equals_greedy_definition(seed, thr):
    boxes, scores = _clustered_boxes(np.random.default_rng(seed), 60)
    got = nms(boxes, scores, thr)
    assert got.tolist() == _greedy_nms(boxes, scores, [0] * len(boxes), thr)
    assert 0 < len(got) <= len(boxes)


def test_nms_hand_case():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    # IoU(0, 1) = 90 / 110; box 3 duplicates box 0 with a tied score: the lower index wins
    assert nms(boxes, [0.9, 0.8, 0.7, 0.9], 0.5).tolist() == [0, 2]
    assert nms(boxes, [0.9, 0.8, 0.7, 0.9], 0.85).tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_equals_per_class_definition(seed):
    rng = np.random.default_rng(seed)
    boxes, scores = _clustered_boxes(rng, 80)
    classes = rng.integers(0, 3, len(boxes))
    got = batched_nms(boxes, scores, classes, 0.5)
    assert got.tolist() == _greedy_nms(boxes, scores, classes, 0.5)


def test_boxes_of_different_classes_never_suppress_each_other():
    boxes = [[0, 0, 10, 10]] * 3
    assert batched_nms(boxes, [0.5, 0.9, 0.7], [0, 1, 2], 0.5).tolist() == [1, 2, 0]
    assert batched_nms(boxes, [0.5, 0.9, 0.7], [0, 1, 0], 0.5).tolist() == [1, 2]


def test_empty_inputs():
    assert nms(np.zeros((0, 4)), [], 0.5).tolist() == []
    assert batched_nms([], [], [], 0.5).tolist() == []


def _anchors():
    # four normalized anchors; anchors 0 and 1 overlap (IoU .035 / .045 = 0.78), 2 and 3 apart
    return np.float32(
        [[0.1, 0.1, 0.3, 0.3], [0.125, 0.1, 0.325, 0.3], [0.5, 0.5, 0.9, 0.7], [0.0, 0.8, 0.2, 1.0]]
    )


def test_postprocess_hand_case_threshold_multilabel_nms_scaling():
    anchors = _anchors()
    probs = np.float32(
        [
            [0.9, 0.0, 0.6],  # anchor 0: classes 0 and 2 (multi-label)
            [0.8, 0.3, 0.0],  # anchor 1: class 0 (suppressed by anchor 0), class 1
            [0.04, 0.05, 0.0],  # below / at the 0.05 threshold: no candidate
            [0.0, 0.0, 0.7],  # anchor 3: class 2
        ]
    )
    deltas = np.zeros((4, 4), np.float32)  # boxes = anchors
    dets = postprocess(probs, deltas, anchors, image_size=(200, 100))
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.6, 0.3])
    assert dets.classes.tolist() == [0, 2, 2, 1]
    sx = np.float32([200, 100, 200, 100])
    np.testing.assert_allclose(dets.boxes, anchors[[0, 3, 0, 1]] * sx, rtol=1e-6)
    assert dets.boxes.dtype == np.float32 and dets.classes.dtype == np.int32
    out = dets.to_json(["a", "b", "c"])
    assert out[1] == {
        "label": "c",
        "class_index": 2,
        "score": pytest.approx(0.7),
        "box": pytest.approx([0.0, 80.0, 40.0, 100.0]),
    }


def test_postprocess_decodes_deltas_and_clips_to_the_image():
    anchors = _anchors()[[2, 3]]
    boxes = np.float32([[0.55, 0.45, 0.85, 0.65], [-0.1, 0.7, 0.15, 0.95]])
    probs = np.float32([[0.9], [0.8]])
    dets = postprocess(probs, encode(boxes, anchors), anchors, image_size=(640, 480))
    expected = np.clip(boxes * np.float32([640, 480, 640, 480]), 0, [640, 480, 640, 480])
    np.testing.assert_allclose(dets.boxes, expected, atol=1e-3)
    # a box entirely outside the image is dropped, not returned with zero area
    outside = encode(np.float32([[1.1, 0.1, 1.3, 0.3]]), anchors[:1])
    assert len(postprocess(probs[:1], outside, anchors[:1], image_size=(64, 64))) == 0


def _postprocess_reference(probs, deltas, anchors, size, thr, iou_thr, max_det, top_k):
    cands = [
        (float(probs[a, c]), a, c)
        for a in range(probs.shape[0])
        for c in range(probs.shape[1])
        if probs[a, c] > thr
    ]
    cands = sorted(cands, key=lambda t: (-t[0], t[1], t[2]))[:top_k]
    w, h = size
    rows = []
    for s, a, c in cands:
        b = decode(deltas[a : a + 1], anchors[a : a + 1])[0] * np.float32([w, h, w, h])
        b = np.minimum(np.maximum(b, 0), np.float32([w, h, w, h]))
        if b[2] > b[0] and b[3] > b[1]:
            rows.append((b, s, c))
    boxes = np.array([r[0] for r in rows], np.float32).reshape(-1, 4)
    scores = np.array([r[1] for r in rows], np.float32)
    classes = [r[2] for r in rows]
    keep = _greedy_nms(boxes, scores, classes, iou_thr)[:max_det]
    return boxes[keep], scores[keep], [classes[k] for k in keep]


@pytest.mark.parametrize(
    "options",
    [
        {
            "score_threshold": 0.05,
            "iou_threshold": 0.5,
            "max_detections": 100,
            "pre_nms_top_k": 1000,
        },
        {"score_threshold": 0.3, "iou_threshold": 0.3, "max_detections": 7, "pre_nms_top_k": 1000},
        {"score_threshold": 0.1, "iou_threshold": 0.6, "max_detections": 100, "pre_nms_top_k": 15},
    ],
)
def test_postprocess_equals_reference_on_random_outputs(options):
    rng = np.random.default_rng(5)
    centres = rng.uniform(0.2, 0.8, (6, 2))[rng.integers(0, 6, 120)]
    anchors = np.concatenate([centres - 0.1, centres + 0.1], 1).astype(np.float32)
    deltas = rng.normal(0, 1, (120, 4)).astype(np.float32)
    probs = (rng.integers(0, 20, (120, 4)) / 20).astype(np.float32)  # ties
    dets = postprocess(probs, deltas, anchors, image_size=(320, 240), **options)
    ref_boxes, ref_scores, ref_classes = _postprocess_reference(
        probs,
        deltas,
        anchors,
        (320, 240),
        options["score_threshold"],
        options["iou_threshold"],
        options["max_detections"],
        options["pre_nms_top_k"],
    )
    np.testing.assert_array_equal(dets.scores, ref_scores)
    assert dets.classes.tolist() == ref_classes
    np.testing.assert_allclose(dets.boxes, ref_boxes, rtol=1e-6)
    assert len(dets) <= min(options["max_detections"], options["pre_nms_top_k"])
    assert (np.diff(dets.scores) <= 0).all()


def test_max_detections_and_pre_nms_top_k():
    # 10 disjoint anchors, one class, scores 0.1 .. 1.0
    x = np.arange(10, dtype=np.float32) / 10
    anchors = np.stack([x, x * 0, x + 0.05, x * 0 + 0.05], 1)
    probs = np.linspace(0.1, 1.0, 10, dtype=np.float32)[:, None]
    deltas = np.zeros((10, 4), np.float32)
    kw = {"image_size": (100, 100), "score_threshold": 0.0}
    assert len(postprocess(probs, deltas, anchors, **kw)) == 10
    top3 = postprocess(probs, deltas, anchors, max_detections=3, **kw)
    np.testing.assert_allclose(top3.scores, [1.0, 0.9, 0.8])
    # pre_nms_top_k = 2 keeps only the two best candidates even though nothing overlaps
    top2 = postprocess(probs, deltas, anchors, pre_nms_top_k=2, **kw)
    np.testing.assert_allclose(top2.scores, [1.0, 0.9])


def test_postprocess_empty_and_logits():
    anchors = _anchors()
    dets = postprocess(np.zeros((4, 3), np.float32), np.zeros((4, 4)), anchors, image_size=(9, 9))
    assert len(dets) == 0 and dets.boxes.shape == (0, 4) and dets.to_json(["a"]) == []
    none = postprocess(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 4)), image_size=(9, 9))
    assert len(none) == 0
    logits = np.float32([[2.0], [-3.0], [-9.0], [0.0]])
    dets = postprocess(logits, np.zeros((4, 4)), anchors, image_size=(9, 9), from_logits=True)
    np.testing.assert_allclose(dets.scores, 1 / (1 + np.exp(-np.float32([2.0, 0.0]))), rtol=1e-6)


def test_postprocess_batch_equals_per_image_calls():
    rng = np.random.default_rng(2)
    anchors = _anchors()
    probs = rng.uniform(0, 1, (3, 4, 2)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (3, 4, 4)).astype(np.float32)
    sizes = [(100, 50), (64, 64), (30, 90)]
    batch = postprocess_batch(probs, deltas, anchors, image_size=sizes, iou_threshold=0.4)
    for dets, p, d, s in zip(batch, probs, deltas, sizes, strict=True):
        one = postprocess(p, d, anchors, image_size=s, iou_threshold=0.4)
        np.testing.assert_array_equal(dets.boxes, one.boxes)
        np.testing.assert_array_equal(dets.scores, one.scores)
    same = postprocess_batch(probs, deltas, anchors, image_size=(64, 64))
    np.testing.assert_array_equal(same[1].boxes, batch[1].boxes)


def test_bad_inputs_name_the_argument():
    anchors = _anchors()
    with pytest.raises(InputValueError, match="from_logits=True"):
        postprocess(np.full((4, 1), 3.0), np.zeros((4, 4)), anchors, image_size=(9, 9))
    with pytest.raises(InputValueError, match=r"one row per anchor \(A = 4\)"):
        postprocess(np.zeros((3, 1)), np.zeros((4, 4)), anchors, image_size=(9, 9))
    with pytest.raises(InputValueError, match=r"`image_size` should be \(width, height\)"):
        postprocess(np.zeros((4, 1)), np.zeros((4, 4)), anchors, image_size=(9, 0))
    with pytest.raises(InputValueError, match="max_detections=0"):
        postprocess(
            np.zeros((4, 1)), np.zeros((4, 4)), anchors, image_size=(9, 9), max_detections=0
        )
    with pytest.raises(InputValueError, match="iou_threshold=1.5"):
        nms([[0, 0, 1, 1]], [1.0], 1.5)
    with pytest.raises(InputValueError, match="same length"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros(1, np.int32))
    with pytest.raises(InputValueError, match="class index 3 is outside `labels`"):
        Detections([[0, 0, 1, 1]], [0.5], [3]).to_json(["a", "b"])
