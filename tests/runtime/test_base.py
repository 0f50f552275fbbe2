"""kvision.runtime.base and probe: feeds, per-tensor (de)quantization, batching, probe domains.

References are computed by hand from the quantization formula ``real = (q - zero_point) *
scale``, never by the code under test.
"""

import numpy as np
import pytest

from kvision.runtime import (
    Runtime,
    TensorInfo,
    check_feeds,
    detect_format,
    primary_output,
    probe_feeds,
)
from kvision.runtime.base import to_float, to_tensor


def test_inputs_are_quantized_with_their_own_parameters():
    int8 = TensorInfo("a", (None, 4), "int8", scale=0.5, zero_point=-3)
    # round(x / 0.5) - 3, clipped to [-128, 127]
    got = to_tensor(np.array([[1.0, -1.0, 100.0, -100.0]]), int8)
    assert got.dtype == np.int8 and got.tolist() == [[-1, -5, 127, -128]]
    uint8 = TensorInfo("b", (None, 3), "uint8", scale=0.1, zero_point=10)
    assert to_tensor(np.array([[0.0, -5.0, 30.0]]), uint8).tolist() == [[10, 0, 255]]
    half = to_tensor(np.array([[0.1, 2.0]]), TensorInfo("c", (None, 2), "float16"))
    assert half.dtype == np.float16 and half.tolist() == [[np.float16(0.1), 2.0]]
    raw = TensorInfo("d", (None, 2), "uint8")  # no quantization: raw pixels, never rounded
    assert to_tensor(np.array([[0.0, 255.0]]), raw).tolist() == [[0, 255]]
    with pytest.raises(ValueError, match="raw uint8 pixel values"):
        to_tensor(np.array([[0.5, 1.0]]), raw)


def test_outputs_are_dequantized_with_their_own_parameters():
    out = TensorInfo("y", (None, 3), "int8", scale=0.25, zero_point=4)
    got = to_float(np.array([[4, 8, -128]], np.int8), out)  # (q - 4) * 0.25
    assert got.dtype == np.float32 and got.tolist() == [[0.0, 1.0, -33.0]]
    assert to_float(np.array([[7]], np.int32), TensorInfo("n", (None, 1), "int32")).tolist() == [
        [7.0]
    ]
    assert to_float(np.array([0.5], np.float16), TensorInfo("h", (None,), "float16")).dtype == (
        np.float32
    )


def test_primary_output_rules():
    boxes = TensorInfo("boxes", (None, 4), "float32")
    scores = TensorInfo("scores", (None, 3), "float32")
    probs = TensorInfo("probabilities", (None, 3), "float32")
    count = TensorInfo("count", (None,), "int32")
    assert primary_output([boxes]) == boxes
    assert primary_output([boxes, probs]) == probs
    assert primary_output([count, scores]) == scores
    assert primary_output([boxes, scores]) is None


def test_check_feeds_names_inputs_shapes_and_rows():
    inputs = [
        TensorInfo("image", (None, 2, 2, 1), "float32"),
        TensorInfo("meta", (None, 3), "int8"),
    ]
    image, meta = np.zeros((4, 2, 2, 1)), np.zeros((4, 3))
    arrays, n = check_feeds({"meta": meta, "image": image}, inputs)
    assert n == 4 and set(arrays) == {"image", "meta"}
    with pytest.raises(ValueError, match=r"2 inputs \['image', 'meta'\]: pass `feeds` as"):
        check_feeds(image, inputs)
    with pytest.raises(ValueError, match=r"unknown \['extra'\], missing \['meta'\]"):
        check_feeds({"image": image, "extra": meta}, inputs)
    with pytest.raises(ValueError, match="same number of rows"):
        check_feeds({"image": image, "meta": meta[:2]}, inputs)
    with pytest.raises(ValueError, match=r"`feeds\['meta'\]` should have shape \[N, 3\]"):
        check_feeds({"image": image, "meta": np.zeros((4, 2))}, inputs)
    one, n = check_feeds(np.zeros((2, 2, 1)), inputs[:1])  # one row without its batch axis
    assert n == 1 and one["image"].shape == (1, 2, 2, 1)


class _Doubler(Runtime):
    """A pure-Python runtime with a fixed or free batch that records every call's shape."""

    name = "doubler"

    def __init__(self, batch, no_batch_output=False):
        super().__init__("doubler.bin")
        self.batch, self.calls, self.no_batch_output = batch, [], no_batch_output

    def _load(self):
        x = TensorInfo("x", (self.batch, 2), "int8", scale=0.5, zero_point=0)
        return [x], [TensorInfo("y", (self.batch, 2), "float32")]

    def _invoke(self, tensors):
        x = tensors["x"]
        self.calls.append(x.shape)
        if self.no_batch_output:
            return {"y": x.sum(axis=0)}
        return {"y": x.astype(np.float32) * 2}


def test_fixed_batch_is_chunked_and_padded_free_batch_is_split():
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    fixed = _Doubler(3)
    y = fixed.run(x)["y"]
    assert fixed.calls == [(3, 2)] * 3  # 3 + 3 + 1 row padded to 3
    np.testing.assert_array_equal(y, x / 0.5 * 2)  # quantized (q = x / 0.5), doubled
    with pytest.raises(ValueError, match="fixed batch size 3"):
        fixed.run(x, batch_size=2)
    free = _Doubler(None)
    np.testing.assert_array_equal(free.run(x, batch_size=4)["y"], x / 0.5 * 2)
    assert free.calls == [(4, 2), (3, 2)]
    assert free.run(x[:0])["y"].shape == (0, 2)
    with pytest.raises(ValueError, match="without a batch axis of 4"):
        _Doubler(None, no_batch_output=True).run(x, batch_size=4)


def test_probe_feeds_stay_in_each_inputs_domain():
    inputs = [
        TensorInfo("raw", (None, 4, 4, 1), "uint8"),
        TensorInfo("q", (None, 8), "int8", scale=0.1, zero_point=-20),
        TensorInfo("f", (None, 3), "float16"),
        TensorInfo("flag", (None, 2), "bool"),
    ]
    feeds = probe_feeds(inputs, n=5)
    raw = feeds["raw"]
    assert raw.dtype == np.uint8 and raw.shape == (5, 4, 4, 1) and raw.max() > 200
    q = feeds["q"]  # real values the int8 tensor can hold: [(-128 + 20) * 0.1, (127 + 20) * 0.1]
    assert q.dtype == np.float32 and q.min() >= -10.8 and q.max() <= 14.7 and np.ptp(q) > 10
    assert 0 <= feeds["f"].min() and feeds["f"].max() < 1 and feeds["flag"].dtype == bool
    np.testing.assert_array_equal(probe_feeds(inputs, n=5)["raw"], raw)  # seeded
    with pytest.raises(ValueError, match=r"Input 'free' has free dimensions \[None, None, 3\]"):
        probe_feeds([TensorInfo("free", (None, None, 3), "float32")])


def test_keras_files_under_every_extension(tmp_path):
    for name in ("m.keras", "m.h5", "m.hdf5", "M.HDF5"):
        (tmp_path / name).write_bytes(b"x")
        assert detect_format(tmp_path / name) == "keras"
    (tmp_path / "m.pb").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.keras, \.h5, \.hdf5"):
        detect_format(tmp_path / "m.pb")
