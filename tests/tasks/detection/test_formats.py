"""Detection readers and writers: coordinates, the bad-input policy, round trips, layouts.

Every fixture is generated here: tiny PNG/JPEG images with Pillow, annotation files by hand.
Expected boxes and problem rows are written out by hand from the format definitions.
"""

import json

import numpy as np
import pytest
from PIL import Image

from kvision.errors import InputValueError
from kvision.preprocess import decode_image
from kvision.tasks.detection.example import Problem
from kvision.tasks.detection.formats import (
    DataProblemError,
    DetectionDataError,
    read_coco,
    read_detection_dataset,
    read_voc,
    read_yolo,
    write_coco,
    write_voc,
    write_yolo,
)


def _image(path, width=40, height=30, fmt=None, **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (120, 30, 200)).save(path, format=fmt, **save)
    return path


def _coco(tmp_path, images, annotations, categories=None, name="annotations.json"):
    data = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _ann(ann_id, bbox, category_id=3, image_id=1, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def _voc_xml(path, filename, objects, size=(40, 30)):
    objs = "".join(
        f"<object><name>{name}</name><difficult>{diff}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects
    )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>")
    return path


# --- COCO ------------------------------------------------------------------------------------


def test_coco_boxes_classes_and_category_mapping(tmp_path):
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "b.png")
    path = _coco(
        tmp_path,
        [
            {"id": 5, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 9, "file_name": "b.png", "width": 40, "height": 30},
        ],
        [_ann(1, [1.5, 2, 10, 20], 7, 5), _ann(2, [0, 0, 40, 30], 3, 5)],
    )
    ds = read_coco(path)
    # category ids ascending: 3 -> index 0 ("dog"), 7 -> index 1 ("cat")
    assert ds.labels == ["dog", "cat"] and ds.category_ids == [3, 7]
    a, b = ds.examples
    assert (a.image_id, a.width, a.height) == (5, 40, 30)
    assert a.image_path == str(tmp_path / "images" / "a.png")
    np.testing.assert_array_equal(a.boxes, [[1.5, 2, 11.5, 22], [0, 0, 40, 30]])
    assert a.boxes.dtype == np.float32 and a.classes.dtype == np.int32
    np.testing.assert_array_equal(a.classes, [1, 0])
    assert b.boxes.shape == (0, 4) and ds.problems == []


def test_coco_bad_annotations_are_fixed_or_skipped_with_exact_problems(tmp_path):
    _image(tmp_path / "images" / "a.png")
    anns = [
        _ann(1, [30, 20, 20, 20]),  # partly outside 40x30: clipped to [30, 20, 40, 30]
        _ann(2, [50, 5, 5, 5]),  # entirely outside
        _ann(3, [5, 5, 0, 4]),  # zero width
        _ann(4, [10, 10, -3, 4]),  # negative width: inverted
        _ann(5, [1, 1, 2, 2], 99),  # unknown category
        _ann(6, [1, "x", 2, 2]),  # non-numeric
        _ann(7, [1, 1, 2]),  # wrong count
        _ann(8, [1, 1, 2, 2], image_id=42),  # unknown image
        _ann(2, [1, 1, 2, 2]),  # duplicate annotation id
        _ann(9, [1, 1, 4, 4], iscrowd=1),  # kept, flagged
        _ann(10, [1, 1, 4, 4], iscrowd=2),  # bad flag
    ]
    path = _coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}], anns)
    ds = read_coco(path)
    f = str(path)
    assert ds.problems == [
        Problem(
            f,
            "annotation id 1",
            "box partly outside the 40x30 image (bbox [30, 20, 20, 20]); "
            "clipped to [30, 20, 40, 30]",
            "fixed",
            "box_clipped",
        ),
        Problem(
            f,
            "annotation id 2",
            "box entirely outside the 40x30 image (bbox [50, 5, 5, 5])",
            "skipped",
            "box_outside",
        ),
        Problem(
            f, "annotation id 3", "zero-area box (bbox [5, 5, 0, 4])", "skipped", "box_zero_area"
        ),
        Problem(
            f,
            "annotation id 4",
            "inverted box (bbox [10, 10, -3, 4]): x_max < x_min; not swapped",
            "skipped",
            "box_inverted",
        ),
        Problem(
            f,
            "annotation id 5",
            "unknown category id 99 (categories: [3, 7])",
            "skipped",
            "unknown_class",
        ),
        Problem(
            f,
            "annotation id 6",
            "`bbox` should be 4 finite numbers [x, y, w, h]. Received: [1, 'x', 2, 2]",
            "skipped",
            "malformed",
        ),
        Problem(
            f,
            "annotation id 7",
            "`bbox` should be 4 finite numbers [x, y, w, h]. Received: [1, 1, 2]",
            "skipped",
            "malformed",
        ),
        Problem(f, "annotation id 2", "duplicate annotation id 2", "skipped", "duplicate_id"),
        Problem(
            f, "annotation id 10", "`iscrowd` should be 0 or 1. Received: 2", "skipped", "malformed"
        ),
        Problem(f, "annotation id 8", "image_id 42 is not in `images`", "skipped", "unknown_image"),
    ]
    (ex,) = ds.examples
    np.testing.assert_array_equal(ex.boxes, [[30, 20, 40, 30], [1, 1, 5, 5]])
    np.testing.assert_array_equal(ex.iscrowd, [False, True])
    summary = ds.summary()
    assert summary["objects"] == 2 and summary["crowd"] == 1
    assert summary["problems"]["fixed"] == 1 and summary["problems"]["skipped"] == 9
    assert summary["problems"]["by_reason"]["malformed"] == 3


