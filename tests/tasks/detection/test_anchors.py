"""Anchors, matching and tf.data targets against brute-force references from their definitions."""

import json
import math
import time

import numpy as np
import pytest
import tensorflow as tf

from kvision.errors import InputValueError
from kvision.tasks.detection.anchors import (
    AnchorConfig,
    anchors_per_location,
    encode_targets,
    encode_targets_tf,
    feature_sizes,
    generate_anchors,
    match,
    match_tf,
)
from kvision.tasks.detection.boxes import decode, iou

SMALL = AnchorConfig(
    strides=(8, 16), base_sizes=(12.0, 30.0), scales=(1.0, 1.5), aspect_ratios=(0.5, 1.0, 2.0)
)


def _brute_force_anchor(level, y, x, scale, ratio, config, h, w):
    stride, base = config.strides[level], config.base_sizes[level]
    cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
    aw = base * scale * math.sqrt(ratio)
    ah = base * scale / math.sqrt(ratio)
    return [(cx - aw / 2) / w, (cy - ah / 2) / h, (cx + aw / 2) / w, (cy + ah / 2) / h]


@pytest.mark.parametrize("image_size", [(48, 40), (37, 61)])
def test_anchors_line_up_with_a_reshaped_head_output(image_size):
    """A head writes at [0, y, x, a * 4 + k] the anchor of (level, y, x, a); reshaping each level
    to [1, H*W*apl, 4] and concatenating must give generate_anchors row for row."""
    h, w = image_size
    apl = anchors_per_location(SMALL)
    assert apl == 6
    types = [(s, r) for s in SMALL.scales for r in SMALL.aspect_ratios]  # scales outer
    flat = []
    for level, stride in enumerate(SMALL.strides):
        fh, fw = math.ceil(h / stride), math.ceil(w / stride)
        head = np.zeros((1, fh, fw, apl * 4))
        for y in range(fh):
            for x in range(fw):
                for a, (s, r) in enumerate(types):
                    head[0, y, x, a * 4 : a * 4 + 4] = _brute_force_anchor(
                        level, y, x, s, r, SMALL, h, w
                    )
        flat.append(tf.reshape(head, [1, -1, 4]).numpy())
    expected = np.concatenate(flat, axis=1)[0]
    got = generate_anchors(image_size, SMALL)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_default_anchor_count_shapes_and_area():
    config = AnchorConfig()
    anchors = generate_anchors((160, 160), config)
    assert anchors.shape == ((20 * 20 + 10 * 10 + 5 * 5) * 9, 4)
    # first location of level 0: scale 1, ratio 0.5 -> 16 * sqrt(.5) wide, 16 / sqrt(.5) high
    w, h = 16 * math.sqrt(0.5), 16 / math.sqrt(0.5)
    np.testing.assert_allclose(
        anchors[0] * 160, [4 - w / 2, 4 - h / 2, 4 + w / 2, 4 + h / 2], rtol=1e-5
    )
    sizes = (anchors[:, 2:] - anchors[:, :2]) * 160
    area = sizes[:, 0] * sizes[:, 1]
    base_scale = np.repeat([16 * s for s in config.scales], 3)
    np.testing.assert_allclose(area[:9], base_scale**2, rtol=1e-5)
    np.testing.assert_allclose(sizes[:9, 0] / sizes[:9, 1], [0.5, 1, 2] * 3, rtol=1e-5)


@pytest.mark.parametrize("size", [(160, 160), (100, 64), (161, 97), (7, 300)])
def test_feature_sizes_equal_same_padded_strided_pyramid(size):
    config = AnchorConfig()
    x = tf.zeros((1, *size, 1))
    direct = [
        tuple(tf.nn.avg_pool2d(x, 1, s, "SAME").shape[1:3]) for s in config.strides
    ]  # one stride-s 'same' op
    chained, y = {}, x
    for level in range(1, 6):  # a backbone's stride-2 'same' ops: strides 2, 4, ..., 32
        y = tf.nn.avg_pool2d(y, 3, 2, "SAME")
        chained[2**level] = tuple(y.shape[1:3])
    assert feature_sizes(size, config) == direct == [chained[s] for s in config.strides]


