"""The U-Net encoder as a registered backbone (Ronneberger et al., "U-Net", MICCAI 2015).

``depth + 1`` stages of two 3x3 conv + BatchNorm + ReLU blocks; stage ``l`` works at stride
``2**l`` with ``width * 2**l`` filters (2x2 max-pool between stages). Its features include the
full-resolution ``P0``, which the U-Net decoder (:mod:`kvision.tasks.segmentation.heads`) needs
for sharp boundaries; any other backbone's features work with the decoder too. Builtin tf_keras
layers only (tfmot and the TFLite converter accept them). Inputs need sides divisible by
``2**depth``.
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.backbones.registry import register_backbone
from kvision.errors import InputValueError

layers = keras.layers


def conv_block(x, filters: int, name: str, convs: int = 2):
    """``convs`` x (3x3 conv, BatchNorm, ReLU) with ``filters`` outputs."""
    for i in range(1, convs + 1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


@register_backbone("unet")
def unet_encoder(inputs, width: int = 16, depth: int = 4) -> dict:
    """U-Net encoder features ``{"P0": [N, H, W, width], ..., "P{depth}": [N, H / 2**depth,
    W / 2**depth, width * 2**depth]}``, fine to coarse.

    Args:
        inputs: image tensor ``[N, H, W, C]``; H and W divisible by ``2**depth``.
        width: filters of the first stage (default 16; the paper's is 64).
        depth: number of 2x down-samplings (default 4, as the paper).

    Raises:
        InputValueError: ``width`` or ``depth`` < 1, or an input side not divisible by
            ``2**depth``.
    """
    if int(width) < 1 or int(depth) < 1:
        raise InputValueError(f"`width` and `depth` should be >= 1. Received: {width}, {depth}")
    h, w = int(inputs.shape[1]), int(inputs.shape[2])
    if h % 2**depth or w % 2**depth:
        raise InputValueError(
            f"The U-Net encoder of depth {depth} needs input sides divisible by {2**depth}. "
            f"Received: {h}x{w} (set model.input_size or model.options.depth)"
        )
    features = {}
    x = inputs
    for level in range(depth + 1):
        if level:
            x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        x = conv_block(x, int(width) * 2**level, f"enc{level}")
        features[f"P{level}"] = x
    return features
