"""Real-time augmentation for text lines in ``tf.data``, through albumentations 2.x; no flips
(text has no mirror symmetry).

    aug = build_text_augmenter("auto", seed=0)
    ds = aug.map(ds)   # image float32 [H, W, C] in [0, 1] per element, (image, label) pairs

Transforms (name: options, albumentations class):

- ``affine``: ``rotate`` degrees, ``shear`` degrees, ``scale`` [lo, hi], ``p`` (Affine; borders
  filled with the nearest pixel, so no black wedges appear)
- ``blur``: ``max_sigma``, ``p`` (GaussianBlur)
- ``noise``: ``std`` (of the [0, 1] range), ``p`` (GaussNoise)
- ``brightness_contrast``: ``brightness``, ``contrast``, ``p`` (RandomBrightnessContrast)
- ``erase``: ``holes``, ``max_width`` (fraction of the height), ``p`` (CoarseDropout: small
  patches, Zhong et al. 2020's random erasing, kept smaller than a stroke gap)

**The auto recipe**: affine (rotate 2, shear 8, scale 0.9-1.05, p 0.5), blur (p 0.2), noise (p
0.2), brightness/contrast (0.3 / 0.3, p 0.5), erase (p 0.2). Determinism as the segmentation
augmenter: per-element seeds drawn in order from a seeded generator, albumentations reseeded per
call, each transform with its own seed.
"""

from __future__ import annotations

import difflib
import threading

import numpy as np
import tensorflow as tf

from kvision.augment.albu import import_albumentations
from kvision.errors import InputValueError

_MAX_SEED = 2**31 - 1
TRANSFORMS = {
    "affine": {"rotate": 2.0, "shear": 8.0, "scale": [0.9, 1.05], "p": 0.5},
    "blur": {"max_sigma": 1.0, "p": 0.2},
    "noise": {"std": 0.04, "p": 0.2},
    "brightness_contrast": {"brightness": 0.3, "contrast": 0.3, "p": 0.5},
    "erase": {"holes": 3, "max_width": 0.15, "p": 0.2},
}
AUTO_RECIPE = list(TRANSFORMS)


def resolve_specs(specs) -> list[dict]:
    """Specs (``"auto"``, names or dicts) with every option filled in; ``InputValueError`` for
    an unknown transform (did you mean), an unknown option or a probability outside [0, 1]."""
    if specs == "auto":
        specs = AUTO_RECIPE
    if not isinstance(specs, list | tuple):
        raise InputValueError(f"`augment.transforms` should be auto or a list. Received: {specs!r}")
    out = []
    for i, spec in enumerate(specs):
        spec = {"name": spec} if isinstance(spec, str) else dict(spec or {})
        name = spec.pop("name", None)
        if name not in TRANSFORMS:
            close = difflib.get_close_matches(str(name), list(TRANSFORMS), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise InputValueError(
                f"Unknown text transform `{name}` (transforms[{i}]).{hint} "
                f"Available: {', '.join(TRANSFORMS)}."
            )
        unknown = sorted(set(spec) - set(TRANSFORMS[name]))
        if unknown:
            raise InputValueError(
                f"Transform `{name}` got unknown option(s) {unknown}. "
                f"Allowed: {sorted(TRANSFORMS[name])}."
            )
        full = {"name": name, **TRANSFORMS[name], **spec}
        if not 0 <= float(full["p"]) <= 1:
            raise InputValueError(f"`{name}.p` should be in [0, 1]. Received: {full['p']}")
        out.append(full)
    return out


def _albumentations(spec: dict) -> object:
    import cv2

    A = import_albumentations()
    p, name = float(spec["p"]), spec["name"]
    if name == "affine":
        lo, hi = (float(v) for v in spec["scale"])
        r, s = float(spec["rotate"]), float(spec["shear"])
        return A.Affine(scale=(lo, hi), rotate=(-r, r), shear={"x": (-s, s), "y": (0, 0)},
                        border_mode=cv2.BORDER_REPLICATE, p=p)  # fmt: skip
    if name == "blur":
        return A.GaussianBlur(sigma_limit=(0.1, float(spec["max_sigma"])), blur_limit=(3, 5), p=p)
    if name == "noise":
        std = float(spec["std"])
        return A.GaussNoise(std_range=(std / 4, std), p=p)
    if name == "brightness_contrast":
        return A.RandomBrightnessContrast(brightness_limit=float(spec["brightness"]),
                                          contrast_limit=float(spec["contrast"]), p=p)  # fmt: skip
    size = float(spec["max_width"])
    return A.CoarseDropout(
        num_holes_range=(1, int(spec["holes"])), fill=0.5, p=p,
        hole_height_range=(0.05, size), hole_width_range=(0.01, size / 4),
    )  # fmt: skip


class TextAugmenter:
    """Augments one text-line image; built by :func:`build_text_augmenter`."""

    def __init__(self, specs, seed: int = 0):
        self.specs, self.seed = list(specs), int(seed)
        with tf.init_scope():
            self._generator = tf.random.Generator.from_seed(self.seed)
        self._local = threading.local()

    def to_config(self) -> list[dict]:
        return [dict(s) for s in self.specs]

    def apply_numpy(self, image: np.ndarray, seed: int) -> np.ndarray:
        """Augment ``image`` float32 ``[H, W, C]`` in [0, 1] with ``seed``; same shape."""
        compose = getattr(self._local, "compose", None)
        if compose is None:
            A = import_albumentations()
            compose = A.Compose([_albumentations(s) for s in self.specs], seed=0)
            self._local.compose = compose
        compose.set_random_seed(int(seed))
        seeds = np.random.default_rng(int(seed)).integers(0, _MAX_SEED, len(compose.transforms))
        for node, s in zip(compose.transforms, seeds, strict=True):
            node.set_random_seed(int(s))
        out = compose(image=np.array(image, np.float32))["image"]
        return np.clip(np.reshape(out, image.shape), 0.0, 1.0).astype(np.float32)

    def map(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Reproducible parallel ``dataset.map`` over ``(image, label)`` elements."""

        def apply(image, label, seed):
            out = tf.numpy_function(lambda i, s: self.apply_numpy(i, int(s)), [image, seed],
                                    tf.float32, stateful=False, name="text_aug")  # fmt: skip
            out.set_shape(image.shape)
            return out, label

        seeded = dataset.map(
            lambda i, y: (i, y, self._generator.uniform([], 0, _MAX_SEED, tf.int64))
        )
        return seeded.map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def build_text_augmenter(specs="auto", seed: int = 0) -> TextAugmenter:
    """A :class:`TextAugmenter` from specs (module docstring); errors as :func:`resolve_specs`."""
    return TextAugmenter(resolve_specs(specs), seed)
