"""Detection augmentation: boxes follow their objects, the drop rule, alignment, determinism.

The references are independent of the code under test: boxes are the tight boxes of masks
drawn here, expected boxes after fixed shifts are computed by hand, the erased region is read
back from the output image, and objects are found again in the output image by their colour.
"""

import json
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from kvision.errors import InputTypeError, InputValueError
from kvision.tasks.detection.augment import AUTO_RECIPE, build_detection_augmenter

# Max distance, in pixels, between an output box and the tight box of its transformed mask.
TOLERANCES_PX = {
    # whole-pixel moves: the mask moves exactly as the box
    "flip, translate": 1e-3,
    # resized masks are nearest-neighbour: OpenCV's INTER_NEAREST takes source pixel
    # floor(x * src / dst), so each mask edge lands up to 1 px off the exact box edge
    "scale_crop, auto: rectangles": 1.0 + 1e-3,
    # ... and, shrinking, it can skip the thin tip of a blob (a source row or column of a few
    # pixels) altogether: the mask, not the box, is then short by a row (max 1.7 px seen here)
    "scale_crop, auto: blobs": 2.0,
    # objects found again in the output image by colour: a bilinear / area-resampled edge pixel
    # counts when more than half of it is the object's (<= 0.5 px), plus the 1 px above
    "image object vs box": 1.5,
}
PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)  # per object
BACKGROUND = np.array([0.5, 0.5, 0.5], np.float32)  # also the default fill of new pixels


def _tight_box(mask: np.ndarray) -> np.ndarray:
    """[x_min, y_min, x_max, y_max] in pixels (edges) of the non-zero pixels of ``mask``."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def _scene(seed: int, height=48, width=64, n=3):
    """Non-overlapping objects, rectangles and irregular blobs (unions of ellipses), each drawn
    in its palette colour on gray. Mask ``k`` holds ``classes[k] + 1`` (so a mask names its own
    class), boxes are the tight boxes of the masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    taken = np.zeros((height, width), bool)
    masks = []
    while len(masks) < n:
        h, w = rng.integers(10, 22), rng.integers(10, 26)
        y0, x0 = rng.integers(0, height - h), rng.integers(0, width - w)
        if len(masks) % 2 == 0:
            shape = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        else:
            shape = np.zeros((height, width), bool)
            for _ in range(3):
                cy, cx = y0 + rng.uniform(0.3, 0.7) * h, x0 + rng.uniform(0.3, 0.7) * w
                ry, rx = rng.uniform(0.2, 0.5) * h, rng.uniform(0.2, 0.5) * w
                shape |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        grown = np.pad(shape, 2)[:-4, 2:-2] | np.pad(shape, 2)[4:, 2:-2] | shape
        if shape.sum() >= 30 and not (grown & taken).any():
            taken |= shape
            masks.append(shape)
    classes = rng.permutation(10)[:n].astype(np.int32)
    image = np.broadcast_to(BACKGROUND, (height, width, 3)).copy()
    for k, shape in enumerate(masks):
        image[shape] = PALETTE[k]
    masks = np.stack([m * (c + 1) for m, c in zip(masks, classes, strict=True)]).astype(np.uint8)
    boxes = np.stack([_tight_box(m) for m in masks]) / [width, height, width, height]
    return image, boxes.astype(np.float32), classes, masks


def _run(aug, example, seed):
    return [t.numpy() for t in aug.apply(*example, seed=seed)]


def _check_boxes_follow_masks(boxes, classes, masks, example_classes, tol_key):
    height, width = masks.shape[1:]
    for box, cls, mask in zip(boxes, classes, masks, strict=True):
        assert mask.any(), f"class {cls}: a kept box whose object has no pixel left"
        # the mask names its class: classes, masks and boxes stay aligned
        assert set(np.unique(mask)) == {0, cls + 1}
        blob = int(np.flatnonzero(example_classes == cls)[0]) % 2 == 1  # see _scene
        key = (
            tol_key
            if tol_key in TOLERANCES_PX
            else f"{tol_key}: {'blobs' if blob else 'rectangles'}"
        )
        tol = TOLERANCES_PX[key]
        err = np.abs(_tight_box(mask) - box * [width, height, width, height]).max()
        assert err <= tol, f"class {cls}: box {box} vs mask box {_tight_box(mask)} ({err:.3f} px)"


