"""Every runtime runs artifacts kvision did not make, with named inputs and outputs.

The zoo (tests/runtime/zoo.py) holds a two-output model (``boxes`` [N, 4], ``scores`` [N, 3])
and a two-input model (``image``, ``meta``) as SavedModel, .keras, .h5, .hdf5, float32,
float16 (float16 I/O tensors), int8 and uint8 (full-integer) .tflite; every runtime must return
Keras' outputs by name within zoo.TOLERANCE.
"""

import numpy as np
import pytest

from kvision.runtime import (
    RuntimeUnavailable,
    UnsupportedOpsError,
    find_contract,
    open_runtime,
    tflite_op_names,
)

DETECTOR = [
    ("saved_model", "tf_cpu", "saved_model"),
    ("saved_model", "onnxruntime", "onnx"),
    ("keras", "keras", "keras_file"),
    ("h5", "keras", "keras_file"),
    ("hdf5", "keras", "keras_file"),
    ("float32", "litert", "float32"),
    ("float32", "litert_no_xnnpack", "float32"),
    ("fixed_batch", "litert", "float32"),
    ("float16", "litert", "float16"),
    ("int8", "litert", "int8"),
    ("int8", "litert_no_xnnpack", "int8"),
    ("uint8", "litert", "uint8"),
]
TWO_INPUTS = [
    ("two_in_saved_model", "tf_cpu", "saved_model"),
    ("two_in_saved_model", "onnxruntime", "onnx"),
    ("two_in_keras", "keras", "keras_file"),
    ("two_in_float32", "litert", "float32"),
    ("two_in_int8", "litert", "int8"),
]


def _run(path, runtime, feeds):
    rt = open_runtime(path, runtime)
    try:
        rt.load()
    except RuntimeUnavailable as exc:  # ONNX Runtime is an optional extra
        assert "pip install" in str(exc)
        pytest.skip(str(exc))
    with rt:
        return rt.inputs, rt.outputs, rt.run(feeds)


@pytest.mark.parametrize("kind,runtime,tol", DETECTOR, ids=[f"{k}-{r}" for k, r, _ in DETECTOR])
def test_two_outputs_match_keras_by_name(zoo, kind, runtime, tol):
    from runtime.zoo import tolerance

    inputs, outputs, out = _run(zoo["paths"][kind], runtime, {"image": zoo["x"]})
    assert [i.name for i in inputs] == ["image"]
    assert sorted(o.name for o in outputs) == sorted(out) == ["boxes", "scores"]
    for name, reference in zoo["reference"].items():
        assert out[name].dtype == np.float32 and out[name].shape == reference.shape, name
        diff = float(np.abs(out[name] - reference).max())
        assert diff <= tolerance(tol, reference), (name, diff)


@pytest.mark.parametrize("kind,runtime,tol", TWO_INPUTS, ids=[f"{k}-{r}" for k, r, _ in TWO_INPUTS])
def test_two_inputs_fed_by_name_match_keras(zoo, kind, runtime, tol):
    from runtime.zoo import tolerance

    inputs, outputs, out = _run(zoo["paths"][kind], runtime, zoo["two_in_feeds"])
    assert sorted(i.name for i in inputs) == ["image", "meta"]
    reference = zoo["two_in_reference"]["value"]
    assert [o.name for o in outputs] == ["value"] and out["value"].shape == reference.shape
    assert float(np.abs(out["value"] - reference).max()) <= tolerance(tol, reference)


def test_tensor_types_come_from_the_artifact(zoo):
    """int8 / uint8 / float16 tensors as written; the input quantization is the calibration
    range [0, 1): scale 1/255 and zero point -128 (int8) or 0 (uint8)."""
    expected = {"int8": -128, "uint8": 0}
    for kind, zero_point in expected.items():
        with open_runtime(zoo["paths"][kind]) as rt:
            (image,) = rt.inputs
            assert image.dtype == kind and image.zero_point == zero_point
            assert image.scale == pytest.approx(1 / 255, rel=1e-3)
            assert {o.dtype for o in rt.outputs} == {kind} and all(o.quantized for o in rt.outputs)
    with open_runtime(zoo["paths"]["float16"]) as rt:
        assert [t.dtype for t in rt.inputs + rt.outputs] == ["float16"] * 3
        assert not rt.inputs[0].quantized


def test_batches_resize_chunk_and_pad(zoo):
    x, boxes = zoo["x"], zoo["reference"]["boxes"]
    with open_runtime(zoo["paths"]["fixed_batch"]) as rt:
        assert rt.inputs[0].shape == (2, 12, 12, 3)
        np.testing.assert_allclose(rt.run(x[:5])["boxes"], boxes[:5], atol=1e-5)  # 2 + 2 + 1
        with pytest.raises(ValueError, match="fixed batch size 2"):
            rt.run(x, batch_size=4)
    with open_runtime(zoo["paths"]["int8"]) as rt:
        whole = rt.run(x)
        for batch_size in (1, 4):
            chunked = rt.run(x, batch_size=batch_size)
            np.testing.assert_array_equal(chunked["scores"], whole["scores"])
        one = rt.run({"image": x[0]})  # one row without its batch axis
        np.testing.assert_array_equal(one["boxes"], whole["boxes"][:1])
        empty = rt.run(x[:0])
        assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0, 3)


def test_single_tensor_conveniences_refuse_ambiguity(zoo):
    with open_runtime(zoo["paths"]["float32"]) as rt:
        assert rt.input_spec.name == "image"
        with pytest.raises(ValueError, match=r"outputs \['boxes', 'scores'\].*Use `run\(\)`"):
            rt.predict(zoo["x"])
    with open_runtime(zoo["paths"]["two_in_float32"]) as rt:
        with pytest.raises(ValueError, match=r"has 2 inputs.*run\(\{name: array\}\)"):
            _ = rt.input_spec
        with pytest.raises(ValueError, match=r"pass `feeds` as \{name: array\}"):
            rt.run(zoo["x"])
        assert rt.output_spec.name == "value"


def test_custom_op_is_named(zoo):
    path = zoo["paths"]["custom_op"]
    assert tflite_op_names(path) == ["MatrixDeterminant"]  # tf.linalg.det's TF op
    for runtime in ("litert", "litert_no_xnnpack"):
        with pytest.raises(UnsupportedOpsError, match=r"needs custom ops \['MatrixDeterminant'\]"):
            open_runtime(path, runtime).load()


def test_contracts_of_foreign_artifacts(zoo):
    with open_runtime(zoo["paths"]["int8"]) as rt:
        contract, source = find_contract(zoo["paths"]["int8"], rt.inputs)
    assert source == "derived" and contract.shape == (12, 12, 3)
    with open_runtime(zoo["paths"]["two_in_float32"]) as rt:
        assert find_contract(zoo["paths"]["two_in_float32"], rt.inputs) == (None, None)
