"""Artifacts kvision did not make whose input is uint8 pixels 0..255 without quantization.

The model divides by 255 inside and returns ``[m, 1 - m]`` with ``m`` the mean brightness, so a
consumer that feeds [0, 1]-scaled pixels cast to uint8 (0 or 1) gets ``m`` near 0: every check
here compares with the true brightness of the decoded pixels, never only with another
consumer (which could be wrong the same way). Issue 8 of the kvision tracker.
"""

import base64
import json
import shutil

import numpy as np
import pytest

from kvision.models.contract import InputContract, to_input_tensor
from kvision.preprocess import file_inputs, load_pixels

SIZE = (8, 8)
REF = __import__("pathlib").Path(__file__).resolve().parents[1] / "tflite_models"


def _brightness(pixels: np.ndarray) -> np.ndarray:
    """What the model must return for uint8 pixels ``[N, 8, 8, 1]``: mean / 255 per image."""
    return pixels.reshape(len(pixels), -1).astype(np.float64).mean(axis=1) / 255.0


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A uint8 SavedModel, the same as a raw uint8 .tflite and as a uint8 Keras model, and a
    labelled folder: ``a_bright`` (class 0, m > 0.5) and ``b_dark`` (class 1)."""
    import tensorflow as tf
    from PIL import Image

    from kvision._keras import keras

    root = tmp_path_factory.mktemp("uint8")

    class Brightness(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, *SIZE, 1], tf.uint8, name="pixels")])
        def serve(self, pixels):
            m = tf.reduce_mean(tf.cast(pixels, tf.float32) / 255.0, axis=[1, 2, 3])[:, None]
            return {"brightness": tf.concat([m, 1.0 - m], axis=-1)}

    module = Brightness()
    saved = root / "saved" / "1"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    raw = root / "raw_uint8.tflite"
    raw.write_bytes(converter.convert())

    inp = keras.Input((*SIZE, 1), dtype="uint8", name="pixels")
    m = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inp))
    out = keras.layers.Concatenate()([m, keras.layers.Rescaling(-1.0, offset=1.0)(m)])
    keras_file = root / "uint8.keras"
    keras.Model(inp, out).save(keras_file)

    rng = np.random.default_rng(0)
    files = []
    for name, lo, hi in (("a_bright", 170, 256), ("b_dark", 0, 90)):
        for i in range(4):
            shape = SIZE if i % 2 == 0 else (12, 16)  # every other image needs resizing
            path = root / "data" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(lo, hi, shape, dtype=np.uint8)).save(path)
            files.append(path)
    pixels = np.stack([load_pixels(f, 1, SIZE) for f in files])
    return {
        "saved": saved,
        "raw": raw,
        "keras": keras_file,
        "data": root / "data",
        "files": files,
        "pixels": pixels,
        "truth": _brightness(pixels),
        "labels": np.repeat([0, 1], 4),
        "root": root,
    }


def test_contract_keeps_the_raw_pixel_range_of_integer_inputs(zoo):
    from deploy.runtimes import artifact_contract, open_runtime
    from kvision._keras import load_model

    for path in (zoo["saved"], zoo["raw"]):
        with open_runtime(path) as rt:
            contract, source = artifact_contract(path, rt.input_spec)
        assert source == "derived"
        assert (contract.input_domain, contract.scale, contract.offset) == ("uint8", 1.0, 0.0)
        np.testing.assert_array_equal(contract.normalize(zoo["pixels"]), zoo["pixels"])
    keras_contract = InputContract.from_model(load_model(zoo["keras"]))
    assert keras_contract.input_domain == "uint8" and keras_contract.scale == 1.0
    # kvision's own int8 artifact: quantized I/O keeps the float domain, fed quantized floats
    with open_runtime(REF / "classifier_int8.tflite") as rt:
        assert rt.input_spec.quantized
        own, source = artifact_contract(REF / "classifier_int8.tflite", rt.input_spec)
    assert source == "file" and own.input_domain == "float" and own.scale == pytest.approx(1 / 255)


def test_contract_round_trip_and_validation():
    c = InputContract.for_tensor((None, 8, 8, 1), "uint8", labels=["x", "y"])
    assert InputContract.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match=r"input_domain='uint8'.*scale=0\.0039"):
        InputContract(8, 8, 1, input_domain="uint8")
    with pytest.raises(ValueError, match="`input_domain` should be 'float' or an integer"):
        InputContract(8, 8, 1, input_domain="pixels")
    with pytest.raises(ValueError, match="cannot hold pixels 0..255"):
        InputContract.for_tensor((None, 8, 8, 1), "int8")
    q = InputContract.for_tensor((None, 8, 8, 1), "int8", scale=0.5, zero_point=-128)
    assert q.input_domain == "float" and q.offset == 0.0  # quantized: pixels map onto q values


@pytest.mark.parametrize("fmt", ["saved", "raw"])
def test_serve_b64_and_integer_arrays_give_the_true_brightness(zoo, fmt):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from deploy.server import ModelStore, create_app

    store = ModelStore()
    store.add("m", zoo[fmt])
    client = TestClient(create_app(store))
    try:
        b64 = [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in zoo["files"]]
        got = client.post("/v1/models/m:predict", json={"instances": b64})
        assert got.status_code == 200, got.text
        np.testing.assert_allclose(np.array(got.json()["predictions"])[:, 0], zoo["truth"], 1e-5)
        ints = client.post("/v1/models/m:predict", json={"inputs": zoo["pixels"].tolist()})
        np.testing.assert_allclose(np.array(ints.json()["outputs"])[:, 0], zoo["truth"], 1e-5)
        meta = client.get("/v1/models/m/metadata").json()
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert next(iter(sig["inputs"].values()))["dtype"] == "DT_UINT8"
        assert meta["kvision"]["contract"]["input_domain"] == "uint8"
        scaled = (zoo["pixels"][:1] / 255.0).tolist()
        bad = client.post("/v1/models/m:predict", json={"instances": scaled})
        assert bad.status_code == 400
        assert "instances[0]: the model takes raw uint8 pixel values" in bad.json()["error"]
    finally:
        store.close()


def test_serve_refuses_a_contract_that_scales_raw_input(zoo, tmp_path):
    from deploy.server import ModelStore

    copy = tmp_path / "raw_uint8.tflite"
    shutil.copy(zoo["raw"], copy)
    InputContract(8, 8, 1, labels=["a", "b"]).save(tmp_path / "raw_uint8.contract.json")
    store = ModelStore()
    with pytest.raises(ValueError, match=r"raw_uint8\.tflite contradicts its input tensor"):
        store.add("m", copy)
    store.close()


def test_benchmark_folder_scores_raw_input_artifacts(zoo):
    from deploy.benchmark.data import EvalData
    from deploy.benchmark.run import run_benchmark

    data = EvalData.from_dataset("folder", zoo["data"])
    doc = run_benchmark(
        {"saved": zoo["saved"], "raw": zoo["raw"]},
        runtimes=["tf_cpu", "litert"],
        data=data,
        warmup=1,
        runs=2,
        throughput_runs=1,
        progress=False,
    )
    rows = {r["runtime"]: r for r in doc["rows"]}
    assert set(rows) == {"tf_cpu", "litert"}
    for row in rows.values():
        assert row["status"] == "ok", row["reason"]
        assert row["metric"]["value"] == 1.0 and row["metric"]["n"] == 8
    contract = InputContract.for_tensor((None, 8, 8, 1), "uint8")
    np.testing.assert_array_equal(data.inputs(contract), zoo["pixels"])


@pytest.mark.parametrize("source", ["saved", "keras"])
def test_convert_feeds_source_and_artifact_the_same_integer_pixels(zoo, tmp_path, source):
    from deploy.tools.convert import convert
    from kvision.export.litert import LiteRTModel
    from kvision.workflow import predict_files

    report = convert(zoo[source], ["float32"], tmp_path, name="m", calibration=zoo["data"])
    (art,) = report["artifacts"]
    assert art["status"] == "ok", art["reason"]
    assert report["contract"]["input_domain"] == "uint8"
    path = tmp_path / "m_float32.tflite"
    contract = InputContract.find(path)
    assert (contract.input_domain, contract.scale) == ("uint8", 1.0)
    out = LiteRTModel(path).predict(file_inputs(zoo["files"], contract))
    np.testing.assert_allclose(out[:, 0], zoo["truth"], atol=1e-5)
    results = predict_files(path, zoo["files"], top_k=2)
    got = [next(t["probability"] for t in r["top_k"] if t["index"] == 0) for r in results]
    np.testing.assert_allclose(got, zoo["truth"], atol=1e-5)


@pytest.mark.parametrize("fmt", ["saved", "raw", "keras"])
def test_predict_on_raw_input_models(zoo, fmt):
    from kvision.workflow import predict_files

    results = predict_files(zoo[fmt], zoo["files"], top_k=1)
    assert [r["top_k"][0]["index"] for r in results] == zoo["labels"].tolist()
    top = np.array([r["top_k"][0]["probability"] for r in results])
    np.testing.assert_allclose(top, np.maximum(zoo["truth"], 1 - zoo["truth"]), atol=1e-5)


def test_predict_refuses_a_contract_that_scales_raw_input(zoo, tmp_path):
    from kvision.workflow import predict_files

    copy = tmp_path / "raw_uint8.tflite"
    shutil.copy(zoo["raw"], copy)
    InputContract(8, 8, 1, labels=["a", "b"]).save(tmp_path / "raw_uint8.contract.json")
    with pytest.raises(ValueError, match="contradicts its input tensor"):
        predict_files(copy, zoo["files"][:1], top_k=1)


def test_verification_fails_outside_the_artifacts_domain(zoo, tmp_path):
    from kvision.export.verify import verify_artifact

    x = file_inputs(zoo["files"], InputContract.for_tensor((None, 8, 8, 1), "uint8"))
    reference = np.stack([zoo["truth"], 1 - zoo["truth"]], axis=1)
    copy = tmp_path / "raw_uint8.tflite"
    shutil.copy(zoo["raw"], copy)
    ok = verify_artifact(copy, "tflite", None, x, reference=reference, atol=1e-5)
    assert ok.status == "ok", ok.reason
    scaled = verify_artifact(copy, "tflite", None, x / 255.0, reference=reference, atol=None)
    assert scaled.status == "failed" and "takes raw uint8 pixel values" in scaled.reason
    InputContract(8, 8, 1).save(tmp_path / "raw_uint8.contract.json")
    stale = verify_artifact(copy, "tflite", None, x / 255.0, reference=reference, atol=None)
    assert stale.status == "failed" and "contradicts its input tensor" in stale.reason


def test_runtimes_never_round_scaled_floats_into_raw_input(zoo):
    from deploy.runtimes import open_runtime

    x = zoo["pixels"].astype(np.float32)
    for path, runtime in ((zoo["raw"], "litert"), (zoo["raw"], "litert_no_xnnpack"),
                          (zoo["saved"], "tf_cpu"), (zoo["keras"], "keras")):  # fmt: skip
        with open_runtime(path, runtime) as rt:
            np.testing.assert_allclose(rt.predict(x)[:, 0], zoo["truth"], atol=1e-5)
            with pytest.raises(ValueError, match=r"takes raw uint8 pixel values.*\[0, 1\]"):
                rt.predict(x / 255.0)
    assert to_input_tensor(np.array([0.0, 255.0]), "uint8").dtype == np.uint8
    quantized = to_input_tensor(np.array([0.0, 1.0]), "int8", scale=1 / 255, zero_point=-128)
    assert quantized.tolist() == [-128, 127]