def _check_image_objects(image, boxes, classes, example_classes, tol):
    """Each kept object, found again in the output image as the pixels nearest to its colour
    (among the palette and the background), has the output box."""
    height, width = image.shape[:2]
    colours = np.concatenate([PALETTE[: len(example_classes)], BACKGROUND[None]])
    nearest = np.argmin(((image[:, :, None, :] - colours) ** 2).sum(-1), axis=-1)
    for box, cls in zip(boxes, classes, strict=True):
        k = int(np.flatnonzero(example_classes == cls)[0])
        err = np.abs(_tight_box(nearest == k) - box * [width, height, width, height]).max()
        assert err <= tol, f"class {cls}: image object vs box, {err:.3f} px"


# -- boxes equal the boxes of the transformed objects ----------------------------------------
def test_flip_mirrors_image_boxes_and_masks_exactly():
    image, boxes, classes, masks = _scene(0)
    aug = build_detection_augmenter([{"name": "flip", "mode": "both", "p": 1.0}])
    out_image, out_boxes, out_classes, out_masks = _run(aug, (image, boxes, classes, masks), 5)
    np.testing.assert_array_equal(out_image, image[::-1, ::-1])
    np.testing.assert_array_equal(out_masks, masks[:, ::-1, ::-1])
    expected = np.stack([1 - boxes[:, 2], 1 - boxes[:, 3], 1 - boxes[:, 0], 1 - boxes[:, 1]], 1)
    np.testing.assert_allclose(out_boxes, expected, atol=1e-6)
    np.testing.assert_array_equal(out_classes, classes)


@pytest.mark.parametrize(
    ("spec", "tol_key"),
    [
        ({"name": "translate", "factor": 0.3}, "flip, translate"),
        ({"name": "scale_crop", "scale": [0.5, 2.0]}, "scale_crop, auto"),
    ],
)
def test_geometric_transform_box_is_box_of_transformed_object(spec, tol_key):
    aug = build_detection_augmenter([spec], min_visibility=0.0, min_size_px=1)
    changed = dropped = 0
    for seed in range(40):
        example = _scene(seed)
        image, boxes, classes, masks = _run(aug, example, seed)
        _check_boxes_follow_masks(boxes, classes, masks, example[2], tol_key)
        image_key = tol_key if tol_key == "flip, translate" else "image object vs box"
        _check_image_objects(image, boxes, classes, example[2], TOLERANCES_PX[image_key])
        changed += not np.array_equal(boxes, example[1][: len(boxes)])
        dropped += len(boxes) < len(example[1])
    assert changed >= 35  # the transform did move the objects ...
    assert dropped >= 1  # ... and some left the image: the test covered clipping and dropping


def test_auto_recipe_boxes_follow_objects_over_many_seeds():
    aug = build_detection_augmenter("auto", seed=0)
    clipped = 0
    for seed in range(60):
        example = _scene(seed)
        image, boxes, classes, masks = _run(aug, example, seed)
        assert image.shape == example[0].shape and image.dtype == np.float32
        assert len(boxes) <= len(example[1])
        _check_boxes_follow_masks(boxes, classes, masks, example[2], "scale_crop, auto")
        sizes = (boxes[:, 2:] - boxes[:, :2]) * [64, 48]
        assert (sizes >= 2 - 1e-4).all()
        clipped += int(np.isclose(boxes, 0).any() or np.isclose(boxes, 1).any())
    assert clipped >= 5


# -- the rule for boxes that leave the image -------------------------------------------------
RECTS = np.array(  # pixels in a 40 x 40 image; a fixed shift of +10 px on both axes keeps
    [
        [2, 2, 12, 12],  # all of A,
        [24, 2, 34, 10],  # 6/10 of B,
        [28, 14, 38, 22],  # 2/10 of C (2 px wide),
        [2, 26, 10, 36],  # 4/10 of D
    ],
    np.float64,
)


def _rect_example(rects, size):
    masks = np.zeros((len(rects), size, size), np.uint8)
    classes = np.array([7, 3, 9, 1][: len(rects)], np.int32)
    for k, (x0, y0, x1, y1) in enumerate(rects.astype(int)):
        masks[k, y0:y1, x0:x1] = classes[k] + 1
    image = np.full((size, size, 3), 0.25, np.float32)
    return image, (rects / size).astype(np.float32), classes, masks


