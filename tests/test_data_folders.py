"""Image-folder scanning, the bad-file policy, image decoding and the file dataset."""

import csv
import io
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kvision.data.folders import (
    BadFile,
    ImageError,
    file_dataset,
    load_image,
    scan_image_folder,
    write_bad_files,
)
from kvision.data.idx import DatasetError

RNG = np.random.default_rng(0)


def _gray(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _rgb(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, array_or_image, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array_or_image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **kwargs)
    return path


def _encoded(array, fmt) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _write(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _two_classes(root, n=2, size=(8, 8)) -> Path:
    """root/cat and root/dog with ``n`` grayscale PNGs each."""
    for c, name in enumerate(["cat", "dog"]):
        for i in range(n):
            _save(root / name / f"{i}.png", _gray(*size, seed=10 * c + i))
    return root


# --- good folders ----------------------------------------------------------------------------


def test_scan_orders_and_labels_deterministically(tmp_path):
    root = tmp_path / "train"
    _save(root / "zebra" / "b.png", _gray())
    _save(root / "zebra" / "a.jpg", _gray(seed=1))
    _save(root / "zebra" / "sub" / "c.bmp", _gray(seed=2))  # nested folders count for the class
    _save(root / "ant" / "2.PNG", _gray(seed=3))  # extension case is ignored
    _save(root / "ant" / "10.jpeg", _gray(seed=4))
    _write(root / "ant" / ".DS_Store", b"\x00\x01junk")  # hidden: ignored silently
    _write(root / ".hidden_class" / "x.png", b"junk")
    _write(root / "README.md", b"# notes")  # loose files in root: ignored
    scan = scan_image_folder(root)
    assert scan.class_names == ["ant", "zebra"]
    assert scan.files == [
        str(root / "ant" / "10.jpeg"),
        str(root / "ant" / "2.PNG"),
        str(root / "zebra" / "a.jpg"),
        str(root / "zebra" / "b.png"),
        str(root / "zebra" / "sub" / "c.bmp"),
    ]
    assert scan.labels.dtype == np.int64
    assert scan.labels.tolist() == [0, 0, 1, 1, 1]
    assert scan.bad_files == []
    assert (scan.channels, scan.image_size) == (1, (8, 8))
    again = scan_image_folder(root)
    assert again.files == scan.files and again.labels.tolist() == scan.labels.tolist()


def test_grayscale_modes_give_one_channel(tmp_path):
    root = tmp_path / "d"
    _save(root / "a" / "l.png", _gray())
    _save(root / "a" / "bits.png", Image.fromarray(_gray()).convert("1"))
    _save(root / "a" / "la.png", Image.fromarray(_gray()).convert("LA"))
    _save(root / "b" / "16.png", (_gray().astype(np.uint16) * 257))
    _save(root / "b" / "graypal.png", Image.fromarray(_gray()).convert("P"))
    scan = scan_image_folder(root)
    assert len(scan.files) == 5 and scan.bad_files == []
    assert scan.channels == 1


@pytest.mark.parametrize(
    "color",
    [
        lambda: Image.fromarray(_rgb()),
        lambda: Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE),
        lambda: Image.fromarray(_rgb()).convert("RGBA"),
    ],
    ids=["rgb", "palette", "rgba"],
)
def test_one_color_image_gives_three_channels(tmp_path, color):
    root = _two_classes(tmp_path / "d")
    _save(root / "dog" / "color.png", color())
    scan = scan_image_folder(root)
    assert scan.channels == 3 and scan.bad_files == []


def test_image_size_is_the_most_common(tmp_path):
    root = _two_classes(tmp_path / "d", n=2, size=(6, 10))
    _save(root / "cat" / "big.png", _gray(20, 30))
    scan = scan_image_folder(root)
    assert scan.image_size == (6, 10)  # (height, width)


def test_class_names_fix_the_label_order(tmp_path):
    root = _two_classes(tmp_path / "test")
    scan = scan_image_folder(root, class_names=["dog", "cat"])
    assert scan.class_names == ["dog", "cat"]
    assert [Path(f).parent.name for f in scan.files] == ["dog", "dog", "cat", "cat"]
    assert scan.labels.tolist() == [0, 0, 1, 1]


# --- bad files -------------------------------------------------------------------------------


def _truncate_end(data: bytes) -> bytes:
    return data[:-12]  # PNG without its IEND chunk: only verify() notices


def _corrupt_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(20) + data[mid + 20 :]


def _float_tiff(path):
    return _save(path, np.full((4, 4), 2.5, dtype=np.float32))


BAD_CASES = {
    "random_bytes": (
        "x.png",
        RNG.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "not an image (cannot identify)",
    ),
    "text_as_png": ("x.png", b"some notes\nnot a picture\n", "not an image (text file named .png)"),
    "truncated_png": ("x.png", _encoded(_rgb(32, 32), "PNG")[:-600], "truncated PNG file"),
    "png_without_end": ("x.png", _truncate_end(_encoded(_rgb(), "PNG")), "truncated PNG file"),
    "truncated_jpeg": ("x.jpg", _encoded(_rgb(64, 64), "JPEG")[:1500], "truncated JPEG file"),
    "truncated_bmp": ("x.bmp", _encoded(_rgb(), "BMP")[:100], "truncated BMP file"),
    "png_header_only": (
        "x.png",
        _encoded(_rgb(), "PNG")[:8],
        "corrupt PNG file (header cannot be read)",
    ),
    "zero_byte": ("x.jpg", b"", "zero-byte file"),
    "txt": ("notes.txt", b"hello", "unsupported extension .txt"),
    "no_extension": ("notes", b"hello", "unsupported extension (none)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_bad_file_gets_its_reason(tmp_path, case):
    name, data, reason = BAD_CASES[case]
    root = _two_classes(tmp_path / "d")
    bad = _write(root / "cat" / name, data)

    scan = scan_image_folder(root)
    assert scan.bad_files == [BadFile(str(bad), reason)]
    assert str(bad) not in scan.files and len(scan.files) == 4

    with pytest.raises(ImageError) as info:
        scan_image_folder(root, on_error="raise")
    assert (info.value.path, info.value.reason) == (str(bad), reason)
    assert str(bad) in str(info.value) and reason in str(info.value)
    assert "on_error='skip'" in str(info.value)


def test_corrupt_png_data(tmp_path):
    root = _two_classes(tmp_path / "d")
    bad = _write(root / "dog" / "x.png", _corrupt_middle(_encoded(_rgb(16, 16), "PNG")))
    [entry] = scan_image_folder(root).bad_files
    assert entry.path == str(bad) and entry.reason.startswith("corrupt PNG file (")


def test_unsupported_mode(tmp_path):
    root = _two_classes(tmp_path / "d")
    bad = _float_tiff(root / "dog" / "f.tif")
    scan = scan_image_folder(root, extensions=(".png", ".tif"))
    assert scan.bad_files == [BadFile(str(bad), "unsupported image mode 'F'")]
    with pytest.raises(ImageError, match="unsupported image mode 'F'"):
        load_image(bad, channels=1)


def test_raise_names_the_first_bad_file_in_order(tmp_path):
    root = _two_classes(tmp_path / "d")
    _write(root / "dog" / "a.png", b"")
    _write(root / "cat" / "z.png", b"")
    with pytest.raises(ImageError, match=str(root / "cat" / "z.png")):
        scan_image_folder(root, on_error="raise")


def test_image_error_pickles():
    error = pickle.loads(pickle.dumps(ImageError("a.png", "zero-byte file", "Fix it.")))
    assert (error.path, error.reason, str(error)) == (
        "a.png",
        "zero-byte file",
        "Bad image file a.png: zero-byte file. Fix it.",
    )


# --- dataset-level problems ------------------------------------------------------------------


def test_empty_class_folder_is_dropped_with_skip(tmp_path):
    root = _two_classes(tmp_path / "d")
    (root / "bird").mkdir()
    _write(root / "bird" / ".DS_Store", b"junk")  # hidden only: still empty
    scan = scan_image_folder(root)
    assert scan.class_names == ["cat", "dog"]
    assert scan.labels.tolist() == [0, 0, 1, 1]
    assert scan.bad_files == [BadFile(str(root / "bird"), "empty class folder")]


def test_class_with_only_bad_files_is_dropped_with_skip(tmp_path):
    root = _two_classes(tmp_path / "d")
    bad = _write(root / "bird" / "x.png", b"")
    scan = scan_image_folder(root)
    assert scan.class_names == ["cat", "dog"]
    assert scan.bad_files == [
        BadFile(str(bad), "zero-byte file"),
        BadFile(str(root / "bird"), "no usable images in class folder"),
    ]


def test_empty_class_folder_raises(tmp_path):
    root = _two_classes(tmp_path / "d")
    (root / "bird").mkdir()
    with pytest.raises(DatasetError, match=r"bird.*empty class folder"):
        scan_image_folder(root, on_error="raise")
    with pytest.raises(DatasetError, match=r"`class_names`.*empty class folder"):
        scan_image_folder(root, class_names=["bird", "cat", "dog"])


def test_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        scan_image_folder(root)
    message = str(info.value)
    assert str(root) in message
    assert "not found; expected one sub-folder per class, e.g. " in message
    assert str(root / "cat" / "1.png") in message


def test_root_is_a_file(tmp_path):
    root = _write(tmp_path / "images.png", b"x")
    with pytest.raises(DatasetError, match="is not a folder"):
        scan_image_folder(root)


def test_no_class_sub_folders(tmp_path):
    root = tmp_path / "flat"
    _save(root / "1.png", _gray())
    _save(root / "2.png", _gray())
    with pytest.raises(DatasetError, match=r"no class sub-folders \(2 images lie directly in"):
        scan_image_folder(root)


def test_single_class(tmp_path):
    root = tmp_path / "one"
    _save(root / "cat" / "1.png", _gray())
    with pytest.raises(
        DatasetError, match=r"1 class folder\(s\) with usable images \(cat\).*at least 2"
    ):
        scan_image_folder(root)


def test_two_classes_one_unusable_is_a_single_class(tmp_path):
    root = tmp_path / "d"
    _save(root / "cat" / "1.png", _gray())
    _write(root / "dog" / "1.png", b"")
    with pytest.raises(DatasetError, match="at least 2"):
        scan_image_folder(root)


def test_test_folder_with_unknown_class(tmp_path):
    root = _two_classes(tmp_path / "test")
    _save(root / "bird" / "1.png", _gray())
    with pytest.raises(DatasetError) as info:
        scan_image_folder(root, class_names=["cat", "dog"])
    message = str(info.value)
    assert message.startswith("Labels out of range")
    assert str(root / "bird") in message and "['cat', 'dog']" in message


def test_test_folder_missing_a_known_class(tmp_path):
    root = _two_classes(tmp_path / "test")
    with pytest.raises(DatasetError, match=r"bird not found.*\['bird', 'cat', 'dog'\]"):
        scan_image_folder(root, class_names=["bird", "cat", "dog"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"on_error": "x"}, "`on_error` should be one of skip, raise. Received: on_error='x'"),
        ({"class_names": ["cat"]}, "`class_names` should list at least 2 unique"),
        ({"class_names": ["cat", "cat"]}, "`class_names` should list at least 2 unique"),
        ({"extensions": ".png"}, "`extensions` should be a non-empty tuple"),
        ({"extensions": ("png",)}, "`extensions` should be a non-empty tuple"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    root = _two_classes(tmp_path / "d")
    with pytest.raises(ValueError) as info:
        scan_image_folder(root, **kwargs)
    assert not isinstance(info.value, DatasetError)
    assert message in str(info.value)


# --- load_image ------------------------------------------------------------------------------


def test_load_rgb_as_gray_uses_luma(tmp_path):
    rgb = _rgb()
    path = _save(tmp_path / "x.png", rgb)
    image = load_image(path, channels=1)
    expected = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8
    np.testing.assert_allclose(image[:, :, 0], expected, atol=1)


def test_load_gray_as_rgb_replicates(tmp_path):
    gray = _gray()
    image = load_image(_save(tmp_path / "x.bmp", gray), channels=3)
    assert image.shape == (8, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], gray)


def test_load_palette_looks_up_colors(tmp_path):
    palette_image = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    path = _save(tmp_path / "p.png", palette_image)
    palette = np.array(palette_image.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
    expected = palette[np.asarray(palette_image)]
    np.testing.assert_array_equal(load_image(path, channels=3), expected)


def test_load_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([_rgb(), np.zeros((8, 8), np.uint8)])  # fully transparent
    path = _save(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(load_image(path, channels=3), rgba[:, :, :3])


def test_load_la_drops_alpha(tmp_path):
    gray = _gray()
    path = _save(tmp_path / "la.png", Image.fromarray(gray).convert("LA"))
    np.testing.assert_array_equal(load_image(path, channels=1)[:, :, 0], gray)


def test_load_16_bit_keeps_the_high_byte(tmp_path):
    wide = np.random.default_rng(1).integers(0, 65536, (8, 8), dtype=np.uint16)
    path = _save(tmp_path / "16.png", wide)
    np.testing.assert_array_equal(load_image(path, channels=1)[:, :, 0], wide >> 8)
    rgb = load_image(path, channels=3)
    np.testing.assert_array_equal(rgb[:, :, 2], wide >> 8)


def test_load_one_bit(tmp_path):
    bits = _gray() > 127
    path = _save(tmp_path / "b.png", Image.fromarray(bits))
    np.testing.assert_array_equal(load_image(path, channels=1)[:, :, 0], bits * 255)


def test_load_cmyk(tmp_path):
    cmyk = np.array(
        [[[255, 0, 0, 0], [0, 0, 0, 255]], [[0, 255, 0, 0], [0, 0, 0, 0]]], dtype=np.uint8
    )
    path = _save(tmp_path / "c.tif", Image.fromarray(cmyk, "CMYK"))
    expected = [[[0, 255, 255], [0, 0, 0]], [[255, 0, 255], [255, 255, 255]]]
    assert load_image(path, channels=3).tolist() == expected


def test_load_resizes_bilinear(tmp_path):
    gray = _gray(6, 10)
    path = _save(tmp_path / "x.png", gray)
    image = load_image(path, channels=1, size=(12, 5))
    assert image.shape == (12, 5, 1)
    expected = np.asarray(Image.fromarray(gray).resize((5, 12), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(image[:, :, 0], expected)
    nearest = np.asarray(Image.fromarray(gray).resize((5, 12), Image.Resampling.NEAREST))
    assert not np.array_equal(image[:, :, 0], nearest)
    flat = load_image(_save(tmp_path / "flat.png", np.full((3, 3), 77, np.uint8)), 3, (7, 9))
    assert flat.shape == (7, 9, 3) and (flat == 77).all()


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.png: file not found"):
        load_image(tmp_path / "missing.png", channels=1)
    cut = _write(tmp_path / "cut.jpg", _encoded(_rgb(64, 64), "JPEG")[:1500])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated JPEG file"):
        load_image(cut, channels=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 2}, "`channels` should be 1 or 3. Received: channels=2"),
        ({"channels": 1, "size": (0, 4)}, "`size` should be a (height, width) pair"),
        ({"channels": 1, "size": 28}, "`size` should be a (height, width) pair"),
    ],
)
def test_load_bad_arguments(tmp_path, kwargs, message):
    path = _save(tmp_path / "x.png", _gray())
    with pytest.raises(ValueError) as info:
        load_image(path, **kwargs)
    assert message in str(info.value)


# --- file_dataset ----------------------------------------------------------------------------


def _collect(ds):
    images, labels = [], []
    for image, label in ds:
        images.append(image.numpy())
        labels.append(int(label))
    return images, labels


def test_file_dataset_shapes_dtypes_labels(tmp_path):
    root = tmp_path / "d"
    _save(root / "cat" / "a.png", _rgb(8, 8))
    _save(root / "cat" / "b.jpg", _gray(5, 9))  # other size: resized
    _save(root / "dog" / "c.bmp", _gray(8, 8, seed=3))
    scan = scan_image_folder(root)
    ds = file_dataset(scan.files, scan.labels, scan.channels, scan.image_size)
    image_spec, label_spec = ds.element_spec
    assert image_spec.shape == (8, 8, 3) and image_spec.dtype == tf.uint8
    assert label_spec.shape == () and label_spec.dtype == tf.int64
    images, labels = _collect(ds)
    assert labels == scan.labels.tolist() == [0, 0, 1]
    for image, path in zip(images, scan.files, strict=True):
        np.testing.assert_array_equal(image, load_image(path, 3, (8, 8)))
    batch = next(iter(ds.batch(3)))
    assert batch[0].shape == (3, 8, 8, 3)


def test_file_dataset_skips_a_file_corrupted_after_scan(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="kvision.data.folders")
    root = _two_classes(tmp_path / "d", n=3)
    scan = scan_image_folder(root)
    broken = root / "cat" / "1.png"
    broken.write_bytes(broken.read_bytes()[:20])
    (root / "dog" / "2.png").unlink()
    ds = file_dataset(scan.files, scan.labels, 1, (8, 8), on_error="skip")
    for _ in range(2):  # every epoch completes
        images, labels = _collect(ds)
        assert labels == [0, 0, 1, 1]
        assert len(images) == 4
    assert f"Skipping bad image file {broken}: " in caplog.text
    assert f"{root / 'dog' / '2.png'}: file not found" in caplog.text


def test_file_dataset_raise_names_the_file(tmp_path):
    root = _two_classes(tmp_path / "d")
    scan = scan_image_folder(root)
    broken = root / "dog" / "0.png"
    broken.write_bytes(b"")
    ds = file_dataset(scan.files, scan.labels, 1, (8, 8), on_error="raise")
    with pytest.raises(tf.errors.OpError, match=rf"{broken}: zero-byte file"):
        _collect(ds)


def test_file_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="`on_error` should be one of skip, raise"):
        file_dataset(["a.png"], [0], 1, (8, 8), on_error="ignore")
    with pytest.raises(ValueError, match="`labels` should hold one integer per file"):
        file_dataset(["a.png", "b.png"], [0], 1, (8, 8))
    with pytest.raises(ValueError, match="`size` should be a"):
        file_dataset(["a.png"], [0], 1, None)


# --- write_bad_files -------------------------------------------------------------------------


def test_write_bad_files(tmp_path):
    bad = [BadFile("d/cat/x,1.png", "zero-byte file"), BadFile("d/bird", "empty class folder")]
    path = write_bad_files(bad, tmp_path / "run" / "bad_files.csv")
    assert path == tmp_path / "run" / "bad_files.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["path", "reason"],
        ["d/cat/x,1.png", "zero-byte file"],
        ["d/bird", "empty class folder"],
    ]
    assert os.listdir(tmp_path / "run") == ["bad_files.csv"]  # no temp file left behind
    write_bad_files([], path)
    assert path.read_text() == "path,reason\n"


def test_exif_orientation_gives_upright_pixels_and_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to display
    root = tmp_path / "d"
    stored = {}
    for name in ("cat", "dog"):
        path = _save(root / name / "1.jpg", _rgb(6, 10), exif=exif, quality=95)
        stored[name] = np.asarray(Image.open(path).convert("RGB"))
    scan = scan_image_folder(root)
    assert scan.image_size == (10, 6)  # upright (height, width), not the stored (6, 10)
    image = load_image(root / "cat" / "1.jpg", channels=3)
    np.testing.assert_array_equal(image, np.rot90(stored["cat"], k=-1))
    images, _ = _collect(file_dataset(scan.files, scan.labels, 3, scan.image_size))
    np.testing.assert_array_equal(images[0], image)