def test_coco_nan_bbox_and_tiny_overshoot(tmp_path):
    _image(tmp_path / "images" / "a.png")
    path = tmp_path / "annotations.json"
    path.write_text(
        '{"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],'
        '"categories": [{"id": 1, "name": "cat"}],'
        '"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, NaN, 2, 2]},'
        '{"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 10, 20.004, 20]}]}'
    )
    ds = read_coco(path)
    assert [(p.item, p.code) for p in ds.problems] == [("annotation id 1", "malformed")]
    assert "[1, nan, 2, 2]" in ds.problems[0].reason
    # 0.004 px past the edge is rounding of the stored numbers: clipped without a row
    np.testing.assert_array_equal(ds.examples[0].boxes, [[20, 10, 40, 30]])


def test_coco_missing_corrupt_and_mismatched_images_are_skipped_with_their_objects(tmp_path):
    images = tmp_path / "images"
    _image(images / "ok.png")
    (images / "corrupt.png").write_bytes(b"this is not a png at all")
    (images / "empty.jpg").write_bytes(b"")
    _image(images / "small.png", 20, 30)
    entries = [
        {"id": i, "file_name": name, "width": 40, "height": 30}
        for i, name in enumerate(["ok.png", "gone.png", "corrupt.png", "empty.jpg", "small.png"], 1)
    ]
    anns = [_ann(i, [1, 1, 5, 5], image_id=i) for i in range(1, 6)] + [
        _ann(6, [2, 2, 3, 3], image_id=2)
    ]
    path = _coco(tmp_path, entries, anns)
    ds = read_coco(path)
    assert [ex.image_id for ex in ds.examples] == [1]
    assert ds.problems == [
        Problem(
            str(images / "gone.png"),
            "image id 2",
            "file not found; skipped with its 2 object(s)",
            "skipped",
            "image_missing",
        ),
        Problem(
            str(images / "corrupt.png"),
            "image id 3",
            "not an image (cannot identify); skipped with its 1 object(s)",
            "skipped",
            "image_unreadable",
        ),
        Problem(
            str(images / "empty.jpg"),
            "image id 4",
            "zero-byte file; skipped with its 1 object(s)",
            "skipped",
            "image_unreadable",
        ),
        Problem(
            str(path),
            "image id 5",
            f"JSON width x height 40x30 is not the image file's 20x30 ({images / 'small.png'}); "
            "skipped with its 1 object(s)",
            "skipped",
            "size_mismatch",
        ),
    ]


