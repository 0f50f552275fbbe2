"""Segmentation models: U-Net / FCN / DeepLab heads on registry backbones, QAT through tfmot on
Concatenate skips, transposed convolutions, bilinear upsampling and atrous convolutions, and
full-int8 TFLite files with builtin ops only that agree with the Keras model."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.config import load_config
from kvision.errors import InputValueError
from kvision.tasks.segmentation.heads import MASK_OUTPUT
from kvision.tasks.segmentation.model import build_segmenter

LABELS = ["background", "a", "b"]
CASES = [
    ("unet", {"width": 4, "depth": 2}, "unet", {"channels": 4}),
    ("unet", {"width": 4, "depth": 2}, "unet", {"channels": 4, "upsample": "resize"}),
    ("compact_mobilenet", {"width": 0.25}, "fcn", {}),
    ("compact_mobilenet", {"width": 0.25}, "deeplab", {"channels": 8}),
]


@pytest.mark.parametrize(("backbone", "options", "head", "head_options"), CASES,
                         ids=["unet", "unet-resize", "fcn", "deeplab"])  # fmt: skip
def test_heads_qat_and_int8_with_builtin_ops(backbone, options, head, head_options, tmp_path):
    from kvision.compress.qat import quantize_model
    from kvision.export.converter import convert_tflite
    from kvision.runtime import open_runtime, split_ops, tflite_op_names
    from kvision.tasks import get_task

    model = build_segmenter((32, 32, 1), LABELS, backbone, options, head, head_options)
    assert model.output_shape == {MASK_OUTPUT: (None, 32, 32, 3)}
    contract = model.kvision_contract
    assert contract.task == "segmentation" and contract.postprocess["head"] == head

    qat, report = quantize_model(model)
    convs = [r for r in report.rows if r.type in ("Conv2D", "Conv2DTranspose")]
    assert convs and all(r.action == "quantized" for r in convs), report.to_markdown()

    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1)).astype(np.float32)
    y = {MASK_OUTPUT: (x[..., 0] * 3).astype(np.int32)}
    # QAT is converted after fine-tuning: a few steps set the ranges of its quantizers (an
    # unfitted QAT model has near-zero output ranges that XNNPACK rightly refuses)
    qat.compile("adam", loss={MASK_OUTPUT: get_task("segmentation").compile_args(
        load_config().train, 3)["loss"][MASK_OUTPUT]})  # fmt: skip
    qat.fit(x, y, batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "m_int8.tflite"
    convert_tflite(qat, path, "int8", representative_data=x, contract=contract)
    flex, custom = split_ops(tflite_op_names(path))
    assert flex == [] and custom == []
    rt = open_runtime(path, "litert")
    rt.load()
    out = rt.run(x[:4])
    assert out[MASK_OUTPUT].shape == (4, 32, 32, 3)
    reference = {MASK_OUTPUT: qat(x[:4], training=False)[MASK_OUTPUT].numpy()}
    parity = get_task("segmentation").parity(reference, out, "qat_int8", contract,
                                             min_agreement=0.0)  # fmt: skip
    # an untrained model's argmax is fragile; the int8 file still follows its QAT model
    assert parity.checks["pixel_agreement"] > 0.7, parity.checks


def test_bad_model_settings_are_named():
    with pytest.raises(InputValueError, match="divisible by 16"):
        build_segmenter((40, 40, 1), LABELS, "unet", {"depth": 4})
    with pytest.raises(InputValueError, match="at least 2 classes"):
        build_segmenter((32, 32, 1), ["only"])
    with pytest.raises(InputValueError, match="`head` should be one of"):
        build_segmenter((32, 32, 1), LABELS, head="pspnet")
