"""Box geometry against definitions written out in plain Python and hand-computed cases."""

import math

import numpy as np
import pytest
import tensorflow as tf

from kvision.errors import InputValueError
from kvision.tasks.detection.boxes import (
    LOG_SIZE_CLAMP,
    box_area,
    clip_boxes,
    decode,
    decode_tf,
    encode,
    encode_tf,
    iou,
    iou_tf,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def _iou_definition(a, b):
    """IoU of two xyxy boxes from the definition, in Python floats."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _random_boxes(rng, n, size=50.0, degenerate=0.2):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(0, size / 2, (n, 2))
    wh[rng.random(n) < degenerate] = 0.0  # zero-area boxes
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def test_iou_hand_cases():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [2, 2, 4, 4], [10, 0, 20, 10], [0, 0, 10, 10]]
    # overlap 50 / union 150; contained 4 / 100; touching edge; identical
    np.testing.assert_allclose(iou(a, b), [[1 / 3, 0.04, 0.0, 1.0]], rtol=1e-6)


def test_iou_equals_definition_on_random_boxes_including_zero_area():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 40), _random_boxes(rng, 30)
    expected = [[_iou_definition(x.tolist(), y.tolist()) for y in b] for x in a]
    got = iou(a, b)
    assert got.dtype == np.float32 and got.shape == (40, 30)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert (got == 0).any() and not np.isnan(got).any()


def test_iou_of_zero_area_boxes_is_zero_not_nan():
    point = [[3, 3, 3, 3]]
    assert iou(point, point).tolist() == [[0.0]]
    assert iou_tf(tf.constant(point, tf.float32), tf.constant(point, tf.float32)).numpy() == 0


def test_iou_empty_inputs():
    assert iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert iou([], []).shape == (0, 0)


def test_iou_tf_equals_numpy_with_dynamic_shapes():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 25), _random_boxes(rng, 7)
    spec = tf.TensorSpec([None, 4], tf.float32)
    fn = tf.function(iou_tf, input_signature=[spec, spec])
    np.testing.assert_allclose(fn(a, b).numpy(), iou(a, b), rtol=1e-6, atol=1e-7)
    assert fn(a, np.zeros((0, 4), np.float32)).shape == (25, 0)


def test_area_format_conversion_and_clip_hand_cases():
    assert box_area([[0, 0, 4, 3], [5, 5, 4, 9]]).tolist() == [12.0, 0.0]
    assert xyxy_to_xywh([[10, 20, 30, 60]]).tolist() == [[10, 20, 20, 40]]
    assert xywh_to_xyxy([[10, 20, 20, 40]]).tolist() == [[10, 20, 30, 60]]
    boxes = _random_boxes(np.random.default_rng(2), 10)
    np.testing.assert_array_equal(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    clipped = clip_boxes([[-5, 10, 120, 90], [150, 100, 160, 120]], width=100, height=80)
    assert clipped.tolist() == [[0, 10, 100, 80], [100, 80, 100, 80]]


def test_encode_hand_case():
    # anchor centre (0.2, 0.2) size 0.2 x 0.2; box centre (0.2, 0.3) size 0.2 x 0.4
    deltas = encode([[0.1, 0.1, 0.3, 0.5]], [[0.1, 0.1, 0.3, 0.3]])
    expected = [[0.0, (0.3 - 0.2) / 0.2 / 0.1, 0.0, math.log(0.4 / 0.2) / 0.2]]
    np.testing.assert_allclose(deltas, expected, atol=1e-5)
    # variances divide the deltas
    np.testing.assert_allclose(
        encode([[0.1, 0.1, 0.3, 0.5]], [[0.1, 0.1, 0.3, 0.3]], variances=(1, 1, 1, 1)),
        [[0.0, 0.5, 0.0, math.log(2)]],
        atol=1e-6,
    )


def test_decode_inverts_encode_numpy_and_tf():
    rng = np.random.default_rng(3)
    anchors = _random_boxes(rng, 50, size=1.0, degenerate=0) + np.float32([0, 0, 0.01, 0.01])
    boxes = _random_boxes(rng, 50, size=1.0, degenerate=0) + np.float32([0, 0, 0.01, 0.01])
    deltas = encode(boxes, anchors)
    np.testing.assert_allclose(decode(deltas, anchors), boxes, atol=2e-6)
    np.testing.assert_allclose(encode_tf(boxes, anchors).numpy(), deltas, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(decode_tf(deltas, anchors).numpy(), boxes, atol=2e-6)


def test_decode_clamps_log_size_to_log_1000_over_16():
    anchors = np.float32([[0.4, 0.4, 0.6, 0.5]])  # 0.2 wide, 0.1 high, centre (0.5, 0.45)
    huge = np.float32([[0.0, 0.0, 1e4, 1e4]])
    for boxes in (decode(huge, anchors), decode_tf(huge, anchors).numpy()):
        assert np.isfinite(boxes).all()
        w, h = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
        np.testing.assert_allclose([w, h], [0.2 * 62.5, 0.1 * 62.5], rtol=1e-5)
    assert LOG_SIZE_CLAMP == pytest.approx(math.log(62.5))
    # below the clamp nothing changes: tw = 1 with variance 0.2 -> width * e**0.2
    small = decode([[0, 0, 1, 0]], anchors)
    assert small[0, 2] - small[0, 0] == pytest.approx(0.2 * math.exp(0.2), rel=1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(InputValueError, match=r"`a` should have shape \[N, 4\].*\[2, 3\]"):
        iou(np.zeros((2, 3)), np.zeros((1, 4)))
    with pytest.raises(InputValueError, match="variances"):
        encode([[0, 0, 1, 1]], [[0, 0, 1, 1]], variances=(0.1, 0.1, 0.2))
    with pytest.raises(InputValueError, match="variances=.*-1"):
        decode_tf([[0, 0, 0, 0]], [[0, 0, 1, 1]], variances=(0.1, 0.1, 0.2, -1))
    with pytest.raises(InputValueError, match="same number of rows"):
        decode(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(InputValueError, match="`width` should be a number > 0. Received: width=0"):
        clip_boxes([[0, 0, 1, 1]], width=0, height=5)