def test_truncated_image_is_found_only_with_verify_images(tmp_path):
    images = tmp_path / "images"
    _image(images / "ok.png")
    good = _image(images / "cut.png", 40, 30).read_bytes()
    (images / "cut.png").write_bytes(good[: len(good) // 2])
    entries = [
        {"id": 1, "file_name": "ok.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "cut.png", "width": 40, "height": 30},
    ]
    path = _coco(tmp_path, entries, [])
    assert len(read_coco(path).examples) == 2  # header only: the header is intact
    ds = read_coco(path, verify_images=True)
    assert [ex.image_id for ex in ds.examples] == [1]
    assert ds.problems[0].file == str(images / "cut.png")
    assert ds.problems[0].code == "image_unreadable"
    assert "truncated" in ds.problems[0].reason or "corrupt" in ds.problems[0].reason


def test_exif_rotated_jpeg_reports_the_upright_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _image(tmp_path / "images" / "r.jpg", 40, 30, exif=exif)
    assert decode_image(path.read_bytes(), path).size == (30, 40)  # what kvision decodes
    good = _coco(tmp_path, [{"id": 1, "file_name": "r.jpg", "width": 30, "height": 40}], [])
    assert (read_coco(good).examples[0].width, read_coco(good).examples[0].height) == (30, 40)
    raw = _coco(
        tmp_path,
        [{"id": 1, "file_name": "r.jpg", "width": 40, "height": 30}],
        [_ann(1, [1, 1, 2, 2])],
        name="raw.json",
    )
    with pytest.raises(DetectionDataError, match="size_mismatch|is not the image file's 30x40"):
        read_coco(raw, tmp_path / "images")


def test_coco_segmentation_area_and_malformed_segmentation(tmp_path):
    _image(tmp_path / "images" / "a.png")
    poly = [[2, 2, 6, 2, 6, 6, 2, 6]]
    rle = {"counts": [0, 1200], "size": [30, 40]}
    anns = [
        _ann(1, [2, 2, 4, 4], segmentation=poly, area=16.0),
        _ann(2, [0, 0, 40, 30], segmentation=rle, area=1200, iscrowd=1),
        _ann(3, [0, 0, 4, 4], segmentation=[[1, 2, 3, 4]]),  # a 2-point "polygon"
        _ann(4, [0, 0, 4, 4], segmentation={"counts": [5, 5], "size": [30, 40]}),  # wrong sum
        _ann(5, [0, 0, 4, 4], segmentation={"counts": [0, 1200], "size": [40, 30]}),
    ]
    path = _coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}], anns)
    ds = read_coco(path)
    (ex,) = ds.examples
    assert ex.segmentations == [poly, rle]
    np.testing.assert_array_equal(ex.areas, [16, 1200])
    assert [(p.item, p.code) for p in ds.problems] == [
        ("annotation id 3", "malformed"),
        ("annotation id 4", "malformed"),
        ("annotation id 5", "malformed"),
    ]
    assert "RLE size [40, 30] should be [height, width] = [30, 40]" in ds.problems[2].reason


def test_coco_malformed_image_entries_and_duplicate_image_ids(tmp_path):
    _image(tmp_path / "images" / "a.png")
    entries = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "a.png", "width": "40", "height": 30},
    ]
    path = _coco(tmp_path, entries, [_ann(1, [1, 1, 2, 2]), _ann(2, [1, 1, 2, 2], image_id=2)])
    ds = read_coco(path)
    assert ds.problems == [
        Problem(
            str(path),
            "images[1]",
            "duplicate image id 1 (first at images[0], which keeps its objects)",
            "skipped",
            "duplicate_id",
        ),
        Problem(
            str(path),
            "images[2]",
            "`width` should be a positive int. Received: '40'; skipped with its 1 object(s)",
            "skipped",
            "malformed",
        ),
    ]
    assert len(ds.examples) == 1 and len(ds.examples[0].boxes) == 1


