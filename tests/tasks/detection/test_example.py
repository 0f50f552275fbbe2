"""DetectionExample / DetectionDataset: validation, counts, summary, problems CSV, masks."""

import csv

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.detection.example import (
    DetectionDataset,
    DetectionExample,
    Problem,
    decode_masks,
)


def _example(boxes=((2, 3, 20, 30),), classes=(0,), **kw):
    return DetectionExample("a.png", 1, 8, 6, [list(b) for b in boxes], list(classes), **kw)


def test_example_converts_dtypes_and_fills_flags():
    ex = _example()
    assert ex.boxes.dtype == np.float32 and ex.boxes.shape == (1, 4)
    assert ex.classes.dtype == np.int32
    np.testing.assert_array_equal(ex.iscrowd, [False])
    np.testing.assert_array_equal(ex.difficult, [False])
    empty = _example(boxes=(), classes=())
    assert empty.boxes.shape == (0, 4) and empty.classes.shape == (0,)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"boxes": ((5, 3, 2, 30),)}, "x_min < x_max"),
        ({"boxes": ((1, 1, float("nan"), 3),)}, "finite"),
        ({"classes": (0, 1)}, "`classes` should hold 1"),
        ({"classes": (-1,)}, "`classes` should hold 1 non-negative"),
        ({"boxes": (), "classes": (0,)}, "`classes` should hold 0"),
        ({"iscrowd": [True, False]}, "`iscrowd` should be bool"),
        ({"segmentations": []}, "one entry per box"),
        ({"areas": [-1.0]}, "`areas`"),
    ],
)
def test_example_rejects_bad_fields(kw, match):
    args = {"boxes": ((2, 3, 20, 30),), "classes": (0,)} | kw
    with pytest.raises(InputValueError, match=match):
        _example(**args)
    with pytest.raises(InputValueError, match="`width` should be > 0"):
        DetectionExample("a.png", 1, 0, 6, [], [])


def test_dataset_counts_summary_and_problems_csv(tmp_path):
    examples = [
        _example(
            boxes=((0, 0, 2, 2), (1, 1, 3, 3), (0, 0, 1, 1)),
            classes=(1, 1, 0),
            iscrowd=[False, True, False],
        ),
        _example(boxes=(), classes=()),
    ]
    problems = [
        Problem(
            "a.json",
            "annotation id 4",
            "zero-area box (bbox [1, 1, 0, 2])",
            "skipped",
            "box_zero_area",
        ),
        Problem(
            "a.json",
            "annotation id 5",
            'box partly outside, "clipped", to [0, 0, 8, 6]',
            "fixed",
            "box_clipped",
        ),
        Problem(
            "a.json",
            "annotation id 6",
            "zero-area box (bbox [2, 1, 0, 2])",
            "skipped",
            "box_zero_area",
        ),
    ]
    ds = DetectionDataset(examples, ["cat", "dog", "bird"], [1, 2, 5], problems)
    assert ds.class_counts() == {"cat": 1, "dog": 2, "bird": 0}
    assert ds.summary() == {
        "images": 2,
        "negative_images": 1,
        "objects": 3,
        "crowd": 1,
        "difficult": 0,
        "per_class": {"cat": 1, "dog": 2, "bird": 0},
        "problems": {
            "total": 3,
            "fixed": 1,
            "skipped": 2,
            "by_reason": {"box_zero_area": 2, "box_clipped": 1},
        },
    }
    path = ds.write_problems(tmp_path / "run" / "problems.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "item", "reason", "action", "code"]
    assert rows[2] == [
        "a.json",
        "annotation id 5",
        'box partly outside, "clipped", to [0, 0, 8, 6]',
        "fixed",
        "box_clipped",
    ]
    assert len(rows) == 4
    DetectionDataset([], ["a"], [1]).write_problems(path)
    assert path.read_text() == "file,item,reason,action,code\n"


def test_dataset_and_problem_validation():
    with pytest.raises(InputValueError, match="out of range for 1 labels"):
        DetectionDataset([_example(classes=(1,))], ["cat"], [1])
    with pytest.raises(InputValueError, match="same length"):
        DetectionDataset([], ["cat", "dog"], [1])
    with pytest.raises(InputValueError, match="`labels` should not repeat"):
        DetectionDataset([], ["cat", "cat"], [1, 2])
    with pytest.raises(InputValueError, match="`action` should be one of fixed, skipped"):
        Problem("a", "b", "c", "dropped")
    assert str(Problem("a.txt", "line 3", "bad", "skipped")) == "a.txt, line 3: bad (skipped)"


def test_decode_masks_polygon_and_rle_give_the_hand_made_pixels():
    # An 8x6 image (width 8, height 6). Polygon: the square with corners (2, 1) and (6, 4);
    # pycocotools covers the pixels whose centres lie inside: columns 2..5, rows 1..3.
    polygon = [[2, 1, 6, 1, 6, 4, 2, 4]]
    want_poly = np.zeros((6, 8), np.uint8)
    want_poly[1:4, 2:6] = 1
    # Uncompressed RLE counts run down the columns (column-major): 13 zeros, 2 ones, 33 zeros
    # -> flat indices 13, 14 -> column 2, rows 1 and 2.
    rle_list = {"counts": [13, 2, 33], "size": [6, 8]}
    want_rle = np.zeros((6, 8), np.uint8)
    want_rle[1:3, 2] = 1
    from pycocotools import mask as mask_utils

    compressed = mask_utils.frPyObjects(rle_list, 6, 8)
    rle_str = {"counts": compressed["counts"].decode("ascii"), "size": [6, 8]}
    ex = DetectionExample(
        "a.png",
        1,
        8,
        6,
        [[2, 1, 6, 4], [2, 1, 3, 3], [2, 1, 3, 3]],
        [0, 0, 0],
        segmentations=[polygon, rle_list, rle_str],
    )
    masks = decode_masks(ex)
    assert masks.shape == (3, 6, 8) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], want_poly)
    np.testing.assert_array_equal(masks[1], want_rle)
    np.testing.assert_array_equal(masks[2], want_rle)
    assert decode_masks(_example(boxes=(), classes=())).shape == (0, 6, 8)


@pytest.mark.parametrize(
    "segmentations, match",
    [
        (None, "has no segmentations"),
        ([None], "object 1 has no segmentation"),
        ([{"counts": [48], "size": [8, 6]}], r"RLE size \[8, 6\] is not \[height, width\]"),
        ([[[1, 2, 3, 4]]], ">= 3"),
    ],
)
def test_decode_masks_refuses_what_it_cannot_decode(segmentations, match):
    ex = DetectionExample("a.png", 1, 8, 6, [[0, 0, 2, 2]], [0], segmentations=segmentations)
    with pytest.raises(InputValueError, match=match):
        decode_masks(ex)
