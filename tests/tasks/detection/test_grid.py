"""The anchor-free grid head: cells, ltrb coding, centre-prior assignment, the model."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.detection.grid import (
    GridConfig,
    decode_ltrb,
    encode_grid_targets_tf,
    encode_ltrb,
    grid_cells,
)


def test_cells_are_level_then_row_then_column():
    cells = grid_cells((64, 96), GridConfig(strides=(16, 32)))
    assert cells.shape == (4 * 6 + 2 * 3, 4)
    px = cells * np.array([96, 64, 96, 64], np.float32)
    np.testing.assert_allclose(px[0], [0, 0, 16, 16])
    np.testing.assert_allclose(px[1], [16, 0, 32, 16])  # next column first
    np.testing.assert_allclose(px[6], [0, 16, 16, 32])  # then the next row
    np.testing.assert_allclose(px[24], [0, 0, 32, 32])  # then the next level


def test_ltrb_round_trip():
    cells = grid_cells((64, 64), GridConfig(strides=(8,)))[:5]
    centres = (cells[:, :2] + cells[:, 2:]) / 2
    boxes = np.concatenate([centres - [0.05, 0.1], centres + [0.2, 0.03]], axis=1)
    np.testing.assert_allclose(decode_ltrb(encode_ltrb(boxes, cells), cells), boxes, atol=1e-6)


def _targets(boxes, classes, size=(160, 160), config=None):
    config = config or GridConfig()
    cells = grid_cells(size, config)
    t = encode_grid_targets_tf(np.asarray(boxes, np.float32).reshape(-1, 4),
                               np.asarray(classes, np.int32), cells, config)  # fmt: skip
    return cells, t["class_targets"].numpy(), t["box_targets"].numpy()


def test_positives_decode_to_their_box_and_sit_inside_it():
    boxes = np.array([[0.1, 0.1, 0.3, 0.4], [0.5, 0.45, 0.95, 0.9]], np.float32)
    cells, cls, deltas = _targets(boxes, [0, 1])
    for k, box in enumerate(boxes):
        pos = np.flatnonzero(cls == k)
        assert len(pos) > 0
        np.testing.assert_allclose(
            decode_ltrb(deltas[pos], cells[pos]), box[None].repeat(len(pos), 0), atol=1e-5
        )
        centre = (cells[pos, :2] + cells[pos, 2:]) / 2
        assert np.all((centre > box[:2]) & (centre < box[2:]))
    assert set(np.unique(cls)) == {-1, 0, 1}


def test_box_size_picks_the_level():
    """A 20 px box (reach <= 20 px <= 4 x 8) lands on stride 8 only; a 140 px box (reach >= 70 px
    from every cell, > 4 x 16) on stride 32 only: no cell sits on a level boundary."""
    n8, n16 = 20 * 20, 10 * 10
    _, cls, _ = _targets([[0.4, 0.4, 0.525, 0.525]], [0])
    positives = np.flatnonzero(cls == 0)
    assert len(positives) and np.all(positives < n8)
    _, cls, _ = _targets([[0.0625, 0.0625, 0.9375, 0.9375]], [0])
    positives = np.flatnonzero(cls == 0)
    assert len(positives) and np.all(positives >= n8 + n16)


def test_tiny_and_border_boxes_get_a_cell_whose_box_contains_them():
    """A box no cell claims is forced onto the nearest cell; its decoded box is the ground truth
    grown to reach that cell's centre (contains it, never NaN or inverted)."""
    boxes = np.array([[0.0, 0.0, 0.01, 0.01], [0.985, 0.985, 1.0, 1.0], [0.5, 0.5, 0.52, 0.51]],
                     np.float32)  # fmt: skip
    cells, cls, deltas = _targets(boxes, [0, 1, 0])
    assert (cls == 1).sum() >= 1 and (cls == 0).sum() >= 2
    assert np.all(deltas[cls >= 0] >= np.log(0.05) - 1e-6)
    for box in boxes:
        x0, y0, x1, y1 = box
        pos = np.flatnonzero(cls >= 0)
        decoded = decode_ltrb(deltas[pos], cells[pos])
        contains = np.all(
            (decoded[:, :2] <= [x0 + 1e-5, y0 + 1e-5]) & (decoded[:, 2:] >= [x1 - 1e-5, y1 - 1e-5]),
            axis=1,
        )
        assert contains.any(), box


def test_overlap_goes_to_the_smaller_box_and_no_boxes_is_all_background():
    big, small = [0.1, 0.1, 0.9, 0.9], [0.4, 0.4, 0.6, 0.6]
    cells, cls, deltas = _targets([big, small], [0, 1], config=GridConfig(strides=(16,)))
    centre = (cells[:, :2] + cells[:, 2:]) / 2
    in_small = np.all((centre > 0.4) & (centre < 0.6), axis=1)
    assert in_small.any() and np.all(cls[in_small] == 1)
    assert (cls == 0).any()  # the big box keeps the cells outside the small one
    _, cls, deltas = _targets(np.zeros((0, 4)), [])
    assert np.all(cls == -1) and not deltas.any()


def test_config_checks_and_round_trip():
    cfg = GridConfig(strides=(8, 16), center_radius=1.5)
    assert GridConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputValueError, match="increasing"):
        GridConfig(strides=(16, 8))
    with pytest.raises(InputValueError, match="lower"):
        GridConfig(lower=4, upper=2)
    with pytest.raises(InputValueError, match="Unknown"):
        GridConfig.from_dict({"radius": 2})


def test_grid_detector_outputs_one_prediction_per_cell_and_decodes(tmp_path):
    from kvision.export.converter import convert_tflite
    from kvision.runtime import split_ops, tflite_op_names
    from kvision.tasks.detection.model import build_detector
    from kvision.tasks.detection.task import contract_anchors, decode_batch

    model = build_detector((64, 64, 3), ["a", "b"], backbone_options={"width": 0.25},
                           channels=16, depth=1, head="grid")  # fmt: skip
    contract = model.kvision_contract
    cells = contract_anchors(contract)
    assert contract.postprocess["head"] == "grid" and len(cells) == 64 + 16 + 4
    out = model(np.zeros((2, 64, 64, 3), np.float32))
    assert out["class_logits"].shape == (2, len(cells), 2)
    assert out["box_deltas"].shape == (2, len(cells), 4)
    dets = decode_batch({k: v.numpy() for k, v in out.items()}, contract, (640, 480))
    assert len(dets) == 2
    path = convert_tflite(model, tmp_path / "grid.tflite", "float32")
    assert split_ops(tflite_op_names(path)) == ([], [])
