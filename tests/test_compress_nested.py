"""Nested models (a model used as a layer) are flattened, so every technique reaches every layer."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")

from kvision._keras import keras  # noqa: E402

L = keras.layers


def _bn_stats(model, seed=1):
    """Non-trivial BatchNorm statistics, so inference and training modes differ."""
    rng = np.random.default_rng(seed)
    for layer in model.submodules:
        if isinstance(layer, L.BatchNormalization):
            g, b, mean, var = layer.get_weights()
            layer.set_weights([g * 1.5, b + 0.2, mean + rng.normal(0, 0.3, mean.shape), var * 2])


def sequential_in_sequential():
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            L.Conv2D(4, 3, activation="relu", name="bb_conv1"),
            L.Conv2D(6, 3, activation="relu", name="bb_conv2"),
        ],
        name="backbone",
    )
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            backbone,
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(3, activation="softmax", name="head"),
        ],
        name="outer",
    )


def functional_calling_submodels():
    """Two levels of nesting, a frozen backbone called with training=False, a name clash."""
    keras.utils.set_random_seed(0)
    i = keras.Input((12, 12, 1))
    x = L.Conv2D(4, 3, use_bias=False, name="conv")(i)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    block = keras.Model(i, x, name="block")
    j = keras.Input((12, 12, 1))
    y = block(j)
    y = L.DepthwiseConv2D(3, name="dw")(y)
    backbone = keras.Model(j, y, name="backbone")
    k = keras.Input((12, 12, 1), name="images")
    z = L.Conv2D(1, 1, name="conv")(k)  # the outer "conv" keeps its name
    z = backbone(z, training=False)
    z = L.GlobalAveragePooling2D(name="gap")(z)
    out = L.Dense(3, activation="softmax", name="head")(z)
    model = keras.Model(k, out, name="outer")
    _bn_stats(model)
    return model


def _images(n=16, seed=0):
    return np.random.default_rng(seed).random((n, 12, 12, 1)).astype(np.float32)


@pytest.mark.parametrize("build", [sequential_in_sequential, functional_calling_submodels])
def test_flattened_model_has_the_same_weights_and_outputs(build):
    from kvision.compress.flatten import flatten_model, has_nested_models

    model = build()
    x = _images()
    flat = flatten_model(model)
    assert flat is not model and not has_nested_models(flat)
    assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
    np.testing.assert_array_equal(flat(x, training=False).numpy(), model(x, training=False).numpy())
    # the backbone was called with training=False: its BatchNorm stays in inference mode even
    # when the whole model runs in training mode, flattened or not
    np.testing.assert_allclose(
        flat(x, training=True).numpy(), model(x, training=True).numpy(), atol=1e-6
    )
    assert flat.count_params() == model.count_params()
    # copies: the input model is untouched and does not share layers with the flat one
    ids = {id(layer) for layer in model.submodules}
    assert not any(id(layer) in ids for layer in flat.layers)


def test_clashing_nested_names_are_prefixed_and_origins_listed():
    from kvision.compress.flatten import flatten_model, nested_origins

    model = functional_calling_submodels()
    flat = flatten_model(model)
    names = [layer.name for layer in flat.layers]
    assert len(names) == len(set(names))
    assert {"conv", "block_conv", "bn", "relu", "dw", "gap", "head"} <= set(names)
    assert flat.get_layer("conv").kernel.shape == (1, 1, 1, 1)  # the outer one
    assert nested_origins(model) == {
        "block_conv": "backbone/block",
        "bn": "backbone/block",
        "relu": "backbone/block",
        "dw": "backbone",
    }


def test_a_flat_functional_model_is_not_rebuilt():
    from kvision.compress.flatten import flatten_model

    i = keras.Input((4,))
    model = keras.Model(i, L.Dense(2)(i))
    assert flatten_model(model) is model


@pytest.mark.parametrize(
    ("build", "kernels"),
    [
        (sequential_in_sequential, {"bb_conv1", "bb_conv2", "head"}),
        (functional_calling_submodels, {"conv", "block_conv", "dw", "head"}),
    ],
)
def test_qat_prune_and_cluster_reach_nested_layers(build, kernels):
    from kvision.compress import ClusterConfig, PruneConfig
    from kvision.compress._tfmot import is_cluster_wrapper, is_pruning_wrapper, is_quantize_wrapper
    from kvision.compress.cluster import cluster_model
    from kvision.compress.prune import prune_model
    from kvision.compress.qat import quantize_model

    model = build()
    qat, report = quantize_model(model)
    wrapped = {layer.layer.name for layer in qat.layers if is_quantize_wrapper(layer)}
    assert kernels <= wrapped
    for name in kernels:
        assert report.row(name).action == "quantized", report.row(name)
    assert not any("layout" in r.reason or "unwrapped" in r.reason for r in report.rows)

    pruned, report, _ = prune_model(model, PruneConfig(target_sparsity=0.5), total_steps=10)
    wrapped = {layer.layer.name for layer in pruned.layers if is_pruning_wrapper(layer)}
    prunable = kernels - {"dw"}  # tfmot does not prune depthwise kernels
    assert wrapped == prunable == set(report.names("pruned"))

    clustered, report = cluster_model(model, ClusterConfig(clusters=2))
    wrapped = {layer.layer.name for layer in clustered.layers if is_cluster_wrapper(layer)}
    assert wrapped == set(report.names("clustered"))
    # tfmot clusters no depthwise kernel; the 1x1x1x1 "conv" has fewer values than clusters
    assert wrapped == kernels - {"dw", "conv"}


def test_compress_quantizes_the_nested_layers_and_says_where_they_came_from(tmp_path):
    """The reported case end to end: the qat_int8 row is ok *and* the nested convolutions are
    quantized; each row of a nested layer names the model it came from."""
    from kvision.compress import CompressConfig, compress

    model = functional_calling_submodels()
    x = _images(32)
    y = model.predict(x, verbose=0).argmax(-1)  # the model's own labels
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    cfg = CompressConfig(techniques=["qat"], accuracy_floor=100, verify_samples=32)
    cfg.qat.outputs = ["int8"]
    cfg.qat.learning_rate = 1e-5
    result = compress(model, ds, ds, cfg, tmp_path, test=(x, y), resume=False)
    assert result.artifact("float32").ok and result.artifact("qat_int8").ok
    report = result.report("qat")
    for name, origin in (("block_conv", "backbone/block"), ("dw", "backbone")):
        row = report.row(name)
        assert row.action == "quantized", row
        assert row.detail["nested_in"] == origin and f"nested model {origin}" in row.reason
    assert "nested_in" not in report.row("head").detail


def test_a_nested_subclassed_model_is_named_as_untouched():
    """A nested subclassed model cannot be inlined: each report says so, exactly, per layer."""
    from kvision.compress import PruneConfig
    from kvision.compress.prune import prune_model
    from kvision.compress.qat import quantize_model

    class Sub(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = L.Conv2D(4, 3, name="subconv")

        def call(self, x):
            return self.conv(x)

        def get_config(self):
            return {"name": self.name}

    i = keras.Input((12, 12, 1))
    x = L.GlobalAveragePooling2D(name="gap")(Sub(name="sub")(i))
    model = keras.Model(i, L.Dense(3, activation="softmax", name="head")(x))
    _, report = quantize_model(model)
    assert report.row("sub").action == "float"
    assert "nested subclassed model Sub" in report.row("sub").reason
    assert "none of its layers is quantized" in report.row("sub").reason
    _, report, _ = prune_model(model, PruneConfig(), total_steps=10)
    assert report.row("sub").action == "unchanged"
    assert "none of its layers is pruned" in report.row("sub").reason
    assert report.row("head").action == "pruned"
