"""A LeNet-style classifier: conv -> pool -> conv -> pool -> dense -> softmax.

The smallest useful baseline (MNIST-class problems, quick experiments and tests). ``same``
padding and one 2x2 max-pool per conv stage, so any input of at least ``4 * 2**stages`` pixels
(16 px for the default two stages) works, grayscale or RGB. Built from builtin tf_keras layers
only (tfmot and the TFLite converter accept it).

Layer names form the blocks :mod:`kvision.models.transfer` unfreezes: ``conv1`` (``conv1``,
``conv1_bn``, ``conv1_relu``, ``pool1``), ``conv2`` ... and ``fc1`` (``fc1``, ``fc1_bn``,
``fc1_relu``); the head is ``dropout`` + ``probabilities``.
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.backbones.registry import pyramid_level, register_backbone
from kvision.errors import InputValueError
from kvision.models.registry import register_model

layers = keras.layers


@register_backbone("lenet")
def lenet_features(inputs, filters=(32, 64), kernel_size: int = 5, batch_norm: bool = True) -> dict:
    """The LeNet conv stages as backbone features: ``{"P{level}": tensor}``, one per stage
    (conv + BN + ReLU + 2x2 max-pool: P1, P2, ... at strides 2, 4, ...), fine to coarse.

    Args:
        inputs: image tensor ``[N, H, W, C]``.
        filters: filters of each conv stage (default ``(32, 64)``).
        kernel_size: conv kernel size (default 5).
        batch_norm: batch normalization after each conv (default True).
    """
    full = int(inputs.shape[1])
    features = {}
    x = inputs
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, kernel_size, padding="same", use_bias=not batch_norm, name=f"conv{i}")(
            x
        )
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name=f"conv{i}_bn")(x)
        x = layers.ReLU(name=f"conv{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        features[f"P{pyramid_level(full, int(x.shape[1]))}"] = x
    return features


@register_model("lenet")
def lenet(
    input_shape,
    num_classes,
    filters=(32, 64),
    kernel_size: int = 5,
    dense_units: int = 128,
    batch_norm: bool = True,
    dropout: float = 0.3,
):
    """LeNet-style CNN.

    Args:
        input_shape: ``(height, width, channels)``; each side at least ``4 * 2**len(filters)``
            pixels (16 for the default two stages).
        num_classes: number of classes.
        filters: filters of each conv stage; each stage is conv + (BN) + ReLU + 2x2 max-pool
            (default ``(32, 64)``).
        kernel_size: conv kernel size (default 5).
        dense_units: units of the hidden dense layer; 0 for none (default 128).
        batch_norm: batch normalization after each conv / dense layer (default True).
        dropout: dropout before the classifier (default 0.3).

    Example:
        >>> m = lenet((28, 28, 1), 10)
        >>> m.output_shape
        (None, 10)
    """
    filters = tuple(filters) if isinstance(filters, (list, tuple)) else (filters,)
    if not filters or any(not isinstance(f, int) or f < 1 for f in filters):
        raise InputValueError(
            f"`filters` should be a non-empty sequence of positive integers. "
            f"Received: filters={filters}"
        )
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise InputValueError(
            f"`kernel_size` should be a positive integer. Received: kernel_size={kernel_size!r}"
        )
    if not isinstance(dense_units, int) or dense_units < 0:
        raise InputValueError(
            f"`dense_units` should be an integer >= 0. Received: dense_units={dense_units!r}"
        )
    if not 0 <= dropout < 1:
        raise InputValueError(f"`dropout` should be in [0, 1). Received: dropout={dropout}")
    min_size = 4 * 2 ** len(filters)
    if min(input_shape[:2]) < min_size:
        raise InputValueError(
            f"`lenet` with {len(filters)} conv stage(s) needs inputs of at least "
            f"{min_size}x{min_size} pixels. "
            f"Received: input_shape={tuple(input_shape)}"
        )

    inputs = keras.Input(shape=input_shape, name="images")
    x = list(lenet_features(inputs, filters, kernel_size, batch_norm).values())[-1]
    x = layers.Flatten(name="flatten")(x)
    if dense_units:
        x = layers.Dense(dense_units, use_bias=not batch_norm, name="fc1")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name="fc1_bn")(x)
        x = layers.ReLU(name="fc1_relu")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="lenet")
