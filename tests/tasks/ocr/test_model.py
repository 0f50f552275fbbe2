"""The CRNN: shapes, CTC loss on the model, builtin-only TFLite files (no CTC / Flex op) for both
sequence models, and int8 for the convolution-only one."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.ocr.model import CHAR_OUTPUT, build_crnn

CHARSET = list("abc01")


@pytest.mark.parametrize("sequence", ["conv", "bilstm"])
def test_crnn_trains_with_ctc_and_converts_with_builtin_ops(sequence, tmp_path):
    from kvision.export.converter import convert_tflite
    from kvision.runtime import open_runtime, split_ops, tflite_op_names
    from kvision.tasks import get_task

    model = build_crnn((32, 64, 1), CHARSET, sequence=sequence, width=4, depth=1, units=8)
    assert model.output_shape == {CHAR_OUTPUT: (None, 16, 6)}
    contract = model.kvision_contract
    assert contract.task == "ocr" and contract.resize == "letterbox" and contract.labels == CHARSET
    task = get_task("ocr")
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 64, 1)).astype(np.float32)
    y = np.zeros((8, 4), np.int32)
    y[:, :3] = rng.integers(1, 6, (8, 3))  # 3 characters, 0-padded
    model.compile("adam", loss=task.compile_args(None, 6)["loss"])
    history = model.fit(x, {CHAR_OUTPUT: y}, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))

    variants = ["float32", "int8"] if sequence == "conv" else ["float32"]
    for variant in variants:
        path = tmp_path / f"{sequence}_{variant}.tflite"
        convert_tflite(model, path, variant, representative_data=x, contract=contract)
        ops = tflite_op_names(path)
        assert split_ops(ops) == ([], []), ops
        assert not any("CTC" in op for op in ops)
        rt = open_runtime(path, "litert")
        rt.load()
        out = rt.run(x[:4])
        keras_out = {CHAR_OUTPUT: model(x[:4], training=False)[CHAR_OUTPUT].numpy()}
        parity = task.parity(keras_out, out, variant, contract, min_agreement=0.0)
        if variant == "float32":
            assert parity.checks["max_abs_diff"] < 1e-3, parity.checks
        assert out[CHAR_OUTPUT].shape == (4, 16, 6)


def test_bad_crnn_settings_are_named():
    with pytest.raises(InputValueError, match="32 px high"):
        build_crnn((28, 64, 1), CHARSET)
    with pytest.raises(InputValueError, match="distinct single characters"):
        build_crnn((32, 64, 1), ["ab", "c"])
    with pytest.raises(InputValueError, match="`sequence` should be one of"):
        build_crnn((32, 64, 1), CHARSET, sequence="transformer")