@pytest.mark.parametrize(
    ("min_visibility", "min_size_px", "kept"),
    [(0.3, 2, [0, 1, 3]), (0.5, 2, [0, 1]), (0.0, 2, [0, 1, 2, 3]), (0.0, 3, [0, 1, 3])],
)
def test_boxes_leaving_the_image_are_clipped_or_dropped_with_class_and_mask(
    min_visibility, min_size_px, kept
):
    example = _rect_example(RECTS, 40)
    aug = build_detection_augmenter(
        [{"name": "translate", "factor": [0.25, 0.25]}],
        min_visibility=min_visibility,
        min_size_px=min_size_px,
    )
    _, boxes, classes, masks = _run(aug, example, 0)
    expected = np.clip(RECTS[kept] + 10, 0, 40) / 40
    np.testing.assert_allclose(boxes, expected, atol=1e-6)
    np.testing.assert_array_equal(classes, example[2][kept])
    shifted = _rect_example(np.clip(RECTS + 10, 0, 40), 40)
    np.testing.assert_array_equal(masks, shifted[3][kept])


def test_visibility_is_over_all_steps_not_per_step():
    # two shifts of +10 px in a 100 px image: the box loses 1/4, then 1/3 of what is left; each
    # step keeps >= 0.6 of it but only half of the box is left in the end
    rects = np.array([[60, 5, 100, 20], [5, 5, 20, 20]], np.float64)
    example = _rect_example(rects, 100)
    specs = [{"name": "translate", "factor": [0.1, 0.1]}] * 2
    _, boxes, classes, _ = _run(build_detection_augmenter(specs, min_visibility=0.6), example, 0)
    np.testing.assert_allclose(boxes, [[25 / 100, 25 / 100, 40 / 100, 40 / 100]], atol=1e-6)
    np.testing.assert_array_equal(classes, example[2][1:])
    _, boxes, classes, _ = _run(build_detection_augmenter(specs, min_visibility=0.5), example, 0)
    np.testing.assert_allclose(boxes[0], [0.8, 0.25, 1.0, 0.4], atol=1e-6)
    np.testing.assert_array_equal(classes, example[2])


def test_erased_boxes_kept_unchanged_unless_mostly_hidden():
    rects = np.array([[2, 2, 14, 14], [20, 4, 36, 12], [6, 20, 18, 36], [24, 22, 38, 38]])
    image, boxes, classes, masks = _rect_example(rects.astype(np.float64), 40)
    image[:] = 1.0  # the erased region is where the output is 0 (fill 0)
    spec = {"name": "erase", "min_area": 0.1, "max_area": 0.4, "fill": 0.0, "p": 1.0}
    aug = build_detection_augmenter([spec], min_visibility=0.5)
    dropped = kept_under_patch = 0
    for seed in range(60):
        out_image, out_boxes, out_classes, out_masks = _run(
            aug, (image, boxes, classes, masks), seed
        )
        erased = (out_image == 0).all(-1)
        assert erased.any() and ((out_image == 0) | (out_image == 1)).all()
        visible = np.array([1 - erased[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in rects])
        kept = np.flatnonzero(visible >= 0.5)
        np.testing.assert_array_equal(out_boxes, boxes[kept])
        np.testing.assert_array_equal(out_classes, classes[kept])
        np.testing.assert_array_equal(out_masks, masks[kept])  # masks are not erased
        dropped += len(kept) < len(rects)
        kept_under_patch += ((visible < 1) & (visible >= 0.5)).any()
    assert dropped >= 3 and kept_under_patch >= 3  # both sides of the rule were exercised


# -- alignment, empties, shapes, values ------------------------------------------------------
def test_no_objects_and_all_objects_dropped():
    image, _, _, _ = _scene(1)
    aug = build_detection_augmenter("auto", seed=0)
    empty = (image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32))
    out = _run(aug, (*empty, np.zeros((0, 48, 64), np.uint8)), 3)
    assert [o.shape for o in out] == [(48, 64, 3), (0, 4), (0,), (0, 48, 64)]
    assert [o.dtype for o in out] == [np.float32, np.float32, np.int32, np.uint8]
    assert [o.shape for o in _run(aug, empty, 3)] == [(48, 64, 3), (0, 4), (0,)]
    gone = build_detection_augmenter([{"name": "translate", "factor": [1.0, 1.0]}])
    out = _run(gone, _scene(2), 0)
    assert [o.shape for o in out] == [(48, 64, 3), (0, 4), (0,), (0, 48, 64)]
    np.testing.assert_array_equal(out[0], 0.5)  # all new pixels, the fill


