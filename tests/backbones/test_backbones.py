"""Backbones return named multi-scale features; classifiers are a backbone plus the task head."""

import pytest

from kvision._keras import keras
from kvision.backbones import backbone_options, build_backbone, list_backbones
from kvision.errors import InputTypeError, InputValueError
from kvision.models import build_model


@pytest.mark.parametrize("name", ["compact_mobilenet", "small_resnet", "lenet"])
@pytest.mark.parametrize("size", [28, 160])
def test_levels_match_strides(name, size):
    inputs = keras.Input((size, size, 3))
    features = build_backbone(name, inputs)
    levels = [int(k[1:]) for k in features]
    assert levels == sorted(levels) and len(set(levels)) == len(levels)
    for key, tensor in features.items():
        stride = 2 ** int(key[1:])
        assert tensor.shape[1] == -(-size // stride), (key, tensor.shape)


def test_compact_mobilenet_features_at_160px():
    features = build_backbone("compact_mobilenet", keras.Input((160, 160, 3)), head_channels=0)
    assert {k: tuple(v.shape[1:3]) for k, v in features.items()} == {
        "P1": (80, 80),
        "P2": (40, 40),
        "P3": (20, 20),
    }


def test_classifier_is_backbone_plus_classification_head():
    model = build_model("compact_mobilenet", (28, 28, 1), 10)
    deepest = list(build_backbone("compact_mobilenet", keras.Input((28, 28, 1))).values())[-1]
    pool = model.get_layer("pool")
    assert pool.input.shape[1:] == deepest.shape[1:]
    assert [layer.name for layer in model.layers[-3:]] == ["pool", "dropout", "probabilities"]


def test_errors_name_the_value():
    assert set(list_backbones()) >= {"compact_mobilenet", "small_resnet"}
    with pytest.raises(InputValueError, match="Did you mean `small_resnet`"):
        build_backbone("small_resnt", keras.Input((28, 28, 1)))
    with pytest.raises(InputTypeError, match=r"unknown option\(s\) \['depth'\]"):
        build_backbone("compact_mobilenet", keras.Input((28, 28, 1)), depth=3)
    assert "width" in backbone_options("compact_mobilenet")


def test_every_registered_backbone_is_a_pyramid():
    """LeNet and the tf_keras.applications families are registry backbones too."""
    names = set(list_backbones())
    assert {"lenet", "mobilenet_v2", "resnet50", "efficientnet_b0", "vgg16"} <= names
    features = build_backbone("mobilenet_v2", keras.Input((64, 64, 3)), alpha=0.35)
    levels = [int(k[1:]) for k in features]
    assert levels == [1, 2, 3, 4, 5]
    for key, tensor in features.items():
        assert tensor.shape[1] == 64 // 2 ** int(key[1:]), key


def test_lenet_classifier_is_its_backbone_plus_the_dense_head():
    model = build_model("lenet", (28, 28, 1), 10)
    deepest = list(build_backbone("lenet", keras.Input((28, 28, 1))).values())[-1]
    assert model.get_layer("flatten").input.shape[1:] == deepest.shape[1:]
    assert [layer.name for layer in model.layers[1:5]] == [
        "conv1",
        "conv1_bn",
        "conv1_relu",
        "pool1",
    ]


@pytest.mark.parametrize("backbone, options", [("lenet", {}), ("mobilenet_v2", {"alpha": 0.35})])
def test_a_detector_builds_and_converts_on_other_backbones(backbone, options, tmp_path):
    import numpy as np

    from kvision.export.converter import convert_tflite
    from kvision.runtime import split_ops, tflite_op_names
    from kvision.tasks.detection.model import build_detector
    from kvision.tasks.detection.task import contract_anchors

    model = build_detector((64, 64, 3), ["a", "b"], backbone, options, channels=16, depth=1)
    out = model(np.zeros((1, 64, 64, 3), np.float32))
    assert out["class_logits"].shape == (1, len(contract_anchors(model.kvision_contract)), 2)
    path = convert_tflite(model, tmp_path / f"{backbone}.tflite", "float32")
    assert split_ops(tflite_op_names(path)) == ([], [])
