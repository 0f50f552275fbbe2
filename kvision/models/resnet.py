"""A small ResNet (basic blocks) for small images, configurable in depth and width.

CIFAR-style by default: a 3x3 stride-1 stem for inputs under 64 px (28x28 images keep their
resolution), an ImageNet-style 7x7 stride-2 stem + 3x3 max-pool from 64 px up, then stages of
basic residual blocks (two 3x3 convs, identity shortcut or a projection when the shape
changes), each stage doubling the width and halving the resolution. A downsampling projection
average-pools and then applies a 1x1 stride-1 convolution (ResNet-D, He et al., "Bag of Tricks
for Image Classification with Convolutional Neural Networks", CVPR 2019): it sees every input
pixel instead of one in four, and it keeps the model clear of oneDNN's 1x1 strided gradient
bug (``kvision._env``). Built from builtin tf_keras
layers only (tfmot and the TFLite converter accept it).

Layer names form the blocks :mod:`kvision.models.transfer` unfreezes: ``stem_*`` and
``stage{s}_block{b}_*``; the head is ``pool``, ``dropout`` and ``probabilities``.
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.backbones.registry import pyramid_level, register_backbone
from kvision.errors import InputValueError
from kvision.models.registry import register_model

layers = keras.layers


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def _basic_block(x, filters, stride, name):
    shortcut = x
    y = _conv_bn(x, filters, 3, stride, f"{name}_1")
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False)
    if stride != 1 or x.shape[-1] != filters:
        if stride != 1:  # ResNet-D: average-pool, then a 1x1 stride-1 projection
            shortcut = layers.AveragePooling2D(
                stride, strides=stride, padding="same", name=f"{name}_shortcut_pool"
            )(x)
        shortcut = _conv_bn(shortcut, filters, 1, 1, f"{name}_shortcut", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


@register_model("small_resnet")
def small_resnet(
    input_shape, num_classes, blocks_per_stage=(2, 2, 2), width: int = 16, dropout: float = 0.2
):
    """Small ResNet with basic blocks (``(2, 2, 2)`` at width 16 is ResNet-14-like, 0.18 M params).

    Args:
        input_shape: ``(height, width, channels)``; under 64 px the stem keeps full resolution.
        num_classes: number of classes.
        blocks_per_stage: residual blocks in each stage; stage ``s`` has ``width * 2**s`` filters
            and (after the first) halves the resolution (default ``(2, 2, 2)``).
        width: filters of the stem and the first stage (default 16).
        dropout: dropout before the classifier (default 0.2).

    Example:
        >>> m = small_resnet((32, 32, 3), 10, blocks_per_stage=(3, 3, 3))  # ResNet-20
        >>> m.output_shape
        (None, 10)
    """
    stages = (
        tuple(blocks_per_stage)
        if isinstance(blocks_per_stage, (list, tuple))
        else (blocks_per_stage,)
    )
    if not stages or any(not isinstance(n, int) or n < 1 for n in stages):
        raise InputValueError(
            f"`blocks_per_stage` should be a non-empty sequence of positive integers. "
            f"Received: blocks_per_stage={blocks_per_stage}"
        )
    if not isinstance(width, int) or width < 1:
        raise InputValueError(f"`width` should be a positive integer. Received: width={width!r}")
    if not 0 <= dropout < 1:
        raise InputValueError(f"`dropout` should be in [0, 1). Received: dropout={dropout}")

    from kvision.tasks import get_task

    inputs = keras.Input(shape=input_shape, name="images")
    features = small_resnet_features(inputs, stages, width)
    head = get_task("classification").build_head(features, num_classes, dropout=dropout)
    return keras.Model(inputs, head["probabilities"], name="small_resnet")


@register_backbone("small_resnet")
def small_resnet_features(inputs, blocks_per_stage=(2, 2, 2), width: int = 16) -> dict:
    """The small ResNet's stage outputs: ``{"P{level}": tensor}``, fine to coarse.

    Args:
        inputs: image tensor ``[N, H, W, C]``; under 64 px the stem keeps full resolution.
        blocks_per_stage: residual blocks per stage (default ``(2, 2, 2)``).
        width: filters of the stem and the first stage (default 16).
    """
    stages = (
        tuple(blocks_per_stage)
        if isinstance(blocks_per_stage, (list, tuple))
        else (blocks_per_stage,)
    )
    full = int(inputs.shape[1])
    if min(inputs.shape[1:3]) < 64:
        x = _conv_bn(inputs, width, 3, 1, "stem")
    else:
        x = _conv_bn(inputs, width, 7, 2, "stem")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    features = {}
    for s, n in enumerate(stages):
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            x = _basic_block(x, width * 2**s, stride, f"stage{s + 1}_block{b + 1}")
        features[f"P{pyramid_level(full, x.shape[1])}"] = x
    return features