def test_static_shapes_in_tf_data_and_values_in_unit_range():
    examples = [_scene(s) for s in range(4)]
    for image, *_ in examples:
        image[:8] = 1.0  # saturated rows: brightening must not leave [0, 1]
        image[-8:] = 0.0
    ds = _dataset(examples)
    aug = build_detection_augmenter(
        [{"name": "color", "brightness": 0.5, "saturation": 1.0, "hue": 0.2}, "brightness"], seed=1
    )
    out = aug.map(ds, num_parallel_calls=2)
    spec = out.element_spec
    assert [tuple(s.shape) for s in spec] == [(48, 64, 3), (None, 4), (None,), (None, 48, 64)]
    assert [s.dtype for s in spec] == [tf.float32, tf.float32, tf.int32, tf.uint8]
    changed = 0
    for (image, *_), (out_image, *_) in zip(examples, out, strict=True):
        out_image = out_image.numpy()
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0
        changed += np.abs(out_image - image).max() > 0.05
    assert changed == 4


def test_grayscale_image_gets_brightness_only_colour():
    image, boxes, classes, masks = _scene(3)
    gray = image.mean(-1, keepdims=True)
    aug = build_detection_augmenter([{"name": "color", "brightness": 0.4, "p": 1.0}])
    out_image, out_boxes, *_ = _run(aug, (gray, boxes, classes, masks), 0)
    assert out_image.shape == gray.shape
    unclipped = (gray > 0.2) & (out_image < 0.999)
    ratio = out_image[unclipped] / gray[unclipped]  # one brightness factor for all pixels
    assert np.ptp(ratio) < 1e-4 and abs(ratio.mean() - 1) > 1e-3
    np.testing.assert_array_equal(out_boxes, boxes)


# -- determinism -----------------------------------------------------------------------------
def _dataset(examples):
    height, width = examples[0][0].shape[:2]
    signature = (
        tf.TensorSpec((height, width, 3), tf.float32),
        tf.TensorSpec((None, 4), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None, height, width), tf.uint8),
    )
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def test_same_seed_same_outputs_eagerly_and_in_parallel_tf_data():
    examples = [_scene(s, n=1 + s % 3) for s in range(10)]
    examples.append(
        (
            examples[0][0],
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int32),
            np.zeros((0, 48, 64), np.uint8),
        )
    )
    eager_aug = build_detection_augmenter("auto", seed=3)
    eager = [[t.numpy() for t in eager_aug(*ex)] for ex in examples]
    parallel = list(build_detection_augmenter("auto", seed=3).map(_dataset(examples), 4))
    sequential = list(_dataset(examples).map(build_detection_augmenter("auto", seed=3)))
    for piped in (parallel, sequential):
        assert len(piped) == len(eager)
        for got, want in zip(piped, eager, strict=True):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g.numpy(), w)
    other = [[t.numpy() for t in build_detection_augmenter("auto", seed=4)(*ex)] for ex in examples]
    assert sum(not np.array_equal(o[0], e[0]) for o, e in zip(other, eager, strict=True)) >= 9
    # a new draw on every call: the same example twice is augmented twice differently
    again = [t.numpy() for t in eager_aug(*examples[0])]
    assert not np.array_equal(again[0], eager[0][0])


def test_transforms_draw_independently():
    # each transform gets its own seed: the two flips of mode "both" are drawn independently
    image, boxes, classes, _ = _scene(6)
    aug = build_detection_augmenter([{"name": "flip", "mode": "both", "p": 0.5}])
    flips = (lambda x: x, lambda x: x[:, ::-1], lambda x: x[::-1], lambda x: x[::-1, ::-1])
    outcomes = set()
    for seed in range(40):
        out = _run(aug, (image, boxes, classes), seed)[0]
        outcomes |= {i for i, flip in enumerate(flips) if np.array_equal(out, flip(image))}
    assert outcomes == {0, 1, 2, 3}


