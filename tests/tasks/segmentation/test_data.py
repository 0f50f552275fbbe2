"""The segmentation readers: mask folders (gray and palette PNGs), COCO segmentations, and every
bad-input case of the stated policy (listed with the reason, never a crash)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kvision.tasks.segmentation.data import (
    SegmentationDataError,
    load_masks,
    read_segmentation_dataset,
)


def _pair(root, name, mask, size=(8, 8), mode="L"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(root / "images" / f"{name}.png")
    if mask is not None:
        Image.fromarray(np.asarray(mask, np.uint8), mode=mode).save(root / "masks" / f"{name}.png")


def test_gray_and_palette_masks_read_as_class_ids(tmp_path):
    ids = np.zeros((8, 8), np.uint8)
    ids[2:5, 3:6] = 2
    ids[0, 0] = 255  # ignore_index: honoured, not a problem
    _pair(tmp_path, "gray", ids)
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    _pair(tmp_path, "pal", None)
    palette.save(tmp_path / "masks" / "pal.png")
    (tmp_path / "labels.txt").write_text("bg\na\nb\n")
    ds = read_segmentation_dataset(tmp_path)
    assert ds.labels == ["bg", "a", "b"] and ds.problems == []
    for ex in ds.examples:
        classes, instances = load_masks(ex, ds.num_classes)
        np.testing.assert_array_equal(classes, ids)  # palette indices, not colours
        assert instances is None


def test_every_bad_input_is_listed_with_its_rule(tmp_path):
    ok = np.zeros((8, 8), np.uint8)
    ok[1:3, 1:3] = 1
    _pair(tmp_path, "good", ok)
    _pair(tmp_path, "no_mask", None)
    _pair(tmp_path, "wrong_size", np.zeros((6, 8)))
    _pair(tmp_path, "rgb", None)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "masks" / "rgb.png")
    _pair(tmp_path, "corrupt", None)
    (tmp_path / "masks" / "corrupt.png").write_bytes(b"not a png")
    out_of_range = ok.copy()
    out_of_range[5, 5] = 7  # class id outside the 2 labels -> ignore_index
    _pair(tmp_path, "range", out_of_range)
    Image.fromarray(ok).save(tmp_path / "masks" / "orphan.png")
    (tmp_path / "labels.txt").write_text("background\nthing\n")

    ds = read_segmentation_dataset(tmp_path)
    assert sorted(ex.name for ex in ds.examples) == ["good", "range"]
    codes = {p.file.split("/")[-1]: (p.code, p.action) for p in ds.problems}
    assert codes == {
        "no_mask.png": ("mask_missing", "skipped"),
        "wrong_size.png": ("size_mismatch", "skipped"),
        "rgb.png": ("mask_unreadable", "skipped"),
        "corrupt.png": ("mask_unreadable", "skipped"),
        "orphan.png": ("mask_orphan", "skipped"),
        "range.png": ("class_out_of_range", "fixed"),
    }
    reasons = " ".join(p.reason for p in ds.problems)
    assert "mask 8x6 differs from its image 8x8" in reasons
    assert "mode RGB holds colours" in reasons and "[7]" in reasons
    fixed = next(ex for ex in ds.examples if ex.name == "range")
    classes, _ = load_masks(fixed, ds.num_classes)
    assert classes[5, 5] == 255 and classes[1, 1] == 1
    with pytest.raises(SegmentationDataError, match="on_error=raise"):
        read_segmentation_dataset(tmp_path, on_error="raise")


def test_not_a_dataset_says_what_is_expected(tmp_path):
    with pytest.raises(SegmentationDataError, match="images/ and masks/"):
        read_segmentation_dataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_segmentation_dataset(tmp_path / "missing")


def test_coco_segmentations_paint_classes_and_instances(tmp_path):
    from pycocotools import mask as mask_utils

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    first = np.zeros((10, 12), np.uint8)
    first[1:6, 1:6] = 1
    second = np.zeros((10, 12), np.uint8)
    second[4:9, 4:10] = 1  # covers part of the first: painted later, wins
    rle = mask_utils.encode(np.asfortranarray(second))
    rle = {"size": [10, 12], "counts": rle["counts"].decode("ascii")}
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 12, "height": 10}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
             "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [4, 4, 6, 5], "area": 30,
             "iscrowd": 0, "segmentation": rle},
        ],
    }  # fmt: skip
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    ds = read_segmentation_dataset(tmp_path)
    assert ds.format == "coco" and ds.labels == ["background", "cat", "dog"]
    classes, instances = load_masks(ds.examples[0], ds.num_classes)
    assert classes[2, 2] == 1 and classes[6, 6] == 2 and classes[0, 11] == 0
    assert instances[2, 2] == 1 and instances[6, 6] == 2
    np.testing.assert_array_equal(classes == 2, second.astype(bool))
