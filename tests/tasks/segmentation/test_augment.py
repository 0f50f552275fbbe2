"""Mask-aware augmentation: image and mask stay aligned through every geometric transform, masks
keep class ids (nearest neighbour), pixels from outside get ignore_index, seeded runs repeat."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.segmentation.augment import build_mask_augmenter

GEOMETRIC = [
    {"name": "flip", "mode": "both", "p": 1.0},
    {"name": "rot90", "p": 1.0},
    {"name": "rotate", "limit": 40, "p": 1.0, "interpolation": "nearest"},
    {"name": "elastic", "alpha": 40, "sigma": 4, "p": 1.0, "interpolation": "nearest"},
    {"name": "grid_distortion", "p": 1.0, "interpolation": "nearest"},
    {"name": "scale_crop", "scale": [0.6, 1.4], "p": 1.0, "interpolation": "nearest"},
]


def _example():
    mask = np.zeros((48, 48), np.uint8)
    mask[5:20, 8:30] = 1
    mask[25:44, 20:40] = 2
    mask[30:36, 2:10] = 3
    image = (mask[..., None].astype(np.float32) + 1) / 5.0  # the class is readable from the pixel
    return image, mask


@pytest.mark.parametrize("spec", GEOMETRIC, ids=lambda s: s["name"])
def test_image_and_mask_move_together(spec):
    image, mask = _example()
    aug = build_mask_augmenter([spec], seed=3)
    moved = 0
    for seed in range(6):
        out_image, out_mask = aug.apply_numpy(image, mask, seed)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert set(np.unique(out_mask)) <= {0, 1, 2, 3, 255}  # ids, never blends
        inside = out_mask != 255
        # wherever the mask has a class, the image pixel under it came from that class
        from_image = np.round(out_image[..., 0] * 5.0 - 1).astype(int)
        np.testing.assert_array_equal(from_image[inside], out_mask[inside])
        assert np.all(out_image[~inside] == 0)  # pixels from outside: fill 0, mask ignore
        moved += int(not np.array_equal(out_mask, mask))
    assert moved >= 3  # the transform did something


def test_same_seed_same_output_and_colour_leaves_the_mask():
    image, mask = _example()
    aug = build_mask_augmenter(["rot90", "elastic", "brightness_contrast"], seed=0)
    a = aug.apply_numpy(image, mask, 7)
    b = aug.apply_numpy(image, mask, 7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    colour = build_mask_augmenter([{"name": "brightness_contrast", "p": 1.0}], seed=0)
    out_image, out_mask = colour.apply_numpy(image, mask, 1)
    np.testing.assert_array_equal(out_mask, mask)
    assert not np.allclose(out_image, image)


def test_map_runs_in_tf_data():
    import tensorflow as tf

    image, mask = _example()
    ds = tf.data.Dataset.from_tensors((image, mask)).repeat(4)
    aug = build_mask_augmenter(["rot90", {"name": "flip", "mode": "both"}], seed=1)
    outs = [(i.numpy(), m.numpy()) for i, m in aug.map(ds)]
    again = [(i.numpy(), m.numpy()) for i, m in aug.map(ds)]
    assert len(outs) == 4 and outs[0][0].shape == (48, 48, 1)
    assert any(not np.array_equal(m, mask) for _, m in outs)
    assert all(o[1].dtype == np.uint8 for o in outs)
    assert len(again) == 4


def test_bad_specs_are_named():
    with pytest.raises(InputValueError, match="Did you mean `rotate`"):
        build_mask_augmenter(["rotat"])
    with pytest.raises(InputValueError, match="unknown option"):
        build_mask_augmenter([{"name": "flip", "angle": 3}])
    with pytest.raises(InputValueError, match="flip.mode"):
        build_mask_augmenter([{"name": "flip", "mode": "diagonal"}])