def test_coco_on_error_raise_stops_at_the_first_problem_with_the_same_text(tmp_path):
    _image(tmp_path / "images" / "a.png")
    path = _coco(
        tmp_path,
        [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        [_ann(1, [1, 1, 2, 2]), _ann(2, [1, 1, 2, 2], 99), _ann(3, [50, 1, 2, 2])],
    )
    expected = read_coco(path).problems[0]
    with pytest.raises(DataProblemError) as info:
        read_coco(path, on_error="raise")
    assert info.value.problem == expected
    assert str(info.value).startswith(f"{path}, annotation id 2: unknown category id 99")
    assert isinstance(info.value, InputValueError)
    with pytest.raises(InputValueError, match="on_error"):
        read_coco(path, on_error="ignore")


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "is not valid JSON"),
        ('{"images": []}', "is not a COCO detection file"),
        ("[1, 2]", "is not a COCO detection file"),
        ('{"images": [], "annotations": [], "categories": []}', "lists no images"),
        (
            '{"images": [{"id": 1}], "annotations": [], "categories": [{"id": "a", "name": "x"}]}',
            r"categories\[0\] should have an int `id`",
        ),
    ],
)
def test_coco_file_that_is_not_coco_raises_naming_the_path(tmp_path, content, match):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(DetectionDataError, match=match) as info:
        read_coco(path)
    assert str(path) in str(info.value)
    with pytest.raises(DetectionDataError, match="not found"):
        read_coco(tmp_path / "missing.json")


def test_coco_all_images_missing_raises(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}], [])
    with pytest.raises(DetectionDataError, match="No usable image .* file not found"):
        read_coco(path)


# --- Pascal VOC ------------------------------------------------------------------------------


def test_voc_one_based_pixels_become_zero_based_xyxy(tmp_path):
    _image(tmp_path / "JPEGImages" / "a.png")
    _voc_xml(
        tmp_path / "Annotations" / "a.xml",
        "a.png",
        [("cat", (1, 1, 40, 30), 0), ("dog", (5, 6, 5, 9), 1)],
    )
    ds = read_voc(tmp_path / "Annotations", tmp_path / "JPEGImages")
    assert ds.labels == ["cat", "dog"] and ds.category_ids == [1, 2] and ds.problems == []
    (ex,) = ds.examples
    # whole image: pixels 1..40 x 1..30; a 1-pixel-wide box: pixel column 5 -> [4, 5)
    np.testing.assert_array_equal(ex.boxes, [[0, 0, 40, 30], [4, 5, 5, 9]])
    np.testing.assert_array_equal(ex.difficult, [False, True])


