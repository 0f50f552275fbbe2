"""One decode -> mode conversion -> resize -> normalize path: every consumer, identical inputs.

The same files (8- and 16-bit gray, palette, RGBA, CMYK, an EXIF-rotated JPEG, sizes that need
resizing) go through training and evaluation (``tf.data``), ``predict``, the benchmark's data,
``convert``'s calibration, ``serve``'s ``b64`` images and the array path; every one must give
bit-identical model inputs. Then the documented rules (``kvision.preprocess``) one by one.
Issue 8 of the kvision tracker.
"""

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kvision.models.contract import InputContract
from kvision.preprocess import decode_pixels, file_inputs, load_pixels, model_inputs

SIZE = (8, 8)
RNG = np.random.default_rng(7)
WIDE = RNG.integers(0, 65536, (12, 12), dtype=np.uint16)  # most values > 255
RGB = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
STORED = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)  # EXIF says: turn 90 degrees


def _fixtures() -> dict[str, bytes]:
    def encode(image, fmt, **kw):
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        return buf.getvalue()

    rgba = np.dstack([RGB[:8, :8], RNG.integers(0, 256, (8, 8), dtype=np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    cmyk = Image.fromarray(RNG.integers(0, 256, (10, 10, 4), dtype=np.uint8), "CMYK")
    return {
        "gray8.png": encode(Image.fromarray(RGB[:, :, 0]), "PNG"),  # 9x11: resized
        "gray16.png": encode(Image.fromarray(WIDE), "PNG"),
        "palette.png": encode(Image.fromarray(RGB).convert("P", colors=16), "PNG"),
        "rgba.png": encode(Image.fromarray(rgba), "PNG"),  # 8x8: no resize
        "cmyk.jpg": encode(cmyk, "JPEG", quality=95),
        "exif.jpg": encode(Image.fromarray(STORED), "JPEG", quality=95, exif=exif),
        "big.bmp": encode(Image.fromarray(RNG.integers(0, 256, (40, 30, 3), np.uint8)), "BMP"),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    paths = []
    for name, data in _fixtures().items():
        path = root / "calibration" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture(
    scope="module",
    params=[(1, "stretch"), (3, "stretch"), (1, "letterbox"), (3, "letterbox")],
    ids=["gray", "rgb", "gray-letterbox", "rgb-letterbox"],
)
def setup(request, files, tmp_path_factory):
    """The contract (non-trivial scale/offset, stretch or letterbox resize), the reference
    inputs, and an identity Keras model (outputs = flattened inputs) saved with the contract,
    for predict and serve."""
    from kvision._keras import keras

    channels, resize = request.param
    n_out = SIZE[0] * SIZE[1] * channels
    labels = [str(i) for i in range(n_out)]
    contract = InputContract(
        *SIZE, channels, scale=2 / 255, offset=-1.0, labels=labels, resize=resize
    )
    folder = tmp_path_factory.mktemp(f"identity{channels}{resize}")
    inp = keras.Input(contract.shape, name="images")
    keras.Model(inp, keras.layers.Flatten()(inp)).save(folder / "identity.keras")
    contract.save(folder)  # folder/contract.json, beside the model
    reference = file_inputs(files, contract)
    assert reference.shape == (len(files), *contract.shape) and reference.dtype == np.float32
    return contract, folder / "identity.keras", reference


def test_training_and_evaluation_pipelines(files, setup):
    from kvision.data import build_dataset
    from kvision.data.datasets import Split

    contract, _, reference = setup
    split = Split(np.arange(len(files)), files=[str(f) for f in files])
    for training in (False, True):  # training shuffles: the label is the file's index
        ds = build_dataset(split, contract, batch_size=len(files), training=training)
        x, y = (t.numpy() for t in next(iter(ds)))
        np.testing.assert_array_equal(x[np.argsort(y)], reference)


def test_array_path_matches_files(files, setup):
    from kvision.data import build_dataset
    from kvision.data.datasets import Split

    contract, _, reference = setup
    for i, f in enumerate(files):
        native = load_pixels(f, contract.channels)[None]  # as an IDX / .npz array would hold it
        np.testing.assert_array_equal(model_inputs(native, contract)[0], reference[i])
        ds = build_dataset(Split([0], images=native), contract, batch_size=1)
        np.testing.assert_array_equal(next(iter(ds))[0].numpy()[0], reference[i])


def test_predict(files, setup):
    from kvision.workflow import predict_files

    contract, model_file, reference = setup
    n_out = len(contract.labels)
    results = predict_files(model_file, files, top_k=n_out)
    for result, expected in zip(results, reference, strict=True):
        x = np.zeros(n_out, np.float32)
        for entry in result["top_k"]:
            x[entry["index"]] = entry["probability"]
        np.testing.assert_array_equal(x.reshape(contract.shape), expected)


def test_benchmark_data_and_convert_calibration(files, setup):
    from deploy.benchmark.data import EvalData
    from deploy.tools.convert import calibration_images

    contract, _, reference = setup
    data = EvalData(np.zeros(len(files)), files=[str(f) for f in files])
    np.testing.assert_array_equal(data.inputs(contract), reference)
    order = np.argsort([f.name for f in files])  # convert reads the folder sorted
    calib = calibration_images(files[0].parent, contract, limit=len(files))
    np.testing.assert_array_equal(calib, reference[order])


def test_serve_b64(files, setup):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from deploy.server import ModelStore, create_app
    from deploy.server.codec import decode_predict

    contract, model_file, reference = setup
    store = ModelStore()
    store.add("identity", model_file)
    try:
        served = store.resolve("identity")
        assert served.contract == contract
        body = {"instances": [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files]}
        got = TestClient(create_app(store)).post("/v1/models/identity:predict", json=body)
        assert got.status_code == 200, got.text
        x = np.array(got.json()["predictions"], np.float32).reshape(reference.shape)
        np.testing.assert_array_equal(x, reference)
        x, _ = decode_predict(json.dumps(body).encode(), served.input_spec, contract)
        np.testing.assert_array_equal(x, reference)
    finally:
        store.close()


# --- the rules --------------------------------------------------------------------------------


def test_16_bit_keeps_the_high_byte_never_clips():
    data = _fixtures()["gray16.png"]
    np.testing.assert_array_equal(decode_pixels(data, 1)[:, :, 0], WIDE >> 8)
    edge = np.array([[0, 255, 256, 300, 32768, 65535]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(edge).save(buf, "PNG")
    assert decode_pixels(buf.getvalue(), 1)[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]
    rgb = decode_pixels(buf.getvalue(), 3)
    assert (rgb == rgb[:, :, :1]).all()


def _png16(samples: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): color_type 2 = RGB,
    4 = gray + alpha; ``samples`` is uint16 ``[H, W, C]``."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def test_16_bit_rgb_and_gray_alpha_keep_the_high_byte():
    rgb = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    np.testing.assert_array_equal(decode_pixels(_png16(rgb, 2), 3), rgb >> 8)
    gray_alpha = RNG.integers(0, 65536, (5, 7, 2), dtype=np.uint16)
    gray = decode_pixels(_png16(gray_alpha, 4), 1)[:, :, 0]
    np.testing.assert_array_equal(gray, gray_alpha[:, :, 0] >> 8)


def test_alpha_is_dropped_not_composited():
    rgba = np.dstack([RGB[:4, :4], np.zeros((4, 4), np.uint8)])  # fully transparent
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    np.testing.assert_array_equal(decode_pixels(buf.getvalue(), 3), RGB[:4, :4])


def test_exif_orientation_is_applied():
    data = _fixtures()["exif.jpg"]
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    upright = decode_pixels(data, 3)
    assert stored.shape == (6, 10, 3) and upright.shape == (10, 6, 3)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))  # 90 degrees clockwise


def test_palette_cmyk_and_gray_conversions():
    fixtures = _fixtures()
    palette = Image.open(io.BytesIO(fixtures["palette.png"]))
    lut = np.array(palette.getpalette("RGB"), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(
        decode_pixels(fixtures["palette.png"], 3), lut[np.asarray(palette)]
    )
    cmyk = Image.open(io.BytesIO(fixtures["cmyk.jpg"]))
    assert cmyk.mode == "CMYK"
    np.testing.assert_array_equal(
        decode_pixels(fixtures["cmyk.jpg"], 3), np.asarray(cmyk.convert("RGB"))
    )
    gray = decode_pixels(fixtures["big.bmp"], 1)[:, :, 0].astype(float)
    rgb = decode_pixels(fixtures["big.bmp"], 3).astype(float)
    np.testing.assert_allclose(gray, rgb @ [0.299, 0.587, 0.114], atol=1)  # ITU-R 601 luma


def test_resize_is_pillow_bilinear_after_conversion():
    data = _fixtures()["big.bmp"]
    converted = Image.open(io.BytesIO(data)).convert("L")
    expected = np.asarray(converted.resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_pixels(data, 1, SIZE)[:, :, 0], expected)


def test_letterbox_keeps_the_aspect_ratio_with_gray_bars():
    """200x100 red -> 160x160: scaled 0.8 to 160x80, centred, rows 0-39 and 120-159 gray 114."""
    from kvision.preprocess import LETTERBOX_FILL, image_pixels, letterbox_geometry

    assert letterbox_geometry(200, 100, (160, 160)) == (0.8, 0, 40, 160, 80)
    assert letterbox_geometry(100, 100, (64, 32))[1:] == (0, 16, 32, 32)
    red = Image.new("RGB", (200, 100), (255, 0, 0))
    out = image_pixels(red, 3, (160, 160), resize="letterbox")
    assert out.shape == (160, 160, 3)
    assert np.all(out[:40] == LETTERBOX_FILL) and np.all(out[120:] == LETTERBOX_FILL)
    assert np.all(out[40:120] == [255, 0, 0])
    stretched = image_pixels(red, 3, (160, 160))
    assert np.all(stretched == [255, 0, 0])
    with pytest.raises(ValueError, match="resize"):
        image_pixels(red, 3, (160, 160), resize="crop")
    with pytest.raises(ValueError, match="resize"):
        InputContract(8, 8, 3, resize="crop")
    old = InputContract(8, 8, 3).to_dict()
    del old["resize"]  # a contract.json written before the field existed
    assert InputContract.from_dict(old).resize == "stretch"