def test_anchor_config_round_trip_and_validation():
    config = AnchorConfig(strides=(4, 8), base_sizes=(10, 20), scales=(1,), aspect_ratios=(1, 3))
    assert AnchorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AnchorConfig.from_dict({}) == AnchorConfig()
    with pytest.raises(InputValueError, match=r"`strides` should be increasing.*\(16, 8\)"):
        AnchorConfig(strides=(16, 8), base_sizes=(1, 2))
    with pytest.raises(InputValueError, match="`base_sizes` should have one value per level"):
        AnchorConfig(strides=(8, 16, 32, 64))
    with pytest.raises(InputValueError, match=r"`scales`.*> 0. Received: scales=\(1, -2\)"):
        AnchorConfig(scales=(1, -2))
    with pytest.raises(InputValueError, match="`strides`.*integers"):
        AnchorConfig(strides=(8.5, 16, 32))
    with pytest.raises(InputValueError, match="Did you mean `aspect_ratios`"):
        AnchorConfig.from_dict({"aspect_ratio": [1]})
    with pytest.raises(InputValueError, match=r"image_size.*Received: image_size=\(0, 4\)"):
        generate_anchors((0, 4))


# ---- matching -----------------------------------------------------------------------------


def _match_definition(anchors, gts, pos, neg, force):
    """match() written out from its documented rule with Python loops."""
    ious = iou(anchors, gts)
    out = []
    for a in range(len(anchors)):
        best, best_j = -1.0, -1
        for j in range(len(gts)):
            if ious[a, j] > best:
                best, best_j = ious[a, j], j
        out.append(best_j if best >= pos else (-2 if best >= neg else -1))
    if force:
        claims = {}  # anchor -> (iou, gt)
        for j in range(len(gts)):
            best, best_a = -1.0, -1
            for a in range(len(anchors)):
                if ious[a, j] > best:
                    best, best_a = ious[a, j], a
            if best > 0 and (best_a not in claims or best > claims[best_a][0]):
                claims[best_a] = (best, j)
        for a, (_, j) in claims.items():
            out[a] = j
    return np.array(out, np.int32)


def test_match_hand_cases():
    anchors = [[0, 0, 10, 10], [0, 0, 10, 13], [0, 0, 10, 20], [50, 50, 60, 60]]
    gt = [[0, 0, 10, 11]]  # IoUs: 10/11, 11/13, 11/20, 0
    assert match(anchors, gt, 0.8, 0.6).tolist() == [0, 0, -1, -1]
    assert match(anchors, gt, 0.95, 0.5).tolist() == [0, -2, -2, -1]  # forced: best anchor 0
    assert match(anchors, gt, 0.95, 0.5, force_match=False).tolist() == [-2, -2, -2, -1]
    assert match(anchors, np.zeros((0, 4))).tolist() == [-1, -1, -1, -1]
    # zero-area gt box: IoU 0 with everything, never forced
    assert match(anchors, [[5, 5, 5, 5]]).tolist() == [-1, -1, -1, -1]


def test_force_match_conflicts_go_to_the_highest_iou_then_lowest_index():
    anchors = [[0, 0, 10, 10], [100, 100, 110, 110]]
    # both gts have anchor 0 as best (IoU 0.25 and 0.16): gt 0 wins, gt 1 stays unmatched
    gts = [[0, 0, 10, 2.5], [0, 0, 10, 1.6]]
    assert match(anchors, gts).tolist() == [0, -1]
    assert match(anchors, gts[::-1]).tolist() == [1, -1]
    # equal IoU: the lower gt index wins
    tie = [[0, 0, 10, 2.5], [0, 7.5, 10, 10]]
    assert match(anchors, tie).tolist() == [0, -1]
    # a forced match overrides a threshold positive of another gt on that anchor
    anchors = [[0, 0, 10, 10], [0, 0, 10, 9], [40, 0, 50, 10]]
    gts = [[0, 0, 10, 9.5], [0, 0, 10, 3]]  # IoUs: gt 0 (.95, .947), gt 1 (.3, .333)
    assert match(anchors, gts, force_match=False).tolist() == [0, 0, -1]
    assert match(anchors, gts).tolist() == [0, 1, -1]  # anchor 1 is gt 1's best: forced


def _random_gts(rng, n):
    c = rng.uniform(0.1, 0.9, (n, 2))
    wh = rng.uniform(0.03, 0.6, (n, 2))
    boxes = np.clip(np.concatenate([c - wh / 2, c + wh / 2], 1), 0, 1).astype(np.float32)
    if n >= 2:
        boxes[1] = boxes[0]  # duplicate box: ties between gts
    return boxes


def test_match_equals_definition_on_random_cases():
    rng = np.random.default_rng(0)
    anchors = generate_anchors((48, 40), SMALL)
    forced = 0
    for n in [0, 1, 2, 5, 10, 10]:
        gts = _random_gts(rng, n)
        for force in (False, True):
            got = match(anchors, gts, 0.5, 0.4, force)
            np.testing.assert_array_equal(got, _match_definition(anchors, gts, 0.5, 0.4, force))
        if n:
            forced += int(((got >= 0) & (iou(anchors, gts).max(axis=1) < 0.5)).sum())
    assert forced > 0  # the cases exercise forced matches


