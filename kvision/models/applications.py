"""``tf_keras.applications`` backbones as kvision classifiers, without downloads.

Each registered name builds the backbone with ``include_top=False`` on an input named
``"images"`` and adds the kvision head (``pool`` = GlobalAveragePooling2D, ``dropout``, Dense
softmax ``probabilities``), as one flat functional model (tfmot rejects nested models)::

    model = build_model("mobilenet_v2", (96, 96, 3), num_classes=5)
    model = build_model("resnet50", (64, 64, 3), 5, weights="/data/resnet50_notop.h5")

======================  =====================  ========  ====================================
name                    tf_keras constructor   min px    input expected with a weights file
======================  =====================  ========  ====================================
``mobilenet_v2``        MobileNetV2            32        [-1, 1]
``mobilenet_v3_small``  MobileNetV3Small       32        [-1, 1] (``include_preprocessing=False``)
``resnet50``            ResNet50               32        caffe: 0..255 BGR minus channel means
``efficientnet_b0``     EfficientNetB0         32        what its Normalization layer did
``densenet121``         DenseNet121            32        torch: [0, 1] minus mean, over std
``inception_v3``        InceptionV3            75        [-1, 1]
``vgg16``               VGG16                  32        caffe: 0..255 BGR minus channel means
======================  =====================  ========  ====================================

Weights: ``weights=None`` (default) initialises randomly and the model takes kvision's default
``[0, 1]`` input. ``weights="/path/file.h5"`` loads a local file holding the weights of the
``include_top=False`` backbone (for example the Keras ``*_notop.h5`` ImageNet files copied from
elsewhere); the model then expects that family's ImageNet input range, approximated by one scale
and offset for all channels (channel order is not swapped: caffe-style weights see RGB instead of
BGR, which fine-tuning absorbs). ``weights="imagenet"`` raises: kvision never downloads.

Input scale: the builder sets ``model.kvision_input_scale`` and ``model.kvision_input_offset``
(model input = ``raw_pixels * scale + offset``) for the registry to put in the input contract.

EfficientNet: tf_keras builds it with ``Rescaling`` and ``Normalization`` layers at the bottom,
which tfmot rejects; kvision removes them after loading the weights and folds what they computed
into that scale/offset (exactly ``1/255`` and ``0`` with ``weights=None``). MobileNetV3's
hard-swish is made of ``TFOpLambda`` layers (``x + 3``, ``* 1/6``), which tfmot does not
quantize either.

Blocks for transfer learning: :data:`APPLICATIONS` gives, per family, the layer-name pattern
that groups layers into blocks (see :func:`kvision.models.transfer.backbone_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvision._keras import keras
from kvision.backbones.registry import pyramid_level, register_backbone
from kvision.errors import InputTypeError, InputValueError
from kvision.models.registry import register_model

layers = keras.layers

DEFAULT_SCALE = 1.0 / 255.0
DEFAULT_OFFSET = 0.0


@dataclass(frozen=True)
class Application:
    """How kvision builds and splits one ``tf_keras.applications`` family.

    Args:
        name: registered model name.
        constructor: ``tf_keras.applications`` function name.
        min_size: smallest height/width the backbone accepts.
        marker: a layer name only this family has (identifies it in a loaded model).
        block_pattern: regex on layer names that delimits blocks.
        block_mode: ``"prefix"``: group 1 of the pattern names the layer's block (layers that do
            not match join the block before them); ``"end"``: a matching layer ends a block.
        scale: input scale the pretrained (ImageNet) weights expect, on raw 0..255 pixels.
        offset: input offset the pretrained weights expect.
    """

    name: str
    constructor: str
    min_size: int
    marker: str
    block_pattern: str
    block_mode: str = "prefix"
    scale: float = DEFAULT_SCALE
    offset: float = DEFAULT_OFFSET


_TF_SCALE, _TF_OFFSET = 1.0 / 127.5, -1.0  # "tf" mode: [-1, 1]
_CAFFE_OFFSET = -float(np.mean([103.939, 116.779, 123.68]))  # "caffe" mode, channel-averaged
_TORCH_STD = float(np.mean([0.229, 0.224, 0.225]))  # "torch" mode, channel-averaged
_TORCH_SCALE = 1.0 / (255.0 * _TORCH_STD)
_TORCH_OFFSET = -float(np.mean([0.485, 0.456, 0.406])) / _TORCH_STD

APPLICATIONS: dict[str, Application] = {
    a.name: a
    for a in (
        Application(
            "mobilenet_v2",
            "MobileNetV2",
            32,
            "block_1_expand",
            r"^(expanded_conv|block_\d+)_",
            scale=_TF_SCALE,
            offset=_TF_OFFSET,
        ),
        Application(
            "mobilenet_v3_small",
            "MobileNetV3Small",
            32,
            "expanded_conv/depthwise",
            r"^(expanded_conv(?:_\d+)?)/",
            scale=_TF_SCALE,
            offset=_TF_OFFSET,
        ),
        Application(
            "resnet50",
            "ResNet50",
            32,
            "conv2_block1_add",
            r"^(conv\d_block\d+)_",
            scale=1.0,
            offset=_CAFFE_OFFSET,
        ),
        Application(
            "efficientnet_b0", "EfficientNetB0", 32, "block1a_dwconv", r"^(block\d+[a-z])_"
        ),
        Application(
            "densenet121",
            "DenseNet121",
            32,
            "conv2_block1_concat",
            r"^(conv\d_block\d+|pool\d)_",
            scale=_TORCH_SCALE,
            offset=_TORCH_OFFSET,
        ),
        Application(
            "inception_v3",
            "InceptionV3",
            75,
            "mixed0",
            r"^mixed\d+$",
            block_mode="end",
            scale=_TF_SCALE,
            offset=_TF_OFFSET,
        ),
        Application(
            "vgg16", "VGG16", 32, "block1_conv1", r"^(block\d)_", scale=1.0, offset=_CAFFE_OFFSET
        ),
    )
}


def build_backbone(name: str, input_shape, weights=None, **options):
    """The ``include_top=False`` backbone of application ``name`` on an input named ``"images"``.

    Args:
        name: a key of :data:`APPLICATIONS` (e.g. ``"mobilenet_v2"``).
        input_shape: ``(height, width, channels)``; each side at least the family's minimum.
        weights: ``None`` (random init) or the path of a local weights file of this backbone.
        **options: extra arguments of the tf_keras constructor (e.g. ``alpha`` for MobileNets).

    Returns:
        A functional model whose output is the last feature map, with
        ``kvision_input_scale`` / ``kvision_input_offset`` set. EfficientNet comes without its
        Rescaling/Normalization layers (see the module docstring).

    Example:
        >>> b = build_backbone("mobilenet_v2", (32, 32, 3))
        >>> b.output_shape
        (None, 1, 1, 1280)
    """
    spec = _spec(name)
    weights_path = _check_weights(weights, name)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3:
        raise InputValueError(
            f"`input_shape` should be (height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    if min(input_shape[:2]) < spec.min_size:
        raise InputValueError(
            f"`{name}` needs inputs of at least {spec.min_size}x{spec.min_size} "
            f"pixels. Received: input_shape={input_shape}"
        )
    inputs = keras.Input(shape=input_shape, name="images")
    if spec.constructor.startswith("MobileNetV3"):
        options.setdefault("include_preprocessing", False)
    constructor = getattr(keras.applications, spec.constructor)
    backbone = constructor(
        include_top=False, weights=None, input_tensor=inputs, input_shape=input_shape, **options
    )
    scale, offset = DEFAULT_SCALE, DEFAULT_OFFSET
    if weights_path is not None:
        scale, offset = spec.scale, spec.offset
        try:
            backbone.load_weights(str(weights_path))
        except Exception as exc:  # tf_keras raises ValueError, OSError, KeyError... here
            if not _has_input_preprocessing(backbone):
                raise _weights_error(name, weights_path, input_shape, exc) from exc
            # Maybe the file holds a kvision backbone saved without the preprocessing layers.
            backbone, _, _ = strip_input_preprocessing(backbone)
            try:
                backbone.load_weights(str(weights_path))
            except Exception:
                raise _weights_error(name, weights_path, input_shape, exc) from exc
            scale, offset = DEFAULT_SCALE, DEFAULT_OFFSET
    if _has_input_preprocessing(backbone):
        # The stripped layers took raw 0..255 pixels: the contract now does their work.
        backbone, scale, offset = strip_input_preprocessing(backbone)
    backbone.kvision_input_scale = float(scale)
    backbone.kvision_input_offset = float(offset)
    return backbone


def build_application(
    name: str, input_shape, num_classes: int, weights=None, dropout: float = 0.2, **options
):
    """Backbone :func:`build_backbone` + kvision head, as one flat functional model.

    Args:
        name: a key of :data:`APPLICATIONS`.
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        weights: ``None`` or the path of a local backbone weights file.
        dropout: dropout before the classifier (default 0.2).
        **options: extra arguments of the tf_keras constructor.

    Example:
        >>> m = build_application("vgg16", (32, 32, 3), 4)
        >>> m.output_shape
        (None, 4)
    """
    if not 0 <= dropout < 1:
        raise InputValueError(f"`dropout` should be in [0, 1). Received: dropout={dropout}")
    backbone = build_backbone(name, input_shape, weights=weights, **options)
    x = layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(backbone.input, outputs, name=name)
    model.kvision_input_scale = backbone.kvision_input_scale
    model.kvision_input_offset = backbone.kvision_input_offset
    return model


@register_model("mobilenet_v2")
def mobilenet_v2(input_shape, num_classes, weights=None, dropout: float = 0.2, alpha: float = 1.0):
    """MobileNetV2 classifier (min 32 px; ImageNet weights expect [-1, 1]).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        weights: ``None`` or a local weights file of ``MobileNetV2(include_top=False)``.
        dropout: dropout before the classifier (default 0.2).
        alpha: width multiplier (default 1.0).

    Example:
        >>> mobilenet_v2((32, 32, 3), 10, alpha=0.35).output_shape
        (None, 10)
    """
    return build_application(
        "mobilenet_v2", input_shape, num_classes, weights, dropout, alpha=alpha
    )


@register_model("mobilenet_v3_small")
def mobilenet_v3_small(
    input_shape, num_classes, weights=None, dropout: float = 0.2, alpha: float = 1.0
):
    """MobileNetV3Small classifier without its Rescaling layer (min 32 px).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        weights: ``None`` or a local weights file of
            ``MobileNetV3Small(include_top=False, include_preprocessing=False)``.
        dropout: dropout before the classifier (default 0.2).
        alpha: width multiplier (default 1.0).

    Example:
        >>> mobilenet_v3_small((32, 32, 3), 10).output_shape
        (None, 10)
    """
    return build_application(
        "mobilenet_v3_small", input_shape, num_classes, weights, dropout, alpha=alpha
    )


@register_model("resnet50")
def resnet50(input_shape, num_classes, weights=None, dropout: float = 0.2):
    """ResNet50 classifier (min 32 px; ImageNet weights expect caffe-style input).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        weights: ``None`` or a local weights file of ``ResNet50(include_top=False)``.
        dropout: dropout before the classifier (default 0.2).

    Example:
        >>> resnet50((32, 32, 3), 10).output_shape
        (None, 10)
    """
    return build_application("resnet50", input_shape, num_classes, weights, dropout)


@register_model("efficientnet_b0")
def efficientnet_b0(input_shape, num_classes, weights=None, dropout: float = 0.2):
    """EfficientNetB0 classifier without its Rescaling/Normalization layers (min 32 px).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        weights: ``None`` or a local weights file of ``EfficientNetB0(include_top=False)``
            (with or without the preprocessing layers).
        dropout: dropout before the classifier (default 0.2).

    Example:
        >>> efficientnet_b0((32, 32, 3), 10).output_shape
        (None, 10)
    """
    return build_application("efficientnet_b0", input_shape, num_classes, weights, dropout)


@register_model("densenet121")
def densenet121(input_shape, num_classes, weights=None, dropout: float = 0.2):
    """DenseNet121 classifier (min 32 px; ImageNet weights expect torch-style input).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        weights: ``None`` or a local weights file of ``DenseNet121(include_top=False)``.
        dropout: dropout before the classifier (default 0.2).

    Example:
        >>> densenet121((32, 32, 3), 10).output_shape
        (None, 10)
    """
    return build_application("densenet121", input_shape, num_classes, weights, dropout)


@register_model("inception_v3")
def inception_v3(input_shape, num_classes, weights=None, dropout: float = 0.2):
    """InceptionV3 classifier (min 75 px; ImageNet weights expect [-1, 1]).

    Args:
        input_shape: ``(height, width, channels)``, at least 75x75.
        num_classes: number of classes.
        weights: ``None`` or a local weights file of ``InceptionV3(include_top=False)``.
        dropout: dropout before the classifier (default 0.2).

    Example:
        >>> inception_v3((75, 75, 3), 10).output_shape
        (None, 10)
    """
    return build_application("inception_v3", input_shape, num_classes, weights, dropout)


@register_model("vgg16")
def vgg16(input_shape, num_classes, weights=None, dropout: float = 0.2):
    """VGG16 classifier (min 32 px; ImageNet weights expect caffe-style input).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        weights: ``None`` or a local weights file of ``VGG16(include_top=False)``.
        dropout: dropout before the classifier (default 0.2).

    Example:
        >>> vgg16((32, 32, 3), 10).output_shape
        (None, 10)
    """
    return build_application("vgg16", input_shape, num_classes, weights, dropout)


def strip_input_preprocessing(model):
    """Copy of functional ``model`` without the Rescaling/Normalization layers after its input.

    Args:
        model: a functional tf_keras model.

    Returns:
        ``(model, scale, offset)``: the new model (same weights) and what the removed layers
        computed, ``x * scale + offset``, averaged over channels (``1, 0`` when none).

    Example:
        >>> m, scale, offset = strip_input_preprocessing(model)  # doctest: +SKIP
    """
    scale, offset = np.float64(1.0), np.float64(0.0)
    replaced: dict[str, list] = {}  # removed layer name -> the inbound entry that replaces it
    input_names = {layer.name for layer in model.layers if isinstance(layer, layers.InputLayer)}
    config = model.get_config()
    for entry in config["layers"]:
        source = _single_inbound(entry)
        if entry["class_name"] not in ("Rescaling", "Normalization") or source is None:
            continue
        if source[0] not in input_names and source[0] not in replaced:
            continue
        a, b = _affine_of(model.get_layer(entry["name"]))
        scale, offset = scale * a, offset * a + b
        replaced[entry["name"]] = replaced.get(source[0], source)
    if not replaced:
        return model, 1.0, 0.0
    config["layers"] = [e for e in config["layers"] if e["name"] not in replaced]
    for entry in config["layers"]:
        entry["inbound_nodes"] = _rewire(entry["inbound_nodes"], replaced)
    config["output_layers"] = _rewire(config["output_layers"], replaced)
    stripped = keras.Model.from_config(config)
    for layer in stripped.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return stripped, float(np.mean(scale)), float(np.mean(offset))


def _spec(name: str) -> Application:
    if name not in APPLICATIONS:
        raise InputValueError(
            f"Unknown application `{name}`. Available: {', '.join(APPLICATIONS)}."
        )
    return APPLICATIONS[name]


def _check_weights(weights, name: str) -> Path | None:
    if weights is None:
        return None
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        raise InputValueError(
            f"`weights='imagenet'` would download the ImageNet weights of `{name}`, but kvision "
            "never downloads (no network access is assumed). Copy the Keras no-top weights file "
            f"of {APPLICATIONS[name].constructor} (e.g. '..._notop.h5') to this machine and pass "
            "its path: weights='/path/to/file.h5'. Or pass weights=None to train from scratch."
        )
    if not isinstance(weights, (str, Path)):
        raise InputTypeError(
            f"`weights` should be None or the path of a local weights file. "
            f"Received: weights={weights!r}"
        )
    path = Path(weights).expanduser()
    if not (path.exists() or Path(f"{path}.index").exists()):  # .index: a TF checkpoint prefix
        raise FileNotFoundError(f"Weights file for `{name}` not found: {path}")
    return path


def _weights_error(name, path, input_shape, exc) -> ValueError:
    constructor = APPLICATIONS[name].constructor
    return InputValueError(
        f"Could not load the weights of `{name}` from {path}: {exc}. The file should hold the "
        f"weights of {constructor}(include_top=False) built for {input_shape[-1]} input "
        "channel(s) (ImageNet files expect 3; grayscale needs weights saved from a 1-channel "
        "backbone)."
    )


def _has_input_preprocessing(model) -> bool:
    return any(
        isinstance(layer, (layers.Rescaling, layers.Normalization)) for layer in model.layers[:4]
    )


def _single_inbound(entry):
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) == 1 and len(nodes[0]) == 1:
        return nodes[0][0]
    return None


def _rewire(data, replaced):
    """Replace references ``[name, node, tensor, ...]`` to removed layers in a config."""
    if isinstance(data, list):
        if data and isinstance(data[0], str) and data[0] in replaced:
            return list(replaced[data[0]][:3]) + list(data[3:])
        return [_rewire(d, replaced) for d in data]
    return data


def _affine_of(layer):
    """``(a, b)`` with ``layer(x) == x * a + b`` (per channel) for Rescaling / Normalization."""
    if isinstance(layer, layers.Rescaling):
        return np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
    weights = layer.get_weights()
    if len(weights) >= 2:
        mean, var = weights[0], weights[1]
    else:
        mean, var = layer.input_mean, layer.input_variance
    std = np.maximum(np.sqrt(np.asarray(var, np.float64)), keras.backend.epsilon())
    mean = np.asarray(mean, np.float64).reshape(-1)
    return 1.0 / std.reshape(-1), -mean / std.reshape(-1)


# -- the applications as registry backbones (named multi-scale features for any task's head) ------
def _application_features(name: str):
    def features(inputs, **options) -> dict:
        """``tf_keras.applications`` backbone ``NAME`` (random init) as ``{"P{level}": tensor}``:
        the last layer's output at each resolution, fine to coarse; ``options`` go to the
        tf_keras constructor (e.g. ``alpha``). Pretrained weights are not wired for this path
        yet (``build_model`` classifiers take a local weights file)."""
        shape = tuple(int(v) for v in inputs.shape[1:])
        backbone = build_backbone(name, shape, None, **options)
        chosen = {}
        for layer in backbone.layers:
            out = layer.output
            if isinstance(out, list | tuple) or len(out.shape) != 4:
                continue
            level = pyramid_level(shape[0], int(out.shape[1]))
            exact = int(out.shape[1]) == -(-shape[0] // 2**level)  # not a padding layer's
            if level >= 1 and exact:
                chosen[level] = out  # the last layer at this stride wins
        levels = sorted(chosen)
        extractor = keras.Model(
            backbone.input, [chosen[lv] for lv in levels], name=f"{name}_features"
        )
        outputs = extractor(inputs)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return {f"P{lv}": out for lv, out in zip(levels, outputs, strict=True)}

    features.__doc__ = features.__doc__.replace("NAME", name)
    features.__name__ = f"{name}_features"
    return features


for _name in APPLICATIONS:
    register_backbone(_name)(_application_features(_name))
