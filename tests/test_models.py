"""Every registered model: builds, predicts, round-trips; application weights and size checks."""

import numpy as np
import pytest

from kvision._keras import keras, load_model
from kvision.models import build_model, list_models
from kvision.models.applications import APPLICATIONS, build_backbone, strip_input_preprocessing
from kvision.models.transfer import backbone_blocks, detect_family

# Reloading these from .keras takes 3-15 s each on 2 cores: their round trip runs with -m slow.
HEAVY = {"resnet50", "densenet121", "inception_v3", "vgg16", "efficientnet_b0"}
ROUND_TRIP_NAMES = [
    pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_models()
]
_BUILT = {}


def _small_shape(name, channels=3):
    size = max(32, APPLICATIONS[name].min_size) if name in APPLICATIONS else 32
    return (size, size, channels)


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _built(name):
    """(model, images, outputs) of registered ``name`` at its small input, built once per run."""
    if name not in _BUILT:
        shape = _small_shape(name)
        model = build_model(name, shape, 3)
        x = _images(shape)
        _BUILT[name] = (model, x, model(x, training=False).numpy())
    return _BUILT[name]


@pytest.mark.parametrize("name", list_models())
def test_model_builds_and_predicts(name):
    model, x, y = _built(name)
    assert isinstance(model, keras.Model)
    assert "input_layers" in model.get_config()  # a functional (graph) model
    assert model.input_names == ["images"]
    assert model.output_shape == (None, 3)
    assert model.kvision_contract.shape == x.shape[1:]
    assert not any(
        isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
        for layer in model.layers
    )  # tfmot rejects preprocessing layers
    assert y.shape == (2, 3)
    assert (y >= 0).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert detect_family(model).name == name
    assert len(backbone_blocks(model)) >= 2


@pytest.mark.parametrize("name", ROUND_TRIP_NAMES)
def test_model_keras_file_round_trip(name, tmp_path):
    model, x, y = _built(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = load_model(path)
    assert reloaded.input_names == ["images"]
    np.testing.assert_allclose(reloaded(x, training=False).numpy(), y, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_unknown_option_raises_type_error_naming_it(name):
    with pytest.raises(TypeError, match="not_an_option"):
        build_model(name, _small_shape(name), 3, not_an_option=1)


@pytest.mark.parametrize("name", ["lenet", "small_resnet", "mobilenet_v3_small"])
def test_grayscale_input(name):
    model = build_model(name, (32, 32, 1), 4)
    y = model(_images((32, 32, 1)), training=False).numpy()
    assert y.shape == (2, 4)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_application_too_small_input_names_model_minimum_and_size(name):
    minimum = APPLICATIONS[name].min_size
    size = minimum - 1
    with pytest.raises(ValueError, match=rf"`{name}`.*{minimum}x{minimum}.*\({size}, {size}, 3\)"):
        build_model(name, (size, size, 3), 3)


def test_lenet_too_small_input_and_bad_options():
    with pytest.raises(ValueError, match=r"16x16.*\(15, 15, 1\)"):
        build_model("lenet", (15, 15, 1), 3)
    with pytest.raises(ValueError, match="filters"):
        build_model("lenet", (28, 28, 1), 3, filters=(8, 0))
    with pytest.raises(ValueError, match="dropout=1.0"):
        build_model("lenet", (28, 28, 1), 3, dropout=1.0)


def test_small_resnet_depth_and_width_options():
    deep = build_model("small_resnet", (28, 28, 1), 3, blocks_per_stage=(3, 3, 3), width=8)
    names = {layer.name for layer in deep.layers}
    assert {"stage3_block3_add", "stage2_block1_shortcut_conv"} <= names
    assert "stage4_block1_add" not in names
    assert deep.get_layer("stage3_block3_2_conv").filters == 32
    assert deep.get_layer("stem_conv").strides == (1, 1)  # small input keeps its resolution
    with pytest.raises(ValueError, match="blocks_per_stage"):
        build_model("small_resnet", (28, 28, 1), 3, blocks_per_stage=())


def test_imagenet_weights_raise_without_download():
    with pytest.raises(ValueError, match=r"never downloads.*weights='/path/to/file.h5'"):
        build_model("mobilenet_v2", (32, 32, 3), 3, weights="imagenet")


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope_notop.h5"
    with pytest.raises(FileNotFoundError, match="nope_notop.h5"):
        build_model("resnet50", (32, 32, 3), 3, weights=str(missing))


@pytest.fixture(scope="module")
def vgg16_weights(tmp_path_factory):
    backbone = build_backbone("vgg16", (32, 32, 3))
    path = tmp_path_factory.mktemp("weights") / "vgg16_notop.h5"
    backbone.save_weights(str(path))
    return backbone, path


def test_local_weights_load_by_path(vgg16_weights):
    backbone, path = vgg16_weights
    model = build_model("vgg16", (32, 32, 3), 3, weights=str(path))
    np.testing.assert_array_equal(
        model.get_layer("block1_conv1").get_weights()[0],
        backbone.get_layer("block1_conv1").get_weights()[0],
    )
    features = keras.Model(model.input, model.get_layer("pool").input)
    x = _images((32, 32, 3))
    np.testing.assert_allclose(features(x).numpy(), backbone(x).numpy(), atol=1e-5)
    # Pretrained VGG16 weights expect caffe-style input (0..255 minus the mean): the registry
    # reads these attributes for the contract.
    assert model.kvision_input_scale == pytest.approx(1.0)
    assert model.kvision_input_offset == pytest.approx(-114.799, abs=1e-3)


def test_mismatched_weights_file_is_named(vgg16_weights):
    _, path = vgg16_weights
    with pytest.raises(ValueError, match=rf"{path.name}.*1 input channel"):
        build_model("vgg16", (32, 32, 1), 3, weights=str(path))


def test_strip_input_preprocessing_folds_into_scale_and_offset():
    inputs = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Normalization(mean=[0.5] * 3, variance=[0.25] * 3)(x)
    outputs = keras.layers.Conv2D(4, 3, name="conv")(x)
    model = keras.Model(inputs, outputs)

    stripped, scale, offset = strip_input_preprocessing(model)
    assert scale == pytest.approx(1 / 127.5) and offset == pytest.approx(-1.0)
    assert [layer.name for layer in stripped.layers] == ["images", "conv"]
    raw = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        stripped(raw * scale + offset).numpy(), model(raw).numpy(), atol=1e-4
    )


@pytest.mark.slow
def test_efficientnet_weights_without_preprocessing_layers_load(tmp_path):
    backbone = build_backbone("efficientnet_b0", (32, 32, 3))
    assert backbone.kvision_input_scale == pytest.approx(1 / 255.0)
    path = tmp_path / "effnet.h5"
    backbone.save_weights(str(path))
    model = build_model("efficientnet_b0", (32, 32, 3), 3, weights=str(path))
    features = keras.Model(model.input, model.get_layer("pool").input)
    x = _images((32, 32, 3))
    np.testing.assert_allclose(features(x).numpy(), backbone(x).numpy(), atol=1e-4)
