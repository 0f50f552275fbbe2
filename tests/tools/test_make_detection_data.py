"""tools/make_detection_data.py: determinism, COCO validity, occlusion, splits, CLI, pixels.

The tool is loaded by path (``tools/`` is not a package). Tests that need Fashion-MNIST skip
when it is not installed; the compose / render / crop tests need only NumPy and Pillow.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_tool

REPO = Path(__file__).resolve().parents[2]
LUMA = np.array([0.299, 0.587, 0.114])


mdd = load_tool("make_detection_data")


@pytest.fixture(scope="module")
def fashion():
    """Fashion-MNIST read independently of the tool: {set: (images, labels)}."""
    from kvision.data.datasets import find_idx_dir
    from kvision.data.idx import DatasetError, read_idx

    try:
        d = find_idx_dir("fashion_mnist")
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    return {
        subset: (
            read_idx(next(d.glob(f"{stem}-images-idx3-ubyte*"))),
            read_idx(next(d.glob(f"{stem}-labels-idx1-ubyte*"))),
        )
        for subset, stem in (("train", "train"), ("test", "t10k"))
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, fashion):
    """A small dataset with many occlusions (4 large objects per image)."""
    out = tmp_path_factory.mktemp("det") / "set"
    summary = mdd.generate(
        out, n_train=10, n_val=4, n_test=4, objects_per_image=(3, 4), object_size=(40, 90),
        preview=4, progress=False,
    )  # fmt: skip
    return out, summary


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _decoded(coco, ann) -> np.ndarray:
    return coco.annToMask(ann).astype(bool)


# ------------------------------------------------------------------------ pure image functions
def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_compose_later_object_hides_part_of_earlier_one():
    background = np.full((20, 20, 3), 7, np.uint8)
    mask_a, mask_b = _disc(10, 10, 4.5, 4.5, 4.5), np.ones((6, 6), bool)
    a = mdd.Layer(np.full((10, 10, 3), 200, np.uint8), mask_a, 2, 3)
    b = mdd.Layer(np.full((6, 6, 3), 90, np.uint8), mask_b, 8, 6)
    image, visible = mdd.compose(background, [a, b])
    full_a = np.zeros((20, 20), bool)
    full_a[3:13, 2:12] = mask_a
    full_b = np.zeros((20, 20), bool)
    full_b[6:12, 8:14] = mask_b
    assert (full_a & full_b).sum() > 0  # the case really overlaps
    np.testing.assert_array_equal(visible[0], full_a & ~full_b)
    np.testing.assert_array_equal(visible[1], full_b)
    assert (image[full_b] == 90).all() and (image[full_a & ~full_b] == 200).all()
    assert (image[~full_a & ~full_b] == 7).all()
    assert (background == 7).all()  # input untouched


def test_compose_hand_computed_rectangles():
    a = mdd.Layer(np.full((4, 6, 3), 200, np.uint8), np.ones((4, 6), bool), 1, 1)
    b = mdd.Layer(np.full((4, 4, 3), 90, np.uint8), np.ones((4, 4), bool), 3, 2)
    _, visible = mdd.compose(np.zeros((10, 10, 3), np.uint8), [a, b])
    assert visible[0].sum() == 24 - 3 * 4  # rows 2-4 x cols 3-6 hidden
    assert visible[1].sum() == 16


def test_compose_rejects_layer_outside_canvas():
    from kvision.errors import InputValueError

    layer = mdd.Layer(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), 7, 0)
    with pytest.raises(InputValueError, match="leaves the 10x10"):
        mdd.compose(np.zeros((10, 10, 3), np.uint8), [layer])


@pytest.mark.parametrize("background", [0.0, 60.0, 127.0, 128.0, 200.0, 255.0])
def test_render_object_meets_contrast_rule(background):
    rng = np.random.default_rng(3)
    for _ in range(20):
        intensity = rng.uniform(0, 255, size=(12, 9)).astype(np.float32)
        mask = intensity > 40
        rgb = mdd.render_object(intensity, mask, background, rng, min_contrast=50)
        assert rgb.dtype == np.uint8 and rgb.shape == (12, 9, 3)
        assert (rgb[~mask] == 0).all()
        assert abs((rgb[mask] @ LUMA).mean() - background) >= 50
        # the object keeps its own pattern: luminance rises with intensity
        assert np.corrcoef(rgb[mask] @ LUMA, intensity[mask])[0, 1] > 0.9


def test_prepare_item_scales_silhouette_and_drops_specks():
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 10:15] = 180  # 20 x 5 object
    item[26, 1] = 255  # a one-pixel speck far away
    intensity, mask = mdd.prepare_item(item, 60)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert abs((rows[-1] - rows[0] + 1) - 60) <= 1 and abs((cols[-1] - cols[0] + 1) - 15) <= 1
    assert mask.sum() >= 0.85 * 60 * 15
    assert mdd.prepare_item(np.zeros((28, 28), np.uint8), 30) is None


@pytest.mark.parametrize("portrait", [False, True])
def test_background_crops_come_from_disjoint_bands(portrait):
    photo = np.repeat(np.repeat(np.arange(250, dtype=np.uint8)[None, :], 100, 0)[..., None], 3, 2)
    if portrait:
        photo = photo.transpose(1, 0, 2)
    bands = {"train": (0, 150), "val": (150, 200), "test": (200, 250)}
    rng = np.random.default_rng(0)
    for split, (lo, hi) in bands.items():
        for _ in range(10):
            crop = mdd.crop_background(photo, split, 32, rng)
            assert crop.shape == (32, 32, 3)
            assert lo <= crop.min() and crop.max() < hi, (split, crop.min(), crop.max())


# ------------------------------------------------------------------------ generated datasets
def test_same_seed_gives_identical_files_other_seed_differs(tmp_path, fashion):
    kwargs = {"n_train": 4, "n_val": 2, "n_test": 2, "progress": False}
    mdd.generate(tmp_path / "a", seed=5, **kwargs)
    mdd.generate(tmp_path / "b", seed=5, **kwargs)
    mdd.generate(tmp_path / "c", seed=6, **kwargs)
    a, b, c = (_files(tmp_path / k) for k in "abc")
    assert len(a) == 1 + 3 + 4 + 2 + 2 and a == b  # dataset.json, 3 annotations, 8 PNG
    assert a.keys() == c.keys()
    for name in a:
        if name.endswith(".png") or name.endswith("annotations.json"):
            assert a[name] != c[name], name


def test_coco_valid_boxes_areas_and_categories(dataset):
    from PIL import Image
    from pycocotools.coco import COCO

    out, summary = dataset
    for split in ("train", "val", "test"):
        coco = COCO(str(out / split / "annotations.json"))
        cats = coco.loadCats(coco.getCatIds())
        assert [c["id"] for c in cats] == [1, 2, 3, 4, 5]
        assert [c["name"] for c in cats] == ["trouser", "dress", "sneaker", "bag", "ankle_boot"]
        assert len(coco.imgs) == summary["splits"][split]["images"]
        assert len(list((out / split / "images").glob("*.png"))) == len(coco.imgs)
        for info in coco.imgs.values():
            with Image.open(out / split / "images" / info["file_name"]) as img:
                assert img.mode == "RGB" and img.size == (info["width"], info["height"])
        anns = coco.loadAnns(coco.getAnnIds())
        stats = summary["splits"][split]
        assert len(anns) == stats["objects"] > 0
        names = [coco.cats[a["category_id"]]["name"] for a in anns]
        assert stats["per_class"] == {c["name"]: names.count(c["name"]) for c in cats}
        small = sum(a["area"] < 32 * 32 for a in anns)
        large = sum(a["area"] > 96 * 96 for a in anns)
        assert stats["by_size"] == {
            "small": small,
            "medium": len(anns) - small - large,
            "large": large,
        }
        assert len({a["id"] for a in anns}) == len(anns)
        for ann in anns:
            info = coco.imgs[ann["image_id"]]
            mask = _decoded(coco, ann)
            assert mask.shape == (info["height"], info["width"])
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            tight = [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
            assert ann["bbox"] == [float(v) for v in tight]  # exact pixel-edge tight box
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert ann["area"] == mask.sum() >= mdd.MIN_AREA
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= info["width"] and y + h <= info["height"]
            assert ann["category_id"] in coco.cats and ann["iscrowd"] == 0


def test_occluded_objects_keep_only_visible_pixels(dataset):
    from pycocotools.coco import COCO

    out, _ = dataset
    coco = COCO(str(out / "train" / "annotations.json"))
    occluded = 0
    for image_id in coco.imgs:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = np.stack([_decoded(coco, a) for a in anns])
        assert masks.sum(0).max() <= 1  # each pixel belongs to at most one object
        assert anns[-1]["occluded"] == 0  # the last pasted object is on top
        for ann in anns:
            assert 0 <= ann["occluded"] <= 0.6 + 1e-4
            occluded += ann["occluded"] > 0
    assert occluded >= 3  # the fixture's crowded images really occlude


def test_crowded_images_respect_max_occluded(tmp_path, fashion):
    summary = mdd.generate(
        tmp_path / "crowd", n_train=6, n_val=0, n_test=0, image_size=96,
        objects_per_image=(6, 6), object_size=(50, 80), max_occluded=0.3, progress=False,
    )  # fmt: skip
    coco = json.loads((tmp_path / "crowd" / "train" / "annotations.json").read_text())
    hidden = [a["occluded"] for a in coco["annotations"]]
    assert summary["splits"]["train"]["dropped"] > 0  # the limit really had to act
    assert max(hidden) <= 0.3 and sum(h > 0 for h in hidden) >= 3
    assert min(a["area"] for a in coco["annotations"]) >= mdd.MIN_AREA


def test_splits_use_disjoint_source_items(dataset, fashion):
    out, _ = dataset
    sources = {}
    for split in ("train", "val", "test"):
        coco = json.loads((out / split / "annotations.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        keys = set()
        for ann in coco["annotations"]:
            src = ann["source"]
            assert src["dataset"] == "fashion_mnist"
            assert src["set"] == ("test" if split == "test" else "train")
            label = int(fashion[src["set"]][1][src["index"]])
            assert mdd.FASHION_CLASSES[label] == names[ann["category_id"]]
            keys.add((src["set"], src["index"]))
        sources[split] = keys
    assert not sources["train"] & sources["val"]
    assert not (sources["train"] | sources["val"]) & sources["test"]


def _correlation(item, luma, inside) -> float:
    """Pearson r between ``item`` cropped to its silhouette and resized to ``luma``'s shape
    (scikit-image, not the tool's Pillow) and ``luma``, over the ``inside`` pixels."""
    from skimage.transform import resize

    r, c = np.nonzero(item > mdd.MASK_THRESHOLD)
    crop = item[r.min() : r.max() + 1, c.min() : c.max() + 1].astype(float)
    scaled = resize(crop, luma.shape, order=1, anti_aliasing=True)
    return np.corrcoef(scaled[inside], luma[inside])[0, 1]


def test_pasted_pixels_come_from_the_source_item(dataset, fashion):
    from PIL import Image
    from pycocotools.coco import COCO

    out, _ = dataset
    coco = COCO(str(out / "train" / "annotations.json"))
    images, labels = fashion["train"]
    rng = np.random.default_rng(0)
    checked = []
    for ann in coco.loadAnns(coco.getAnnIds()):
        if ann["occluded"] > 0:
            continue
        x, y, w, h = (int(v) for v in ann["bbox"])
        file_name = coco.imgs[ann["image_id"]]["file_name"]
        luma = np.asarray(Image.open(out / "train" / "images" / file_name), float) @ LUMA
        inside = _decoded(coco, ann)[y : y + h, x : x + w]

        index = ann["source"]["index"]
        same_class = rng.choice(np.flatnonzero(labels == labels[index]), 20, replace=False)
        box = luma[y : y + h, x : x + w]
        others = [_correlation(images[i], box, inside) for i in same_class if i != index]
        true = _correlation(images[index], box, inside)
        assert true > 0.75 and true > max(others) + 0.05, (ann["id"], true, max(others))
        checked.append(true)
    assert len(checked) >= 10 and np.median(checked) > 0.95


def test_dataset_json_and_preview(dataset):
    from PIL import Image

    out, summary = dataset
    written = json.loads((out / "dataset.json").read_text())
    assert written["splits"] == summary["splits"]
    assert written["params"]["classes"] == list(mdd.DEFAULT_CLASSES)
    for stats in summary["splits"].values():
        assert sum(stats["per_class"].values()) == stats["objects"]
        assert sum(stats["by_size"].values()) == stats["objects"]
    with Image.open(out / "preview.png") as img:
        assert img.size[0] >= 2 * 160 * 2  # 2x2 grid of 2x-scaled tiles


def test_interrupted_run_leaves_nothing(tmp_path, fashion, monkeypatch):
    def boom(root, split, *args):
        if split == "val":
            raise KeyboardInterrupt
        return real(root, split, *args)

    real = mdd._write_split
    monkeypatch.setattr(mdd, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        mdd.generate(tmp_path / "set", n_train=2, n_val=1, n_test=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_or_replaced(tmp_path, fashion):
    kwargs = {"n_train": 2, "n_val": 1, "n_test": 1, "progress": False}
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a dataset of this tool"):
        mdd.generate(tmp_path / "foreign", overwrite=True, **kwargs)
    mdd.generate(tmp_path / "set", **kwargs)
    with pytest.raises(FileExistsError, match="--overwrite"):
        mdd.generate(tmp_path / "set", **kwargs)
    mdd.generate(tmp_path / "set", overwrite=True, seed=1, **kwargs)
    assert json.loads((tmp_path / "set" / "dataset.json").read_text())["params"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "set"]


def test_bad_arguments_name_the_value(tmp_path):
    from kvision.data.idx import DatasetError
    from kvision.errors import InputValueError

    with pytest.raises(InputValueError, match="Did you mean 'trouser'"):
        mdd.generate(tmp_path / "x", classes=["trousers"])
    with pytest.raises(InputValueError, match="object_size"):
        mdd.generate(tmp_path / "x", object_size=(50, 20))
    with pytest.raises(InputValueError, match="max_occluded"):
        mdd.generate(tmp_path / "x", max_occluded=1.0)
    with pytest.raises(DatasetError, match="opencv-doc"):
        mdd.generate(tmp_path / "x", classes=["digit_3"], digits_sheet=tmp_path / "no.png")
    assert not (tmp_path / "x").exists()


def test_digits_from_opencv_sheet(tmp_path):
    if not mdd.DEFAULT_DIGITS_SHEET.is_file():
        pytest.skip(f"{mdd.DEFAULT_DIGITS_SHEET} missing (Debian opencv-doc)")
    summary = mdd.generate(
        tmp_path / "d", classes=["digit_7", "digit_1"], n_train=3, n_val=1, n_test=1,
        progress=False,
    )  # fmt: skip
    assert [c["name"] for c in summary["categories"]] == ["digit_1", "digit_7"]
    coco = json.loads((tmp_path / "d" / "test" / "annotations.json").read_text())
    assert {a["source"]["dataset"] for a in coco["annotations"]} == {"opencv_digits"}


def test_cli_help_and_tiny_run(tmp_path, fashion, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mdd.main(["--help"])
    assert exit_info.value.code == 0 and "--preview" in capsys.readouterr().out
    argv = ["--out", str(tmp_path / "cli"), "--n-train", "2", "--n-val", "1", "--n-test", "1"]
    assert mdd.main([*argv, "--no-progress", "--classes", "bag,trouser"]) == 0
    printed = capsys.readouterr().out
    assert "trouser" in printed and "small" in printed
    coco = json.loads((tmp_path / "cli" / "train" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["trouser", "bag"]
    assert mdd.main([*argv, "--no-progress"]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
