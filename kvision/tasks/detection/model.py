"""``build_detector``: a registered backbone + the detection task's pyramid and head.

model = build_detector((160, 160, 3), labels=["trouser", "bag"], backbone="compact_mobilenet")
model.output_shape   # {"class_logits": (None, 4725, 2), "box_deltas": (None, 4725, 4)}
model.kvision_contract.postprocess["anchors"]   # what decoding needs, saved with the model
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.backbones import build_backbone
from kvision.errors import InputValueError
from kvision.models.contract import InputContract, attach_contract
from kvision.tasks.detection.anchors import AnchorConfig
from kvision.tasks.detection.grid import GridConfig
from kvision.tasks.detection.task import DEFAULT_POSTPROCESS, DetectionTask

#: the backbones' classification 1x1 "head" conv is left out under a detection neck
_NO_HEAD = {"compact_mobilenet": {"head_channels": 0}}


def build_detector(
    input_shape,
    labels,
    backbone: str = "compact_mobilenet",
    backbone_options: dict | None = None,
    anchor_config: AnchorConfig | dict | None = None,
    channels: int = 64,
    depth: int = 2,
    postprocess: dict | None = None,
    name: str | None = None,
    head: str = "anchors",
    grid_config=None,
    resize: str = "stretch",
):
    """A RetinaNet-style one-stage detector with its detection contract attached.

    Args:
        input_shape: ``(height, width, channels)``.
        labels: class names (no background class).
        backbone: a registered backbone (``kvision.backbones.list_backbones()``).
        backbone_options: its options (e.g. ``{"width": 1.0}``).
        anchor_config: an :class:`AnchorConfig` or its dict (default ``AnchorConfig()``).
        channels: pyramid and head width (default 64).
        depth: separable conv blocks per head subnet (default 2).
        postprocess: overrides of the decoding parameters (score / IoU thresholds, max
            detections), stored in the contract.
        name: the model's name (default ``retinanet_lite`` / ``grid_detector``).
        head: ``"anchors"`` (default: RetinaNet-style, ``anchor_config``) or ``"grid"``
            (anchor-free, one prediction per cell, FCOS / YOLOX-style assignment:
            :mod:`kvision.tasks.detection.grid`, ``grid_config``).
        grid_config: a ``GridConfig`` or its dict (default ``GridConfig()``), for ``grid``.
        resize: how images reach the input size: ``"stretch"`` (default) or ``"letterbox"``
            (aspect ratio kept; boxes are mapped through it in training and decoding).

    Returns:
        A tf_keras model with outputs ``{"class_logits", "box_deltas"}`` and
        ``model.kvision_contract`` (task ``detection``).

    Raises:
        InputValueError: fewer than one label, or a bad shape / option.
    """
    labels = [str(x) for x in labels]
    if not labels:
        raise InputValueError("`labels` should name at least one object class. Received: []")
    h, w, c = (int(v) for v in input_shape)
    config = (
        AnchorConfig.from_dict(anchor_config)
        if isinstance(anchor_config, dict)
        else anchor_config or AnchorConfig()
    )
    if head not in ("anchors", "grid"):
        raise InputValueError(f"`head` should be 'anchors' or 'grid'. Received: head={head!r}")
    post = {**DEFAULT_POSTPROCESS, **(postprocess or {}), "head": head}
    if head == "grid":
        config = (
            GridConfig.from_dict(grid_config)
            if isinstance(grid_config, dict)
            else grid_config or GridConfig()
        )
        post["grid"] = config.to_dict()
    else:
        post["anchors"] = config.to_dict()
    options = {**_NO_HEAD.get(backbone, {}), **(backbone_options or {})}
    inputs = keras.Input((h, w, c), name="images")
    features = build_backbone(backbone, inputs, **options)
    outputs = DetectionTask().build_head(features, len(labels), config, channels, depth)
    default_name = "grid_detector" if head == "grid" else "retinanet_lite"
    model = keras.Model(inputs, outputs, name=name or default_name)
    contract = InputContract(
        h, w, c, labels=labels, task="detection", postprocess=post, resize=resize
    )
    return attach_contract(model, contract)
