"""A compact MobileNetV2-style classifier sized for 28x28 to 96x96 inputs.

Depthwise-separable convolutions in inverted residual blocks (expand 1x1 -> depthwise 3x3 ->
project 1x1, residual when shapes match), ReLU6, optional squeeze-and-excitation. Built from
builtin tf_keras layers only, so tfmot (pruning, QAT, clustering) and the TFLite converter accept
it. A stride-2 stage is made stride 1 when it would shrink the feature map below 4 px, so small
inputs keep a usable map: 28x28 runs at 14, 7 and 4 px. Keeping 7x7 in the deep blocks (stride 1
there) doubled the training cost on a 2-core CPU (about 750 vs 1,600 images/s) for lower accuracy
at the same wall time, measured on Fashion-MNIST.
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.backbones.registry import pyramid_level, register_backbone
from kvision.errors import InputValueError
from kvision.models.registry import register_model

layers = keras.layers

# (expansion, output channels, repeats, first stride)
_BLOCKS = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 40, 2, 2),
    (4, 80, 2, 1),
    (4, 112, 1, 1),
)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _stride(stride: int, size: int, min_size: int = 4) -> int:
    """``stride``, or 1 when striding would shrink a ``size``-px map below ``min_size`` px."""
    return stride if stride > 1 and -(-size // stride) >= min_size else 1


def _conv_bn(x, filters, kernel, stride, name, act=True, l2=None):
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_regularizer=l2,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    if act:
        x = layers.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def _squeeze_excite(x, channels, name, ratio=4):
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = layers.Conv2D(max(8, channels // ratio), 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="hard_sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_scale")([x, s])


def _inverted_residual(x, expansion, filters, stride, se, name):
    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn(y, _make_divisible(in_ch * expansion), 1, 1, f"{name}_expand")
    y = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw"
    )(y)
    y = layers.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    if se:
        y = _squeeze_excite(y, y.shape[-1], name)
    y = _conv_bn(y, filters, 1, 1, f"{name}_project", act=False)
    if stride == 1 and in_ch == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


@register_backbone("compact_mobilenet")
def compact_mobilenet_features(
    inputs, width: float = 1.0, squeeze_excite: bool = False, head_channels: int = 256
) -> dict:
    """The compact MobileNet's features: ``{"P{level}": tensor}``, fine to coarse.

    One entry per resolution (the last block at that stride); the deepest one ends with the
    1x1 ``head`` convolution to ``head_channels`` (``0`` leaves it out, e.g. under a detection
    neck). At 28x28 the levels are P1 (14 px), P2 (7 px) and P3 (4 px); at 160x160 P1 (80),
    P2 (40) and P3 (20).

    Args:
        inputs: image tensor ``[N, H, W, C]``.
        width: channel multiplier (default 1.0).
        squeeze_excite: squeeze-and-excitation in blocks after the first (default False).
        head_channels: channels of the last 1x1 conv (default 256; 0: none).
    """
    if width <= 0:
        raise InputValueError(f"`width` should be > 0. Received: width={width}")
    if head_channels < 0:
        raise InputValueError(
            f"`head_channels` should be >= 0. Received: head_channels={head_channels}"
        )
    full = int(inputs.shape[1])
    size = min(inputs.shape[1:3])
    stem_stride = _stride(2, size)
    size = -(-size // stem_stride)
    x = _conv_bn(inputs, _make_divisible(32 * width), 3, stem_stride, "stem")
    features = {f"P{pyramid_level(full, x.shape[1])}": x}
    for b, (t, c, n, s) in enumerate(_BLOCKS):
        stride = _stride(s, size)
        size = -(-size // stride)
        for i in range(n):
            x = _inverted_residual(
                x,
                t,
                _make_divisible(c * width),
                stride if i == 0 else 1,
                se=squeeze_excite and b > 0,
                name=f"block{b + 1}_{i + 1}",
            )
        features[f"P{pyramid_level(full, x.shape[1])}"] = x
    if head_channels:
        x = _conv_bn(x, _make_divisible(head_channels * max(1.0, width)), 1, 1, "head")
        features[f"P{pyramid_level(full, x.shape[1])}"] = x
    return features


@register_model("compact_mobilenet")
def compact_mobilenet(
    input_shape,
    num_classes,
    width: float = 1.0,
    squeeze_excite: bool = False,
    dropout: float = 0.2,
    head_channels: int = 256,
):
    """Compact MobileNetV2-style classifier: :func:`compact_mobilenet_features` and the
    classification head (global average pooling, dropout, dense softmax ``probabilities``).

    Args:
        input_shape: ``(height, width, channels)``, 28..96 px recommended.
        num_classes: number of classes.
        width: channel multiplier (default 1.0).
        squeeze_excite: add squeeze-and-excitation to blocks after the first (default False).
        dropout: dropout before the classifier (default 0.2).
        head_channels: channels of the last 1x1 conv (default 256).

    Example:
        >>> m = compact_mobilenet((28, 28, 1), 10)
        >>> m.output_shape
        (None, 10)
    """
    from kvision.tasks import get_task

    if not 0 <= dropout < 1:
        raise InputValueError(f"`dropout` should be in [0, 1). Received: dropout={dropout}")
    inputs = keras.Input(shape=input_shape, name="images")
    features = compact_mobilenet_features(inputs, width, squeeze_excite, head_channels)
    head = get_task("classification").build_head(features, num_classes, dropout=dropout)
    return keras.Model(inputs, head["probabilities"], name="compact_mobilenet")