def _targets_dataset(cases, anchors, **kw):
    def gen():
        yield from cases

    ds = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ),
    )
    return ds.map(lambda b, c: encode_targets_tf(b, c, anchors, **kw))


def test_encode_targets_tf_equals_numpy_reference_in_tf_data():
    rng = np.random.default_rng(1)
    anchors = generate_anchors((48, 40), SMALL)
    cases = [
        (_random_gts(rng, n), rng.integers(0, 5, n).astype(np.int32))
        for n in [0, 1, 3, 10, 2, 0, 7]
    ]
    kw = {"pos_iou": 0.5, "neg_iou": 0.4}
    n_forced = n_ignored = 0
    for (boxes, classes), got in zip(cases, _targets_dataset(cases, anchors, **kw), strict=True):
        ref = encode_targets(boxes, classes, anchors, **kw)
        np.testing.assert_array_equal(got["class_targets"].numpy(), ref["class_targets"])
        np.testing.assert_allclose(got["box_targets"].numpy(), ref["box_targets"], atol=1e-5)
        pos = ref["class_targets"] >= 0
        if len(boxes):
            n_forced += int((pos & (iou(anchors, boxes).max(1) < 0.5)).sum())
        n_ignored += int((ref["class_targets"] == -2).sum())
        if not len(boxes):
            assert (ref["class_targets"] == -1).all()
    assert n_forced > 0 and n_ignored > 0  # the cases exercise forced matches and ignores


def test_encode_targets_semantics():
    anchors = generate_anchors((48, 40), SMALL)
    boxes = np.float32([[0.1, 0.2, 0.5, 0.7], [0.55, 0.05, 0.95, 0.35]])
    classes = np.int32([3, 1])
    out = encode_targets(boxes, classes, anchors)
    matches = match(anchors, boxes)
    pos = matches >= 0
    np.testing.assert_array_equal(out["class_targets"][pos], classes[matches[pos]])
    np.testing.assert_array_equal(out["class_targets"][~pos], matches[~pos])
    assert (out["box_targets"][~pos] == 0).all()
    np.testing.assert_allclose(
        decode(out["box_targets"][pos], anchors[pos]), boxes[matches[pos]], atol=1e-5
    )
    tf_out = encode_targets_tf(boxes, classes, anchors, force_match=False)
    np.testing.assert_array_equal(
        tf_out["class_targets"].numpy(),
        encode_targets(boxes, classes, anchors, force_match=False)["class_targets"],
    )
    np.testing.assert_array_equal(
        match_tf(anchors, boxes, 0.6, 0.3).numpy(), match(anchors, boxes, 0.6, 0.3)
    )


def test_bad_thresholds_and_classes():
    anchors = generate_anchors((48, 40), SMALL)
    with pytest.raises(InputValueError, match="`neg_iou` should be <= `pos_iou`"):
        match(anchors, [[0, 0, 1, 1]], pos_iou=0.4, neg_iou=0.5)
    with pytest.raises(InputValueError, match=r"`pos_iou` should be in \(0, 1\]"):
        encode_targets_tf(np.zeros((0, 4)), np.zeros(0), anchors, pos_iou=0.0, neg_iou=0.0)
    with pytest.raises(InputValueError, match=r"`gt_classes` should be integers of shape \[2\]"):
        encode_targets(np.zeros((2, 4)), [1], anchors)


@pytest.mark.slow
def test_encode_targets_tf_throughput():
    """~5k anchors (160 px input) x 10 boxes per image through tf.data.Dataset.map."""
    anchors = generate_anchors((160, 160))
    assert len(anchors) == 4725
    rng = np.random.default_rng(0)
    boxes = tf.constant(np.stack([_random_gts(rng, 10) for _ in range(64)]))
    classes = tf.constant(rng.integers(0, 20, (64, 10)).astype(np.int32))
    n = 4000
    ds = (
        tf.data.Dataset.range(n)
        .map(lambda i: (boxes[i % 64], classes[i % 64]))
        .map(lambda b, c: encode_targets_tf(b, c, anchors), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    for _ in ds.take(100):
        pass
    start = time.perf_counter()
    count = sum(1 for _ in ds)
    rate = count / (time.perf_counter() - start)
    print(f"encode_targets_tf: {rate:.0f} examples/s ({len(anchors)} anchors, 10 boxes)")
    assert count == n and rate > 300
