"""The detection task: head/anchor alignment, losses, decoding + COCO metric, parity."""

import numpy as np
import pytest

from kvision.tasks import get_task
from kvision.tasks.detection.anchors import encode_targets, generate_anchors
from kvision.tasks.detection.example import DetectionExample
from kvision.tasks.detection.model import build_detector
from kvision.tasks.detection.nms import Detections
from kvision.tasks.detection.task import contract_anchors, decode_batch, detection_agreement

LABELS = ["square", "bar"]


@pytest.fixture(scope="module")
def detector():
    return build_detector((64, 64, 3), LABELS, channels=16, depth=1)


def test_head_outputs_line_up_with_the_contract_anchors(detector):
    anchors = contract_anchors(detector.kvision_contract)
    assert anchors.shape == (len(generate_anchors((64, 64))), 4)
    shapes = {k: tuple(v.shape) for k, v in detector.output.items()}
    assert shapes == {
        "class_logits": (None, len(anchors), 2),
        "box_deltas": (None, len(anchors), 4),
    }
    assert detector.kvision_contract.task == "detection"
    assert detector.kvision_contract.postprocess["anchors"]["strides"] == [8, 16, 32]


def _perfect_outputs(contract, gt_boxes_px, gt_classes):
    """Raw outputs a perfect detector would give: encoded gt deltas, confident logits."""
    anchors = contract_anchors(contract)
    scale = np.array([contract.width, contract.height] * 2, np.float32)
    t = encode_targets(np.asarray(gt_boxes_px, np.float32) / scale, np.asarray(gt_classes), anchors)
    logits = np.full((len(anchors), len(contract.labels)), -8.0, np.float32)
    pos = np.flatnonzero(t["class_targets"] >= 0)
    logits[pos, t["class_targets"][pos]] = 8.0
    return logits, t["box_targets"].astype(np.float32)


def test_decoding_perfect_outputs_scores_map_1(detector):
    contract = detector.kvision_contract
    gts = [([[4, 6, 30, 28]], [0]), ([[10, 10, 50, 22], [30, 36, 60, 62]], [1, 0])]
    logits, deltas, examples = [], [], []
    for i, (boxes, classes) in enumerate(gts):
        lg, dl = _perfect_outputs(contract, boxes, classes)
        logits.append(lg)
        deltas.append(dl)
        examples.append(
            DetectionExample(f"{i}.png", i + 1, 64, 64, np.array(boxes), np.array(classes))
        )
    metric = get_task("detection").metric(contract)
    metric.update({"class_logits": np.stack(logits), "box_deltas": np.stack(deltas)}, examples)
    result = metric.result()
    assert result["mAP@.5"] == pytest.approx(1.0)
    assert result["mAP@[.5:.95]"] == pytest.approx(1.0)
    assert result["n"] == 2
    # the same outputs scored against shifted ground truth are no longer perfect
    shifted = [
        DetectionExample(e.image_path, e.image_id, 64, 64, e.boxes + 12, e.classes)
        for e in examples
    ]
    worse = get_task("detection").metric(contract)
    worse.update({"class_logits": np.stack(logits), "box_deltas": np.stack(deltas)}, shifted)
    assert worse.result()["mAP@[.5:.95]"] < 0.5


def _det(boxes, scores, classes):
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(classes, np.int32),
    )


def test_detection_agreement_cases():
    a = _det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1])
    assert detection_agreement([a], [a]) == (1.0, 2, 2)
    moved = _det([[6, 6, 16, 16], [20, 20, 40, 40]], [0.9, 0.8], [0, 1])  # IoU 0.22 < 0.5
    assert detection_agreement([a], [moved])[0] == pytest.approx(0.5)
    swapped = _det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 0])
    assert detection_agreement([a], [swapped])[0] == 0.0
    faint = _det([[0, 0, 10, 10]], [0.1], [0])  # below the parity score: not counted
    assert detection_agreement([faint], [_det([], [], [])]) == (1.0, 0, 0)
    # one artifact box matches only one Keras box
    double = _det([[0, 0, 10, 10], [0, 0, 10, 11]], [0.9, 0.8], [0, 0])
    assert detection_agreement([double], [_det([[0, 0, 10, 10]], [0.9], [0])])[0] == pytest.approx(
        2 / 3
    )


