"""Backbones: registered feature extractors that return named multi-scale features.

A backbone is a function ``(inputs, **options) -> dict[str, Tensor]`` on a tf_keras input tensor.
The keys are pyramid levels ``"P{level}"`` (the feature map's stride is ``2**level``), ordered from
fine to coarse; the last one is the deepest feature. Task heads sit on them (the keras-hub
split: backbone, task head, preprocessing)::

    inputs = keras.Input((160, 160, 3), name="images")
    features = build_backbone("compact_mobilenet", inputs, width=1.0)
    list(features)   # ['P1', 'P2', 'P3']: strides 2, 4 and 8

The same backbone serves classification (global pooling on the last feature) and detection (a
feature pyramid on several levels).
"""

from kvision.backbones.registry import (
    backbone_options,
    build_backbone,
    list_backbones,
    register_backbone,
)

__all__ = ["backbone_options", "build_backbone", "list_backbones", "register_backbone"]
