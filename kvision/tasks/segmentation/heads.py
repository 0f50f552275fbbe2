"""Segmentation heads on a backbone's named features (tf_keras, builtin ops only).

Every head returns ``{"mask_logits": [B, H, W, num_classes]}`` at the input's resolution (per-
pixel class logits, no softmax: argmax is decoding, outside the graph).

- :func:`unet_decoder`: U-Net's expanding path (Ronneberger et al., MICCAI 2015): from the
  deepest feature, upsample 2x (a 2x2 transposed convolution, ``upsample="transpose"``, or
  bilinear resize + 3x3 conv, ``"resize"``, which avoids checkerboard artefacts), concatenate the
  backbone feature of that stride (the skip connection), two 3x3 conv blocks; repeated up to the
  finest feature, then resized to the input if the backbone has no stride-1 feature.
- :func:`fcn_head`: FCN-8s-style skip fusion (Long et al., CVPR 2015): 1x1 class scores on the
  three deepest features, each upsampled 2x and added to the next finer one's, then bilinear
  upsampling to the input.
- :func:`deeplab_head`: DeepLabv3+ (Chen et al., ECCV 2018): atrous spatial pyramid pooling on
  the deepest feature (1x1 conv, three 3x3 atrous convs, image-level pooling), projected, upsampled
  to the stride-4 feature (or the finest below it), fused with its 1x1-reduced low-level
  features, two 3x3 convs and a bilinear upsampling to the input.

Upsampling uses ``UpSampling2D`` (TFLite ``RESIZE_BILINEAR`` / ``RESIZE_NEAREST_NEIGHBOR``) and
``Conv2DTranspose`` (``TRANSPOSE_CONV``); skips use ``Concatenate`` / ``Add``: all builtin,
int8-quantizable and QAT-able with tfmot's default scheme (measured in the segmentation tests).
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.errors import InputValueError

layers = keras.layers

MASK_OUTPUT = "mask_logits"
HEADS = ("unet", "fcn", "deeplab")


def _levels(features: dict) -> dict[int, object]:
    return {int(k[1:]): v for k, v in sorted(features.items(), key=lambda kv: int(kv[0][1:]))}


def _conv_bn_relu(x, filters: int, kernel: int, name: str, dilation: int = 1):
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                      name=f"{name}_conv")(x)  # fmt: skip
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _upsample_to(x, size: int, name: str, interpolation: str = "bilinear"):
    """Bilinear (or nearest) upsampling of ``x`` to ``size`` px by an integer factor."""
    factor = size // int(x.shape[1])
    if factor * int(x.shape[1]) != size:
        raise InputValueError(
            f"Cannot upsample a {int(x.shape[1])}-px feature to {size} px by an integer factor: "
            "use an input size divisible by the backbone's largest stride"
        )
    if factor == 1:
        return x
    return layers.UpSampling2D(factor, interpolation=interpolation, name=name)(x)


def _classifier(x, num_classes: int, size: int):
    x = _upsample_to(x, size, f"{MASK_OUTPUT}_up")
    return {MASK_OUTPUT: layers.Conv2D(num_classes, 1, name=MASK_OUTPUT)(x)}


def unet_decoder(features: dict, num_classes: int, input_size: int, channels: int = 16,
                 upsample: str = "transpose") -> dict:  # fmt: skip
    """U-Net decoder (module docstring).

    Args:
        features: a backbone's ``{"P{level}": tensor}``.
        num_classes: classes, background included.
        input_size: the input height (output resolution).
        channels: decoder filters at the finest level, doubled per coarser level (default 16).
        upsample: ``"transpose"`` (default) or ``"resize"``.

    Raises:
        InputValueError: an unknown ``upsample``.
    """
    if upsample not in ("transpose", "resize"):
        raise InputValueError(
            f"`upsample` should be 'transpose' or 'resize'. Received: upsample={upsample!r}"
        )
    levels = _levels(features)
    order = sorted(levels)
    x = levels[order[-1]]
    for level in reversed(order[:-1]):
        filters = int(channels) * 2**level
        name = f"dec{level}"
        factor = int(levels[level].shape[1]) // int(x.shape[1])
        if upsample == "transpose":
            x = layers.Conv2DTranspose(filters, factor, strides=factor, padding="same",
                                       name=f"{name}_up")(x)  # fmt: skip
        else:
            x = layers.UpSampling2D(factor, interpolation="bilinear", name=f"{name}_up")(x)
            x = _conv_bn_relu(x, filters, 3, f"{name}_upconv")
        x = layers.Concatenate(name=f"{name}_skip")([x, levels[level]])
        x = _conv_bn_relu(x, filters, 3, f"{name}_a")
        x = _conv_bn_relu(x, filters, 3, f"{name}_b")
    return _classifier(x, num_classes, input_size)


def fcn_head(features: dict, num_classes: int, input_size: int) -> dict:
    """FCN-8s-style head (module docstring)."""
    levels = _levels(features)
    order = sorted(levels)[-3:]
    score = None
    for level in reversed(order):
        s = layers.Conv2D(num_classes, 1, name=f"fcn_score_p{level}")(levels[level])
        if score is not None:
            factor = int(s.shape[1]) // int(score.shape[1])
            up = layers.UpSampling2D(factor, interpolation="bilinear", name=f"fcn_up_p{level}")
            score = layers.Add(name=f"fcn_add_p{level}")([s, up(score)])
        else:
            score = s
    out = _upsample_to(score, input_size, f"{MASK_OUTPUT}_up")
    return {MASK_OUTPUT: layers.Activation("linear", name=MASK_OUTPUT)(out)}


def deeplab_head(features: dict, num_classes: int, input_size: int, channels: int = 64,
                 rates=(2, 4, 6), low_level_channels: int = 24) -> dict:  # fmt: skip
    """DeepLabv3+-style head (module docstring).

    Args:
        features: a backbone's ``{"P{level}": tensor}``.
        num_classes: classes, background included.
        input_size: the input height (output resolution).
        channels: ASPP and decoder width (default 64; the paper's 256).
        rates: atrous rates of the three 3x3 ASPP branches (default ``(2, 4, 6)``, the paper's
            6/12/18 scaled to small feature maps).
        low_level_channels: 1x1 reduction of the low-level feature (default 24; paper 48).
    """
    levels = _levels(features)
    deep = levels[max(levels)]
    branches = [_conv_bn_relu(deep, channels, 1, "aspp_1x1")]
    for r in rates:
        branches.append(_conv_bn_relu(deep, channels, 3, f"aspp_rate{r}", dilation=int(r)))
    h, w = int(deep.shape[1]), int(deep.shape[2])
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(deep)
    pooled = _conv_bn_relu(pooled, channels, 1, "aspp_pool_proj")
    pooled = layers.UpSampling2D((h, w), interpolation="nearest", name="aspp_pool_up")(pooled)
    x = layers.Concatenate(name="aspp_concat")([*branches, pooled])
    x = _conv_bn_relu(x, channels, 1, "aspp_project")
    low = min((lv for lv in levels if lv >= 2), default=min(levels))
    if low < max(levels):
        factor = int(levels[low].shape[1]) // int(x.shape[1])
        x = layers.UpSampling2D(factor, interpolation="bilinear", name="decoder_up")(x)
        skip = _conv_bn_relu(levels[low], low_level_channels, 1, "decoder_low")
        x = layers.Concatenate(name="decoder_concat")([x, skip])
    x = _conv_bn_relu(x, channels, 3, "decoder_a")
    x = _conv_bn_relu(x, channels, 3, "decoder_b")
    return _classifier(x, num_classes, input_size)
