"""``build_segmenter``: a registered backbone + a segmentation head, with its contract.

model = build_segmenter((128, 128, 1), ["background", "nucleus", "boundary"])   # U-Net
model = build_segmenter((128, 128, 3), labels, backbone="compact_mobilenet", head="deeplab")
model.output_shape     # {"mask_logits": (None, 128, 128, 3)}
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.backbones import build_backbone
from kvision.errors import InputValueError
from kvision.models.contract import InputContract, attach_contract
from kvision.tasks.segmentation.heads import HEADS

#: the backbones' classification 1x1 "head" conv is left out under a segmentation head
_NO_HEAD = {"compact_mobilenet": {"head_channels": 0}}


def default_instances(labels) -> dict:
    """The instance rule for a dataset with instance ids: seeds are the object classes not named
    ``boundary``, grown into every object class (the 3-class nuclei recipe)."""
    objects = list(range(1, len(labels)))
    seeds = [c for c in objects if "boundary" not in str(labels[c]).lower()] or objects
    return {"seed_classes": seeds, "foreground_classes": objects, "min_size": 10, "grow_px": 3}


def build_segmenter(input_shape, labels, backbone: str = "unet", backbone_options=None,
                    head: str = "unet", head_options=None, instances: dict | None = None,
                    resize: str = "stretch", name: str | None = None):  # fmt: skip
    """A segmentation model with its contract attached.

    Args:
        input_shape: ``(height, width, channels)``, sides divisible by the backbone's largest
            stride.
        labels: class names, class 0 the background.
        backbone: a registered backbone (default ``"unet"``, the U-Net encoder).
        backbone_options: its options (e.g. ``{"width": 16, "depth": 4}``).
        head: ``"unet"`` (default), ``"fcn"`` or ``"deeplab"``
            (:mod:`kvision.tasks.segmentation.heads`).
        head_options: the head's options (``channels``, ``upsample``, ``rates`` ...).
        instances: the instance rule stored in the contract (:func:`default_instances`), or
            ``None`` for semantic segmentation only.
        resize: ``"stretch"`` (default) or ``"letterbox"``.
        name: the model name (default ``<head>_segmenter``).

    Returns:
        A tf_keras model with output ``{"mask_logits": [B, H, W, len(labels)]}`` and
        ``model.kvision_contract`` (task ``segmentation``).

    Raises:
        InputValueError: fewer than two labels, an unknown head, or a bad shape / option.
    """
    from kvision.tasks.segmentation.task import SegmentationTask

    labels = [str(x) for x in labels]
    if len(labels) < 2:
        raise InputValueError(f"`labels` should name at least 2 classes. Received: {labels}")
    if head not in HEADS:
        raise InputValueError(f"`head` should be one of {', '.join(HEADS)}. Received: {head!r}")
    h, w, c = (int(v) for v in input_shape)
    if h != w:
        raise InputValueError(f"Segmentation inputs should be square for now. Received: {h}x{w}")
    options = {**_NO_HEAD.get(backbone, {}), **(backbone_options or {})}
    inputs = keras.Input((h, w, c), name="images")
    features = build_backbone(backbone, inputs, **options)
    outputs = SegmentationTask().build_head(features, len(labels), head, h, **(head_options or {}))
    model = keras.Model(inputs, outputs, name=name or f"{head}_segmenter")
    post = {"head": head, "ignore_index": 255}
    if instances:
        post["instances"] = dict(instances)
    contract = InputContract(h, w, c, labels=labels, task="segmentation", postprocess=post,
                             resize=resize)  # fmt: skip
    return attach_contract(model, contract)
