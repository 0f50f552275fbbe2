"""Real-time augmentation for the training split, run in ``tf.data`` on the CPU.

    from kvision.augment import build_augmenter, list_transforms
    aug = build_augmenter(["flip", {"name": "rotate", "factor": 0.05},
                           {"name": "erase", "p": 0.25}])
    images, labels = aug(images, labels)  # float32 (B, H, W, C) in [0, 1], same shape out

Keras-layer transforms live in ``transforms``, albumentations ones in ``albu`` (imported lazily),
the preview grid in ``preview``. Augmentation is never part of an exported model.
"""

from kvision.augment.augmenter import Augmenter, build_augmenter
from kvision.augment.preview import write_preview
from kvision.augment.transforms import Transform, get_transform, list_transforms, register_transform

__all__ = [
    "Augmenter",
    "Transform",
    "build_augmenter",
    "get_transform",
    "list_transforms",
    "register_transform",
    "write_preview",
]
