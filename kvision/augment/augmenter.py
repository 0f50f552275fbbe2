"""``build_augmenter``: a seeded chain of named transforms for ``tf.data`` (training split only).

    aug = build_augmenter(["flip", {"name": "rotate", "factor": 0.05},
                           {"name": "erase", "p": 0.25}])
    ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE)   # (images, labels) -> (images, labels)

Augmentation is never part of an exported model: it runs in the input pipeline on the CPU.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kvision.augment.transforms import Transform, get_transform
from kvision.errors import InputValueError


class Augmenter:
    """Applies its transforms in order to a float32 batch ``(B, H, W, C)`` in ``[0, 1]``.

    The output is clipped to ``[0, 1]`` and keeps the input's static shape and dtype; labels pass
    through unchanged. Each transform owns a seeded random generator, so two augmenters built with
    the same specs and seed produce the same sequence of outputs, eagerly or inside ``tf.data``.

    Args:
        transforms: built :class:`~kvision.augment.transforms.Transform` objects.
        seed: the seed they were built from (kept for the report).

    Example:
        >>> aug = build_augmenter([{"name": "flip", "p": 1.0}], seed=0)
        >>> images, labels = aug(tf.zeros((4, 28, 28, 1)), tf.zeros((4,), tf.int64))
    """

    def __init__(self, transforms: list[Transform], seed: int = 0):
        self.transforms = list(transforms)
        self.seed = seed

    def __call__(self, images, labels):
        images = tf.convert_to_tensor(images)
        _check_batch(images)
        shape = images.shape
        for transform in self.transforms:
            images = transform(images)
        images = tf.clip_by_value(images, 0.0, 1.0)
        images.set_shape(shape)
        return images, labels

    def to_config(self) -> list[dict]:
        """The resolved specs, every option included; ``build_augmenter`` accepts them back."""
        return [t.get_config() for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"Augmenter({self.transforms!r}, seed={self.seed})"


def build_augmenter(specs, seed: int = 0) -> Augmenter:
    """Build an :class:`Augmenter` from transform specs.

    Args:
        specs: list of transform names (``"flip"``) or dicts with a ``name`` key and options
            (``{"name": "erase", "p": 0.25, "max_area": 0.15}``). See ``list_transforms()``.
            An empty list gives an augmenter that only clips to [0, 1].
        seed: base seed (default 0); transform ``i`` gets its own seed derived from
            ``(seed, i)``.

    Returns:
        An :class:`Augmenter`.

    Raises:
        ValueError: unknown transform (with a "did you mean"), unknown option or bad value.

    Example:
        >>> aug = build_augmenter(["flip", {"name": "translate", "factor": 0.1}], seed=1)
        >>> [c["name"] for c in aug.to_config()]
        ['flip', 'translate']
    """
    if isinstance(specs, (str, dict)) or not isinstance(specs, (list, tuple)):
        raise InputValueError(
            f"`specs` should be a list of transform names or dicts. Received: specs={specs!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputValueError(f"`seed` should be a non-negative integer. Received: seed={seed!r}")
    transforms = []
    for i, spec in enumerate(specs):
        name, options = _parse_spec(spec, i)
        transforms.append(get_transform(name)(seed=_derive_seed(int(seed), i), **options))
    return Augmenter(transforms, seed=int(seed))


def _parse_spec(spec, index: int) -> tuple[str, dict]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        options = dict(spec)
        return options.pop("name"), options
    raise InputValueError(
        f"`specs[{index}]` should be a transform name or a dict with a `name` key. "
        f"Received: {spec!r}"
    )


def _derive_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) % (2**31 - 1)


def _check_batch(images: tf.Tensor) -> None:
    if images.dtype != tf.float32:
        raise ValueError(
            f"`images` should be a float32 batch in [0, 1]. "
            f"Received: images.dtype={images.dtype.name}"
        )
    shape = images.shape
    if shape.rank != 4 or shape[-1] not in (1, 3) or None in shape[1:]:
        raise ValueError(
            f"`images` should have the static shape (B, H, W, C) with C = 1 or 3. "
            f"Received: images.shape={shape}"
        )