def test_parity_float_and_int8_rows(detector):
    contract = detector.kvision_contract
    task = get_task("detection")
    lg, dl = _perfect_outputs(contract, [[4, 6, 30, 28]], [0])
    ref = {"class_logits": lg[None], "box_deltas": dl[None]}
    near = {"class_logits": lg[None] + 5e-4, "box_deltas": dl[None] - 5e-4}
    ok = task.parity(ref, near, "float32", contract)
    assert ok.ok and ok.checks["detection_agreement"] == 1.0
    far = {"class_logits": lg[None] + 0.01, "box_deltas": dl[None]}
    assert "atol" in task.parity(ref, far, "saved_model", contract).reason
    assert task.parity(ref, far, "ptq_int8", contract).ok  # int8: decoded detections only
    lost = {"class_logits": np.full_like(lg[None], -8.0), "box_deltas": dl[None]}
    parity = task.parity(ref, lost, "ptq_int8", contract)
    assert not parity.ok and "agree 0.00%" in parity.reason
    with pytest.raises(ValueError, match="Missing"):
        task.parity(ref, {"class_logits": lg[None]}, "ptq_int8", contract)
    # nothing confident in the Keras outputs: a quantized row is not verified, never a pass
    quiet = {"class_logits": np.full_like(lg[None], -8.0), "box_deltas": dl[None]}
    parity = task.parity(quiet, quiet, "ptq_int8", contract)
    assert not parity.ok and parity.reason.startswith("not verified")
    assert task.parity(quiet, quiet, "float32", contract).ok  # raw outputs still compared
    broken = {"class_logits": np.full_like(lg[None], np.nan), "box_deltas": dl[None]}
    assert "Keras outputs contain NaN" in task.parity(broken, ref, "float32", contract).reason


def test_focal_loss_matches_the_formula_and_ignores_ignored_anchors():
    from kvision.tasks.detection.losses import BoxLoss, FocalLoss

    logits = np.array([[[2.0, -1.0], [0.5, 0.0], [-3.0, 1.0]]], np.float32)  # [1, 3 anchors, 2]
    targets = np.array([[1, -1, -2]], np.int32)  # positive (class 1), background, ignored

    def focal(x, y, alpha=0.25, gamma=2.0):
        p = 1 / (1 + np.exp(-x))
        pt = p if y else 1 - p
        return -(alpha if y else 1 - alpha) * (1 - pt) ** gamma * np.log(pt)

    want = sum(focal(logits[0, 0, c], c == 1) for c in range(2))
    want += sum(focal(logits[0, 1, c], False) for c in range(2))
    got = float(FocalLoss()(targets, logits))
    assert got == pytest.approx(want / 1.0, rel=1e-5)  # one positive anchor

    box_true = np.zeros((1, 3, 5), np.float32)
    box_true[0, 0] = [0.5, -2.0, 0.0, 0.0, 1.0]  # positive
    box_true[0, 1] = [9.0, 9.0, 9.0, 9.0, 0.0]  # not positive: ignored however wrong
    pred = np.zeros((1, 3, 4), np.float32)
    # Huber(0.5) = 0.125, Huber(2.0) = 1.5 with delta 1
    assert float(BoxLoss()(box_true, pred)) == pytest.approx(0.125 + 1.5)


def test_contract_derived_from_a_multi_output_model_has_no_fake_labels(detector):
    from kvision._keras import keras
    from kvision.models.contract import InputContract

    bare = keras.Model(detector.inputs, detector.outputs)  # no kvision_contract attached
    contract = InputContract.from_model(bare)
    assert contract.shape == (64, 64, 3) and contract.labels == []
    assert InputContract.from_model(bare, labels=LABELS).labels == LABELS


def test_letterbox_boxes_go_into_the_input_and_back_to_the_image(detector):
    """A 128x64 image letterboxed into 64x64 (scale 0.5, 16 px bars above and below): the data
    pipeline's normalized box and the decoding of perfect outputs map through it exactly."""
    import dataclasses

    from kvision.tasks.detection.data import _normalized

    contract = dataclasses.replace(detector.kvision_contract, resize="letterbox")
    box = [20.0, 10.0, 100.0, 50.0]  # original pixels of a 128 x 64 image
    ex = DetectionExample("x.png", 1, 128, 64, np.array([box]), np.array([1]))
    expected = np.array([[10, 5 + 16, 50, 25 + 16]], np.float32) / 64  # scale 0.5, pad_y 16
    np.testing.assert_allclose(_normalized(ex, contract), expected, atol=1e-6)
    lg, dl = _perfect_outputs(contract, expected * 64, [1])
    (det,) = decode_batch({"class_logits": lg[None], "box_deltas": dl[None]}, contract, (128, 64))
    assert det.classes[0] == 1
    np.testing.assert_allclose(det.boxes[0], box, atol=0.05)
