"""The 3D U-Net: shapes, sliding-window stitching, Dice, and (slow) every TFLite variant reported
as what the file really holds."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.segmentation.volume import PATCH, build_unet3d, dice, sliding_window


def test_unet3d_shapes_and_bad_sides():
    model = build_unet3d((16, 16, 16, 1), num_classes=3, width=4, depth=2)
    assert model.output_shape == {"mask_logits": (None, 16, 16, 16, 3)}
    assert not any("Pool" in type(layer).__name__ for layer in model.layers)  # no 3D max-pool op
    with pytest.raises(InputValueError, match="divisible by 4"):
        build_unet3d((18, 16, 16, 1), depth=2)


def test_sliding_window_covers_every_voxel_and_averages_overlaps():
    volume = np.random.default_rng(0).random((20, 17, 31)).astype(np.float32)
    seen = []

    def run(x):  # logits: class 1 where the voxel is bright, so the argmax is known per voxel
        seen.append(x.shape)
        v = x[..., 0]
        return {"mask_logits": np.stack([np.zeros_like(v), 20 * (v - 0.5)], axis=-1)}

    probs = sliding_window(run, volume)
    assert probs.shape == (20, 17, 31, 2) and all(s == (1, PATCH, PATCH, PATCH, 1) for s in seen)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(probs.argmax(-1), (volume > 0.5).astype(int))


def test_dice_by_hand():
    t = np.zeros((2, 3, 3), bool)
    t[0, :2, :2] = True  # 4 voxels
    p = np.zeros_like(t)
    p[0, 1:, 1:] = True  # 4 voxels, 1 shared
    assert dice(t, p) == pytest.approx(2 / 8)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0


@pytest.mark.slow
def test_tflite_variants_report_what_the_files_hold(tmp_path):
    from kvision.tasks.segmentation.volume import (
        SPLIT_Y,
        _patches,
        convert_variants,
        load_nuclei_3d,
        train_volume_model,
    )

    volume, labels = load_nuclei_3d()
    model, _ = train_volume_model(volume, labels, steps=10, width=4)
    calib, _ = _patches(volume[:, :SPLIT_Y], labels[:, :SPLIT_Y], 8, np.random.default_rng(0))
    rows = {r["variant"]: r for r in convert_variants(model, tmp_path, volume, labels, calib)}
    assert rows["float32"]["status"] == "ok" and rows["float32"]["max_abs_diff"] < 1e-4
    assert rows["float16"]["status"] == "ok"
    assert rows["float16"]["size_bytes"] < 0.6 * rows["float32"]["size_bytes"]
    # TFLite has float kernels only for 3D convolutions: never reported as quantized
    assert rows["int8"]["status"] == "failed" and "not an int8 model" in rows["int8"]["reason"]
    assert (
        rows["dynamic"]["status"] == "failed" and "nothing quantized" in rows["dynamic"]["reason"]
    )
    for r in rows.values():
        assert "CONV_3D" in r["ops"] and not any(o.startswith("Flex") for o in r["ops"])
