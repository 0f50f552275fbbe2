"""Backbones return named multi-scale features; classifiers are a backbone plus the task head."""

import pytest

from kvision._keras import keras
from kvision.backbones import backbone_options, build_backbone, list_backbones
from kvision.errors import InputTypeError, InputValueError
from kvision.models import build_model


@pytest.mark.parametrize("name", ["compact_mobilenet", "small_resnet"])
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
