"""Detection necks and heads on a backbone's named features (tf_keras, builtin ops only).

:func:`pyramid` turns the backbone's ``{"P{level}": tensor}`` into the levels the anchors need
(``log2`` of :attr:`AnchorConfig.strides`): levels the backbone lacks are added below its deepest
one with 3x3 stride-2 convolutions (as RetinaNet adds P6/P7; never 1x1 strided ones, see
``kvision._env``), then a light feature pyramid (Lin et al., "Feature Pyramid Networks", CVPR 2017)
fuses them top-down: 1x1 laterals to ``channels``, nearest-neighbour upsampling and addition, and
a depthwise-separable 3x3 smoothing per level.

:func:`retina_head` is RetinaNet's (Lin et al., "Focal Loss for Dense Object Detection", ICCV
2017) class and box subnets, made light for CPUs and int8: ``depth`` depthwise-separable conv
blocks (BatchNorm, ReLU6) per level, then a 3x3 conv to ``anchors * num_classes`` logits (bias
initialised to the prior ``-log((1 - pi) / pi)``, pi = 0.01) and one to ``anchors * 4`` box
deltas. The subnets are not shared across levels (tfmot's QAT clones layers per call site).
Outputs are reshaped to ``[B, A, C]`` / ``[B, A, 4]`` and concatenated in anchor order
(:mod:`kvision.tasks.detection.anchors`): level, row, column, anchor type.
"""

from __future__ import annotations

import math

from kvision._keras import keras
from kvision.errors import InputValueError

layers = keras.layers

CLASS_OUTPUT = "class_logits"
BOX_OUTPUT = "box_deltas"


def _conv_bn(x, filters, kernel, stride, name):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)  # fmt: skip
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _separable(x, filters, name):
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return _conv_bn(x, filters, 1, 1, f"{name}_pw")


def pyramid(features: dict, strides, channels: int = 64) -> list:
    """Feature-pyramid outputs, one per stride in ``strides`` (finest first), ``channels`` deep.

    Args:
        features: a backbone's ``{"P{level}": tensor}``.
        strides: the anchor strides, powers of two (e.g. ``(8, 16, 32)``).
        channels: pyramid width (default 64).

    Raises:
        InputValueError: a stride that is not a power of two, or finer than every backbone level.
    """
    levels = []
    for s in strides:
        level = int(round(math.log2(s)))
        if 2**level != s:
            raise InputValueError(f"Anchor strides should be powers of two. Received: {s}")
        levels.append(level)
    have = {int(k[1:]): v for k, v in features.items()}
    if min(levels) < min(have):
        raise InputValueError(
            f"The backbone's finest feature is stride {2 ** min(have)}; the anchors need "
            f"stride {2 ** min(levels)}. Use coarser anchor strides or another backbone."
        )
    c = {}
    for level in levels:
        if level in have:
            c[level] = have[level]
            continue
        below = max(k for k in list(have) + list(c) if k < level)
        source = c.get(below, have.get(below))
        for step in range(below + 1, level + 1):
            source = _conv_bn(source, channels * 2, 3, 2, f"extra_p{step}")
        c[level] = source
    lateral = {lv: layers.Conv2D(channels, 1, name=f"fpn_lateral_p{lv}")(c[lv]) for lv in levels}
    merged = {levels[-1]: lateral[levels[-1]]}
    for lv in reversed(levels[:-1]):
        coarser = merged[min(k for k in merged if k > lv)]
        factor = -(-lateral[lv].shape[1] // coarser.shape[1])
        up = layers.UpSampling2D(factor, interpolation="nearest", name=f"fpn_up_p{lv}")(coarser)
        if up.shape[1] != lateral[lv].shape[1] or up.shape[2] != lateral[lv].shape[2]:
            up = layers.Cropping2D(
                ((0, up.shape[1] - lateral[lv].shape[1]), (0, up.shape[2] - lateral[lv].shape[2])),
                name=f"fpn_crop_p{lv}",
            )(up)
        merged[lv] = layers.Add(name=f"fpn_add_p{lv}")([lateral[lv], up])
    return [_separable(merged[lv], channels, f"fpn_out_p{lv}") for lv in levels]


def retina_head(
    pyramid_features: list,
    num_classes: int,
    anchors_per_location: int,
    channels: int = 64,
    depth: int = 2,
    prior: float = 0.01,
) -> dict:
    """RetinaNet-style class and box subnets on each pyramid level (see the module docstring).

    Args:
        pyramid_features: outputs of :func:`pyramid`, finest first.
        num_classes: object classes (no background class: sigmoid scores).
        anchors_per_location: anchors per feature-map cell.
        channels: subnet width (default 64).
        depth: separable conv blocks per subnet (default 2).
        prior: initial foreground probability of every anchor (default 0.01).

    Returns:
        ``{"class_logits": [B, A, num_classes], "box_deltas": [B, A, 4]}``.
    """
    k = anchors_per_location
    bias = keras.initializers.Constant(-math.log((1 - prior) / prior))
    logits, deltas = [], []
    for i, x in enumerate(pyramid_features):
        name = f"head_l{i}"
        cls, box = x, x
        for d in range(depth):
            cls = _separable(cls, channels, f"{name}_cls{d}")
            box = _separable(box, channels, f"{name}_box{d}")
        cls = layers.Conv2D(k * num_classes, 3, padding="same", bias_initializer=bias,
                            name=f"{name}_cls_out")(cls)  # fmt: skip
        box = layers.Conv2D(k * 4, 3, padding="same", name=f"{name}_box_out")(box)
        cells = int(x.shape[1]) * int(x.shape[2])
        logits.append(layers.Reshape((cells * k, num_classes), name=f"{name}_cls_flat")(cls))
        deltas.append(layers.Reshape((cells * k, 4), name=f"{name}_box_flat")(box))
    if len(logits) == 1:
        return {CLASS_OUTPUT: logits[0], BOX_OUTPUT: deltas[0]}
    return {
        CLASS_OUTPUT: layers.Concatenate(axis=1, name=CLASS_OUTPUT)(logits),
        BOX_OUTPUT: layers.Concatenate(axis=1, name=BOX_OUTPUT)(deltas),
    }