def test_config_round_trip_same_outputs():
    aug = build_detection_augmenter(
        ["flip", {"name": "scale_crop", "scale": [0.8, 1.2]}, {"name": "erase", "fill": "random"}],
        seed=2,
    )
    config = aug.to_config()
    assert [c["name"] for c in config] == ["flip", "scale_crop", "erase"]
    assert config[0]["p"] == 0.5 and config[2]["max_area"] == 0.2  # defaults resolved
    assert yaml.safe_load(yaml.safe_dump(config)) == config == json.loads(json.dumps(config))
    again = build_detection_augmenter(config, seed=2)
    assert again.to_config() == config
    example = _scene(4)
    for a, b in zip(_run(aug, example, 11), _run(again, example, 11), strict=True):
        np.testing.assert_array_equal(a, b)
    auto = build_detection_augmenter("auto").to_config()
    assert auto == AUTO_RECIPE
    auto[1]["scale"][0] = 0.1  # the config is a copy
    assert AUTO_RECIPE[1]["scale"] == [0.5, 1.5]


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("specs", "kwargs", "needles"),
    [
        (["flipp"], {}, ["`flipp`", "Did you mean `flip`"]),
        ([{"name": "flip", "prob": 0.5}], {}, ["`flip`", "'prob'"]),
        ([{"name": "flip", "mode": "diagonal"}], {}, ["`flip`", "`mode`", "'diagonal'"]),
        ([{"name": "scale_crop", "scale": [1.5, 0.5]}], {}, ["`scale_crop`", "scale=[1.5, 0.5]"]),
        ([{"name": "translate", "factor": 2}], {}, ["`translate`", "factor=2"]),
        ([{"name": "color", "hue": 0.7}], {}, ["`color`", "hue=0.7"]),
        ([{"name": "brightness", "p": 1.5}], {}, ["`brightness`", "p=1.5"]),
        ([{"name": "erase", "fill": "noise"}], {}, ["`erase`", "fill='noise'"]),
        ([{"name": "erase", "min_area": 0.5}], {}, ["`erase`", "min_area=0.5", "max_area"]),
        ([{"p": 1.0}], {}, ["specs[0]"]),
        ("flip", {}, ["specs='flip'"]),
        ([], {"min_visibility": 1.5}, ["min_visibility=1.5"]),
        ([], {"min_size_px": -1}, ["min_size_px=-1"]),
        ([], {"seed": -1}, ["seed=-1"]),
    ],
)
def test_invalid_specs_name_the_option(specs, kwargs, needles):
    with pytest.raises(InputValueError) as info:
        build_detection_augmenter(specs, **kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_invalid_examples_raise_with_the_reason():
    image, boxes, classes, masks = _scene(5)
    aug = build_detection_augmenter(["flip"])
    with pytest.raises(InputValueError, match="image"):
        aug(image[None], boxes, classes)
    with pytest.raises(InputTypeError, match="classes"):
        aug(image, boxes, tf.constant(classes, tf.int64))
    with pytest.raises(InputValueError, match="masks"):
        aug(image, boxes, classes, masks[:, :10])
    inverted = boxes.copy()
    inverted[1, [0, 2]] = inverted[1, [2, 0]]
    with pytest.raises(InputValueError, match=r"boxes\[1\]"):  # eagerly: the error itself
        aug(image, inverted, classes)
    with pytest.raises(InputValueError, match=r"\[0, 1\]"):
        aug(image * 255, boxes, classes)
    with pytest.raises(InputValueError, match="same N objects"):
        aug(image, boxes, classes[:2])
    ds = tf.data.Dataset.from_tensors((image, inverted, classes))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"boxes\[1\]"):  # in tf.data
        list(aug.map(ds))


# -- throughput (indicative: a shared, niced 2-core machine) ---------------------------------
@pytest.mark.slow
def test_auto_recipe_throughput_160px_three_boxes():
    rng = np.random.default_rng(0)
    n = 400
    images = rng.random((n, 160, 160, 3), dtype=np.float32)
    corners = rng.uniform(0.05, 0.5, (n, 3, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + 0.4], axis=-1)
    classes = np.tile(np.arange(3, dtype=np.int32), (n, 1))
    ds = tf.data.Dataset.from_tensor_slices((images, boxes, classes))
    out = build_detection_augmenter("auto").map(ds).prefetch(8)
    for _ in out.take(20):
        pass  # warm-up: graph tracing and per-thread pipelines
    start = time.perf_counter()
    count = sum(1 for _ in out)
    rate = count / (time.perf_counter() - start)
    print(f"\ndetection auto recipe, 160x160 RGB, 3 boxes: {rate:.0f} examples/s")
    assert count == n and rate > 20
