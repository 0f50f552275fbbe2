"""deploy.runtimes: one interface over LiteRT, SavedModel, Keras and ONNX Runtime."""

import json
import shutil

import numpy as np
import pytest

from deploy.runtimes import (
    RuntimeUnavailable,
    TensorInfo,
    artifact_contract,
    check_batch,
    default_runtimes,
    detect_format,
    open_runtime,
    supports_threads,
)
from deploy.runtimes.litert import LiteRTRuntime, find_delegate_library

REF = __import__("pathlib").Path(__file__).resolve().parents[1] / "tflite_models"
FLOAT = REF / "classifier_float32.tflite"
INT8 = REF / "classifier_int8.tflite"


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((REF / "metadata.json").read_text())
    pixels = np.load(REF / "golden_input.npy")
    c = meta["contract"]
    return pixels.astype(np.float32) * c["scale"] + c["offset"]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny untrained classifier exported as .keras, SavedModel and float32 .tflite."""
    from kvision.export import export
    from kvision.models import build_model

    out = tmp_path_factory.mktemp("export")
    model = build_model("compact_mobilenet", (28, 28, 1), 4, width=0.25)
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    arts = export(model, out, x)
    assert [a.status for a in arts] == ["ok", "ok"]
    model.save(out / "model.keras")
    return {
        "saved_model": out / "saved_model" / "classifier",
        "tflite": out / "tflite" / "classifier_float32.tflite",
        "keras": out / "model.keras",
        "x": x,
        "reference": model.predict(x, verbose=0),
    }


def test_detect_format_and_defaults(tiny_export, tmp_path):
    assert detect_format(FLOAT) == "tflite"
    assert detect_format(tiny_export["saved_model"]) == "saved_model"
    assert detect_format(tiny_export["saved_model"] / "1") == "saved_model"
    assert detect_format(tiny_export["keras"]) == "keras"
    assert default_runtimes("tflite") == ["litert", "litert_no_xnnpack"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="Cannot tell the format"):
        detect_format(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        detect_format(tmp_path / "missing.tflite")


def test_open_runtime_rejects_bad_choices(tiny_export):
    with pytest.raises(ValueError, match="Unknown runtime 'tflite_gpu'"):
        open_runtime(FLOAT, "tflite_gpu")
    with pytest.raises(ValueError, match="runs \\['saved_model'\\] artifacts"):
        open_runtime(FLOAT, "tf_cpu")
    with pytest.raises(ValueError, match="no thread setting"):
        open_runtime(tiny_export["saved_model"], "tf_cpu", threads=2)
    with pytest.raises(ValueError, match="threads=0"):
        open_runtime(FLOAT, "litert", threads=0)
    assert supports_threads("litert_delegate:gpu") and not supports_threads("keras")


def test_litert_reads_quantization_from_the_artifact(golden):
    with open_runtime(INT8, "litert", threads=1) as rt:
        spec = rt.input_spec
        y = rt.predict(golden)
    assert spec.dtype == "int8" and spec.quantized and spec.scale > 0
    assert spec.shape == (None, 28, 28, 1) and spec.name == "images"
    assert rt.output_spec.dtype == "int8" and rt.output_spec.shape == (None, 10)
    assert y.dtype == np.float32 and y.shape == (len(golden), 10)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=0.05)


@pytest.mark.parametrize("path", [FLOAT, INT8], ids=["float32", "int8"])
def test_fast_path_matches_litert_model_and_xnnpack_off(path, golden):
    from kvision.export.litert import LiteRTModel

    expected = LiteRTModel(path, num_threads=1).predict(golden)
    with LiteRTRuntime(path, threads=1) as rt:
        batch = rt.predict(golden)
        single = np.concatenate([rt.predict(golden[i]) for i in range(len(golden))])
        assert rt.uses_delegate  # XNNPACK took over
    with LiteRTRuntime(path, threads=1, xnnpack=False) as rt:
        ref_kernels = rt.predict(golden)
        assert not rt.uses_delegate
    np.testing.assert_array_equal(batch, expected)
    np.testing.assert_allclose(single, expected, atol=1e-6)
    # int8: XNNPACK and LiteRT's builtin kernels requantize differently (measured: up to 10
    # output quanta of 1/256 on these golden images); the predicted class must not change.
    atol = 1e-5 if path == FLOAT else 0.06
    np.testing.assert_allclose(ref_kernels, expected, atol=atol)
    np.testing.assert_array_equal(ref_kernels.argmax(-1), expected.argmax(-1))


def test_predict_checks_shape():
    with open_runtime(FLOAT, "litert") as rt:
        with pytest.raises(ValueError, match=r"\[N, 28, 28, 1\].*x.shape=\(2, 28, 28, 3\)"):
            rt.predict(np.zeros((2, 28, 28, 3)))
    spec = TensorInfo("images", (None, 4, 4, 1), "float32")
    with pytest.raises(ValueError, match="real numbers"):
        check_batch(np.full((1, 4, 4, 1), "a"), spec)
    assert check_batch(np.zeros((4, 4, 1), np.uint8), spec).shape == (1, 4, 4, 1)


def test_missing_delegate_is_unavailable_with_reason(tmp_path):
    rt = open_runtime(FLOAT, "litert_delegate:edgetpu")
    with pytest.raises(
        RuntimeUnavailable, match=r"edgetpu delegate not available here.*libedgetpu"
    ):
        rt.load()
    with pytest.raises(RuntimeUnavailable, match="not found"):
        find_delegate_library(str(tmp_path / "libnothing.so"))
    with pytest.raises(ValueError, match="should be one of"):
        find_delegate_library("warp-drive")


def test_saved_model_keras_and_litert_agree(tiny_export):
    x, ref = tiny_export["x"], tiny_export["reference"]
    outputs = {}
    for path, runtime in (
        (tiny_export["saved_model"], "tf_cpu"),
        (tiny_export["keras"], "keras"),
        (tiny_export["tflite"], "litert"),
    ):
        with open_runtime(path, runtime) as rt:
            assert rt.input_spec.shape[1:] == (28, 28, 1)
            outputs[runtime] = rt.predict(x)
    for runtime, y in outputs.items():
        np.testing.assert_allclose(y, ref, atol=1e-4, err_msg=runtime)


def test_tf_gpu_is_unavailable_without_a_gpu(tiny_export):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible here")
    with pytest.raises(RuntimeUnavailable, match="no GPU"):
        open_runtime(tiny_export["saved_model"], "tf_gpu").load()


def test_onnxruntime_matches_or_reports_not_installed(tiny_export, tmp_path):
    rt = open_runtime(tiny_export["saved_model"], "onnxruntime", threads=1, cache_dir=tmp_path)
    try:
        rt.load()
    except RuntimeUnavailable as exc:
        assert "not installed" in str(exc) and "pip install" in str(exc)
        return
    y = rt.predict(tiny_export["x"])
    assert (tmp_path / "model.onnx").is_file() and rt.describe()["conversion_s"] > 0
    rt.close()
    np.testing.assert_allclose(y, tiny_export["reference"], atol=1e-4)


def test_foreign_artifact_gets_a_derived_contract(tmp_path, golden):
    foreign = tmp_path / "someone_elses.tflite"
    shutil.copy(INT8, foreign)  # no contract.json beside it
    with open_runtime(foreign, "litert") as rt:
        contract, source = artifact_contract(foreign, rt.input_spec)
        spec = rt.input_spec
    assert source == "derived" and contract.shape == (28, 28, 1)
    # pixel p -> (p - 128 - zero_point) * scale: the artifact's own calibration
    assert contract.normalize(np.array([0.0]))[0] == pytest.approx(
        -(spec.zero_point + 128) * spec.scale
    )
    own, own_source = artifact_contract(INT8)
    assert own_source == "file" and own.labels[0] == "T-shirt/top"