def test_voc_bad_objects_and_files(tmp_path):
    ann_dir, img_dir = tmp_path / "Annotations", tmp_path / "JPEGImages"
    _image(img_dir / "a.png")
    _image(img_dir / "b.png")
    a = _voc_xml(
        ann_dir / "a.xml",
        "a.png",
        [
            ("cat", (30, 20, 50, 30), 0),  # partly outside: clipped to [29, 19, 40, 30]
            ("cat", (45, 5, 50, 9), 0),  # entirely outside
            ("cat", (10, 10, 8, 12), 0),  # inverted
            ("cow", (1, 1, 5, 5), 0),  # unknown class
            ("cat", (1, "a", 5, 5), 0),  # non-numeric
            ("cat", (1, 1, 5, 5), 2),  # bad difficult
            ("", (1, 1, 5, 5), 0),  # no name
            ("cat", ("nan", 1, 5, 5), 0),  # NaN
        ],
    )
    b = _voc_xml(ann_dir / "b.xml", "b.png", [("cat", (1, 1, 5, 5), 0)], size=(41, 30))
    c = ann_dir / "c.xml"
    c.write_text("<annotation><filename>c.png</filename><object>")
    d = _voc_xml(ann_dir / "d.xml", "gone.png", [("cat", (1, 1, 5, 5), 0)])
    (img_dir / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    e = _voc_xml(ann_dir / "e.xml", "bad.png", [("cat", (1, 1, 5, 5), 0)] * 2)
    ds = read_voc(ann_dir, img_dir, labels=["cat", "dog"])
    problems = [(p.file, p.item, p.action, p.code) for p in ds.problems]
    assert problems == [
        (str(c), "file", "skipped", "malformed"),
        (str(a), "object 1", "fixed", "box_clipped"),
        (str(a), "object 2", "skipped", "box_outside"),
        (str(a), "object 3", "skipped", "box_inverted"),
        (str(a), "object 4", "skipped", "unknown_class"),
        (str(a), "object 5", "skipped", "malformed"),
        (str(a), "object 6", "skipped", "malformed"),
        (str(a), "object 7", "skipped", "malformed"),
        (str(a), "object 8", "skipped", "malformed"),
        (str(b), "size", "skipped", "size_mismatch"),
        (str(img_dir / "gone.png"), "image", "skipped", "image_missing"),
        (str(img_dir / "bad.png"), "image", "skipped", "image_unreadable"),
    ]
    reasons = [p.reason for p in ds.problems]
    assert reasons[0].startswith("malformed XML (no element found: line 1")
    assert reasons[1] == (
        "box partly outside the 40x30 image (xmin=30 ymin=20 xmax=50 ymax=30); "
        "clipped to [29, 19, 40, 30]"
    )
    assert reasons[3] == "inverted box (xmin=10 ymin=10 xmax=8 ymax=12): x_max < x_min; not swapped"
    assert reasons[4] == "unknown class name 'cow' (labels: ['cat', 'dog'])"
    assert (
        reasons[9] == f"<size> 41x30 is not the image file's 40x30 ({img_dir / 'b.png'}); "
        "skipped with its 1 object(s)"
    )
    assert reasons[10] == "file not found; skipped with its 1 object(s)"
    assert reasons[11] == ("truncated PNG file; skipped with its 2 object(s)")
    (ex,) = ds.examples
    np.testing.assert_array_equal(ex.boxes, [[29, 19, 40, 30]])
    assert d.exists() and e.exists()
    with pytest.raises(DataProblemError, match="c.xml, file: malformed XML"):
        read_voc(ann_dir, img_dir, labels=["cat", "dog"], on_error="raise")


def test_voc_empty_folder_raises(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DetectionDataError, match="No .xml files in"):
        read_voc(tmp_path / "Annotations", tmp_path / "JPEGImages")
    with pytest.raises(DetectionDataError, match="not found"):
        read_voc(tmp_path / "nope", tmp_path / "JPEGImages")


# --- YOLO ------------------------------------------------------------------------------------


def test_yolo_normalized_boxes_negatives_and_label_file_problems(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    for name in ("a.png", "empty.png", "nolabel.png", "sub/b.jpg"):
        _image(images / name, 40, 20)
    (images / "bad.png").write_bytes(b"")
    labels.mkdir()
    (labels / "sub").mkdir()
    # a byte-order mark, a blank line and Windows line ends are not problems
    (labels / "a.txt").write_text("\ufeff1 0.5 0.5 0.5 0.5\r\n\r\n0 0.125 0.25 0.25 0.5\r\n")
    (labels / "empty.txt").write_text("")
    (labels / "bad.txt").write_text("0 0.5 0.5 1 1\n1 0.5 0.5 1 1\n")
    (labels / "sub" / "b.txt").write_text("0 0.5 0.5 1 1\n")
    (labels / "stray.txt").write_text("0 0.5 0.5 1 1\n")
    (labels / "classes.txt").write_text("cat\ndog\n\n")
    ds = read_yolo(images, labels, labels / "classes.txt")
    assert ds.labels == ["cat", "dog"]
    by_name = {ex.image_path.rsplit("/", 1)[1]: ex for ex in ds.examples}
    np.testing.assert_allclose(by_name["a.png"].boxes, [[10, 5, 30, 15], [0, 0, 10, 10]])
    np.testing.assert_array_equal(by_name["a.png"].classes, [1, 0])
    np.testing.assert_array_equal(by_name["b.jpg"].boxes, [[0, 0, 40, 20]])
    assert by_name["empty.png"].boxes.shape == (0, 4)
    assert by_name["nolabel.png"].boxes.shape == (0, 4)
    assert [ex.image_id for ex in ds.examples] == [1, 3, 4, 5]
    assert ds.problems == [
        Problem(
            str(images / "bad.png"),
            "image",
            "zero-byte file; skipped with its 2 object(s)",
            "skipped",
            "image_unreadable",
        ),
        Problem(
            str(labels / "nolabel.txt"),
            "file",
            "no label file for this image; kept as a negative image (no objects). "
            "Write an empty .txt to mark negatives",
            "fixed",
            "label_file_missing",
        ),
        Problem(
            str(labels / "stray.txt"),
            "file",
            f"label file has no image in {images}",
            "skipped",
            "label_file_orphan",
        ),
    ]
    assert ds.summary()["negative_images"] == 2


def test_yolo_bad_lines_exact_problems(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _image(images / "a.png", 40, 20)
    lines = [
        "0 0.5 0.5 0.5",  # 1: wrong count
        "0 0.5 x 0.5 0.5",  # 2: non-numeric
        "0 0.5 nan 0.5 0.5",  # 3: NaN
        "3 0.5 0.5 0.5 0.5",  # 4: class out of range
        "0 0.5 0.5 -0.1 0.5",  # 5: inverted
        "0 0.5 0.5 0 0.5",  # 6: zero area
        "0 1.5 0.5 0.2 0.2",  # 7: entirely outside
        "1 1.0 0.5 0.5 0.5",  # 8: partly outside: [30, 5, 50, 15] -> [30, 5, 40, 15]
        "0.5 0.5 0.5 0.5 0.5",  # 9: class not an integer
    ]
    labels.mkdir()
    txt = labels / "a.txt"
    txt.write_text("\n".join(lines) + "\n")
    ds = read_yolo(images, labels, ["cat", "dog"])
    t = str(txt)
    assert ds.problems == [
        Problem(
            t,
            "line 1",
            "expected 5 values 'class x_center y_center width height', got 4: '0 0.5 0.5 0.5'",
            "skipped",
            "malformed",
        ),
        Problem(t, "line 2", "non-numeric value in '0 0.5 x 0.5 0.5'", "skipped", "malformed"),
        Problem(
            t,
            "line 3",
            "non-finite value or non-integer class in '0 0.5 nan 0.5 0.5'",
            "skipped",
            "malformed",
        ),
        Problem(t, "line 4", "class index 3 out of range for 2 labels", "skipped", "unknown_class"),
        Problem(
            t,
            "line 5",
            "inverted box (x_center=0.5 y_center=0.5 width=-0.1 height=0.5): "
            "x_max < x_min; not swapped",
            "skipped",
            "box_inverted",
        ),
        Problem(
            t,
            "line 6",
            "zero-area box (x_center=0.5 y_center=0.5 width=0 height=0.5)",
            "skipped",
            "box_zero_area",
        ),
        Problem(
            t,
            "line 7",
            "box entirely outside the 40x20 image (x_center=1.5 y_center=0.5 width=0.2 height=0.2)",
            "skipped",
            "box_outside",
        ),
        Problem(
            t,
            "line 8",
            "box partly outside the 40x20 image (x_center=1.0 y_center=0.5 width=0.5 height=0.5); "
            "clipped to [30, 5, 40, 15]",
            "fixed",
            "box_clipped",
        ),
        Problem(
            t,
            "line 9",
            "non-finite value or non-integer class in '0.5 0.5 0.5 0.5 0.5'",
            "skipped",
            "malformed",
        ),
    ]
    np.testing.assert_array_equal(ds.examples[0].boxes, [[30, 5, 40, 15]])
    with pytest.raises(DataProblemError, match="line 1: expected 5 values"):
        read_yolo(images, labels, ["cat", "dog"], on_error="raise")


def test_yolo_names_files_and_missing_inputs(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _image(images / "a.png")
    labels.mkdir()
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: cat\n  1: dog\n")
    assert read_yolo(images, labels, tmp_path / "data.yaml").labels == ["cat", "dog"]
    (tmp_path / "list.yaml").write_text("names: [cat, dog, bird]\n")
    assert read_yolo(images, labels, str(tmp_path / "list.yaml")).labels == ["cat", "dog", "bird"]
    (tmp_path / "gap.yaml").write_text("names: {0: cat, 2: dog}\n")
    with pytest.raises(DetectionDataError, match="gap.yaml should have `names:`"):
        read_yolo(images, labels, tmp_path / "gap.yaml")
    (tmp_path / "dup.txt").write_text("cat\ncat\n")
    with pytest.raises(DetectionDataError, match="names repeat"):
        read_yolo(images, labels, tmp_path / "dup.txt")
    with pytest.raises(DetectionDataError, match=r"names file .*missing.txt not found"):
        read_yolo(images, labels, tmp_path / "missing.txt")
    empty = tmp_path / "noimages"
    empty.mkdir()
    with pytest.raises(DetectionDataError, match=f"No images .* in {empty}"):
        read_yolo(empty, labels, ["cat"])


# --- round trips -----------------------------------------------------------------------------


def _coco_source(tmp_path):
    images = tmp_path / "src" / "images"
    _image(images / "a.png", 64, 48)
    _image(images / "b.png", 32, 32)
    _image(images / "c.png", 16, 16)
    anns = [
        _ann(1, [0.25, 1.5, 20.125, 30.75], 7, 1),
        _ann(2, [10, 10, 54, 38], 3, 1),
        _ann(3, [3.3, 4.4, 5.5, 6.6], 3, 2),
    ]
    entries = [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.png", "width": 32, "height": 32},
        {"id": 3, "file_name": "c.png", "width": 16, "height": 16},
    ]
    return read_coco(_coco(tmp_path / "src", entries, anns)), images


def _pairs(ds):
    return {ex.image_path: (ex.boxes, [ds.labels[c] for c in ex.classes]) for ex in ds.examples}


def test_round_trip_coco_yolo_coco(tmp_path):
    src, images = _coco_source(tmp_path)
    assert write_yolo(src, tmp_path / "labels", tmp_path / "classes.txt", images) == []
    assert (tmp_path / "labels" / "c.txt").read_text() == ""  # negative image: empty file
    back = read_yolo(images, tmp_path / "labels", tmp_path / "classes.txt")
    assert back.problems == [] and back.labels == src.labels
    want, got = _pairs(src), _pairs(back)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_allclose(got[key][0], want[key][0], rtol=0, atol=1e-5)
        assert got[key][1] == want[key][1]
    write_coco(back, tmp_path / "again.json", images)
    again = read_coco(tmp_path / "again.json", images)
    for key, (boxes, names) in _pairs(again).items():
        np.testing.assert_array_equal(boxes, got[key][0])  # COCO keeps float32 exactly
        assert names == got[key][1]


def test_round_trip_coco_voc_uses_whole_pixels(tmp_path):
    src, images = _coco_source(tmp_path)
    assert write_voc(src, tmp_path / "Annotations", images) == []
    back = read_voc(tmp_path / "Annotations", images, labels=src.labels)
    assert back.problems == []
    want, got = _pairs(src), _pairs(back)
    for key in want:
        np.testing.assert_allclose(got[key][0], want[key][0], rtol=0, atol=0.5)
        assert got[key][1] == want[key][1]
    # an integer box is exact: [10, 10, 64, 48] -> xmin=11 .. xmax=64 -> [10, 10, 64, 48]
    np.testing.assert_array_equal(got[str(images / "a.png")][0][1], [10, 10, 64, 48])
    text = (tmp_path / "Annotations" / "a.xml").read_text()
    assert "<xmin>11</xmin>" in text and "<xmax>64</xmax>" in text


def test_round_trip_keeps_flags_and_lists_what_a_format_cannot_hold(tmp_path):
    _image(tmp_path / "images" / "a.png")
    _voc_xml(
        tmp_path / "Annotations" / "a.xml",
        "a.png",
        [("cat", (1, 1, 10, 10), 1), ("cat", (2, 2, 9, 9), 0)],
    )
    voc = read_voc(tmp_path / "Annotations", tmp_path / "images")
    write_coco(voc, tmp_path / "out.json", tmp_path / "images")
    coco = read_coco(tmp_path / "out.json", tmp_path / "images")
    np.testing.assert_array_equal(coco.examples[0].difficult, [True, False])
    problems = write_yolo(coco, tmp_path / "labels", tmp_path / "names.txt", tmp_path / "images")
    assert [(p.item, p.action, p.code) for p in problems] == [
        ("object 1", "skipped", "not_written")
    ]
    assert (tmp_path / "labels" / "a.txt").read_text().count("\n") == 1
    crowd = _coco(
        tmp_path,
        [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        [_ann(1, [1, 1, 4, 4], 3, iscrowd=1)],
        name="crowd.json",
    )
    problems = write_voc(read_coco(crowd, tmp_path / "images"), tmp_path / "voc2")
    assert [(p.reason, p.code) for p in problems] == [
        ("crowd region: VOC has no crowd flag, not written", "not_written")
    ]


# --- layout detection ------------------------------------------------------------------------


def test_read_detection_dataset_detects_each_layout(tmp_path):
    src, images = _coco_source(tmp_path)
    coco_dir = tmp_path / "src"  # annotations.json + images/
    assert read_detection_dataset(coco_dir).labels == ["dog", "cat"]
    assert len(read_detection_dataset(coco_dir / "annotations.json").examples) == 3

    voc_dir = tmp_path / "voc"
    for name in ("a.png", "b.png", "c.png"):
        _image(voc_dir / "JPEGImages" / name, *Image.open(images / name).size)
    write_voc(src, voc_dir / "Annotations", images)
    voc = read_detection_dataset(voc_dir, labels=["dog", "cat"])
    assert voc.labels == ["dog", "cat"] and len(voc.examples) == 3
    assert voc.examples[0].image_path == str(voc_dir / "JPEGImages" / "a.png")

    yolo_dir = tmp_path / "yolo"
    for name in ("a.png", "b.png", "c.png"):
        _image(yolo_dir / "images" / name, *Image.open(images / name).size)
    write_yolo(src, yolo_dir / "labels", yolo_dir / "data.yaml.txt", images)
    with pytest.raises(DetectionDataError, match="No class names file .*classes.txt"):
        read_detection_dataset(yolo_dir)
    (yolo_dir / "data.yaml").write_text("names: [dog, cat]\n")
    yolo = read_detection_dataset(yolo_dir, format="yolo")
    assert yolo.labels == ["dog", "cat"] and len(yolo.examples) == 3
    # data.yaml.txt lies outside labels/, so no orphan rows
    assert yolo.problems == []

    (voc_dir / "images").mkdir()
    (voc_dir / "labels").mkdir()
    with pytest.raises(DetectionDataError, match="matches voc and yolo layouts"):
        read_detection_dataset(voc_dir)
    with pytest.raises(DetectionDataError, match="matches no layout"):
        read_detection_dataset(tmp_path)
    with pytest.raises(DetectionDataError, match="is not a coco layout"):
        read_detection_dataset(voc_dir, format="coco")
    with pytest.raises(InputValueError, match="`labels` is not used for COCO"):
        read_detection_dataset(coco_dir, labels=["a"])
    with pytest.raises(InputValueError, match="`format` should be one of"):
        read_detection_dataset(coco_dir, format="kitti")


def test_write_coco_default_images_dir_and_pycocotools_reads_it(tmp_path):
    from pycocotools.coco import COCO

    src, images = _coco_source(tmp_path)
    out = tmp_path / "out"
    for name in ("a.png", "b.png", "c.png"):
        _image(out / "images" / name, *Image.open(images / name).size)
    moved = [
        type(ex)(
            str(out / "images" / ex.image_path.rsplit("/", 1)[1]),
            ex.image_id,
            ex.width,
            ex.height,
            ex.boxes,
            ex.classes,
        )
        for ex in src.examples
    ]
    write_coco(type(src)(moved, src.labels, src.category_ids), out / "annotations.json")
    assert json.loads((out / "annotations.json").read_text())["images"][0]["file_name"] == "a.png"
    back = read_detection_dataset(out)
    assert back.problems == [] and back.category_ids == [3, 7]
    for a, b in zip(src.examples, back.examples, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
    gt = COCO(str(out / "annotations.json"))  # the reference reader accepts the file
    assert sorted(gt.getCatIds()) == [3, 7] and len(gt.getAnnIds()) == 3
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[1], catIds=[7]))[0]
    np.testing.assert_allclose(ann["bbox"], [0.25, 1.5, 20.125, 30.75])
    assert ann["area"] == pytest.approx(20.125 * 30.75)
