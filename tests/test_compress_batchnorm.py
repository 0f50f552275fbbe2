"""BatchNormalization that tfmot cannot fold stays in float during QAT, with the reason.

tfmot only quantizes a BatchNormalization by folding it into the Conv2D/DepthwiseConv2D before it;
any other BatchNormalization made ``quantize_apply`` fail for the whole model, and a folded
Dense -> BatchNormalization gave an int8 file that disagrees with the QAT model.
"""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")

from kvision._keras import keras  # noqa: E402

L = keras.layers
SHAPE = (8, 8, 1)


def _finish(i, x):
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return _bn_statistics(keras.Model(i, L.Dense(3, activation="softmax", name="head")(x)))


def _bn_statistics(model):
    """Non-trivial BatchNorm statistics, so a wrong fold would show in the outputs."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            g, b, mean, var = layer.get_weights()
            layer.set_weights([g * 1.5, b + 0.2, mean + rng.normal(0, 0.1, mean.shape), var * 2])
    return model


def conv_with_activation_then_bn():
    i = keras.Input(SHAPE)
    x = L.Conv2D(4, 3, activation="relu", name="conv")(i)
    return _finish(i, L.BatchNormalization(name="bn")(x))


def activation_layer_between():
    i = keras.Input(SHAPE)
    x = L.ReLU(name="relu")(L.Conv2D(4, 3, name="conv")(i))
    return _finish(i, L.BatchNormalization(name="bn")(x))


def dense_then_bn():
    i = keras.Input(SHAPE)
    x = L.Flatten(name="flat")(L.Conv2D(4, 3, activation="relu", name="conv")(i))
    x = L.BatchNormalization(name="bn")(L.Dense(8, name="dense")(x))
    return _bn_statistics(keras.Model(i, L.Dense(3, activation="softmax", name="head")(x)))


def bn_on_the_input():
    i = keras.Input(SHAPE)
    x = L.BatchNormalization(name="bn")(i)
    return _finish(i, L.Conv2D(4, 3, activation="relu", name="conv")(x))


def bn_after_pooling():
    i = keras.Input(SHAPE)
    x = L.MaxPooling2D(name="pool")(L.Conv2D(4, 3, activation="relu", name="conv")(i))
    return _finish(i, L.BatchNormalization(name="bn")(x))


def conv_output_used_twice():
    i = keras.Input(SHAPE)
    c = L.Conv2D(4, 3, name="conv")(i)
    return _finish(i, L.Add(name="add")([L.BatchNormalization(name="bn")(c), c]))


def foldable_conv_bn_relu():
    i = keras.Input(SHAPE)
    x = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, use_bias=False, name="conv")(i))
    return _finish(i, L.ReLU(name="relu")(x))


def foldable_depthwise_bn():
    i = keras.Input(SHAPE)
    x = L.BatchNormalization(name="bn")(L.DepthwiseConv2D(3, name="conv")(i))
    return _finish(i, L.Activation("relu", name="act")(x))


UNFOLDABLE = [
    (conv_with_activation_then_bn, "follows Conv2D 'conv', which has its own activation (relu)"),
    (activation_layer_between, "follows ReLU 'relu', not a Conv2D or DepthwiseConv2D"),
    (dense_then_bn, "follows Dense 'dense'"),
    (bn_on_the_input, "applied to the model input"),
    (bn_after_pooling, "follows MaxPooling2D 'pool'"),
    (conv_output_used_twice, "whose output is also used elsewhere"),
]


@pytest.mark.parametrize(("build", "why"), UNFOLDABLE, ids=[b.__name__ for b, _ in UNFOLDABLE])
@pytest.mark.parametrize("scheme", ["default", "prune_preserve", "cluster_preserve"])
def test_unfoldable_batchnorm_stays_in_float_with_the_reason(build, why, scheme):
    from kvision.compress._tfmot import is_quantize_wrapper
    from kvision.compress.qat import quantize_model

    keras.utils.set_random_seed(0)
    qat, report = quantize_model(build(), scheme=scheme)
    row = report.row("bn")
    assert row.action == "float"
    assert why in row.reason and "tfmot cannot fold this BatchNormalization" in row.reason
    assert "bn" in report.message  # listed among the layers left in float during QAT
    assert not is_quantize_wrapper(qat.get_layer("bn"))
    assert report.row("head").action == "quantized"


@pytest.mark.parametrize("build", [foldable_conv_bn_relu, foldable_depthwise_bn])
def test_foldable_batchnorm_is_folded(build):
    from kvision.compress.qat import quantize_model

    keras.utils.set_random_seed(0)
    _, report = quantize_model(build())
    assert report.row("bn").action == "quantized"
    assert "folded into the preceding layer" in report.row("bn").reason
    assert report.count("float") == 0


def test_a_skipped_convolution_leaves_its_batchnorm_unfoldable():
    from kvision.compress.qat import quantize_model

    keras.utils.set_random_seed(0)
    _, report = quantize_model(foldable_conv_bn_relu(), skip_layers=["conv"])
    assert report.row("conv").reason.startswith("in skip_layers")
    assert "follows Conv2D 'conv', which is kept in float" in report.row("bn").reason


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "build",
    [
        dense_then_bn,
        pytest.param(conv_with_activation_then_bn, marks=SLOW),
        pytest.param(bn_on_the_input, marks=SLOW),
        pytest.param(foldable_conv_bn_relu, marks=SLOW),
    ],
)
def test_int8_file_agrees_with_the_qat_model(build, tmp_path):
    """The int8 file of every case is within the int8 parity tolerances (a folded Dense ->
    BatchNormalization was 0.28 off on softmax outputs)."""
    from kvision.compress.artifacts import PARITY_TOLERANCES, build_artifact
    from kvision.compress.qat import quantize_model

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, *SHAPE)).astype(np.float32)
    qat, _ = quantize_model(build())
    art = build_artifact(qat, tmp_path / "m.tflite", "int8", x, x)
    tol = PARITY_TOLERANCES["int8"]
    assert art.ok, art.reason
    assert art.checks["max_abs_diff"] <= tol["max_abs_diff"], art.checks["max_abs_diff"]
    assert art.checks["top1_agreement"] >= tol["top1"]


def test_compress_qat_row_is_ok_with_an_unfoldable_batchnorm(tmp_path):
    """The reported case end to end: the qat_int8 row is produced and verified, not failed."""
    from kvision.compress import CompressConfig, compress

    keras.utils.set_random_seed(0)
    model = conv_with_activation_then_bn()
    rng = np.random.default_rng(0)
    x = rng.random((32, *SHAPE)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(-1)  # the model's own labels: it is "accurate"
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    cfg = CompressConfig(techniques=["qat"], accuracy_floor=100, verify_samples=32)
    cfg.qat.outputs = ["int8"]
    cfg.qat.learning_rate = 1e-5
    result = compress(model, ds, ds, cfg, tmp_path, test=(x, y), resume=False)
    assert result.errors == {}
    assert result.artifact("qat_int8").ok, result.artifact("qat_int8").reason
    assert "tfmot cannot fold" in result.report("qat").row("bn").reason
