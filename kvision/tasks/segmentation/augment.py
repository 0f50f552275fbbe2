"""Mask-aware real-time augmentation for segmentation in ``tf.data``, through albumentations 2.x.

    aug = build_mask_augmenter(["flip", "rot90", "elastic", "brightness_contrast"], seed=0)
    ds = aug.map(ds)   # (image float32 [H, W, C] in [0, 1], mask uint8 [H, W]) per example

The image and its mask go through the same albumentations call, so every geometric transform
moves them together; the mask is always resampled with nearest neighbour (class ids are never
blended) and pixels a transform brings in from outside the image get ``ignore_index`` in the mask
(no loss) and 0 in the image. Transforms (name: options, albumentations class):

- ``flip``: ``mode`` horizontal / vertical / both, ``p`` (HorizontalFlip / VerticalFlip)
- ``rot90``: ``p`` (RandomRotate90)
- ``rotate``: ``limit`` degrees, ``p`` (Rotate)
- ``elastic``: ``alpha``, ``sigma``, ``p`` (ElasticTransform, Simard et al. 2003)
- ``grid_distortion``: ``num_steps``, ``distort_limit``, ``p`` (GridDistortion)
- ``scale_crop``: ``scale`` [lo, hi], ``p`` (Affine scale about the centre: a zoom in crops,
  a zoom out pads)
- ``brightness_contrast``: ``brightness``, ``contrast``, ``p`` (RandomBrightnessContrast)

Geometric ones take ``interpolation`` for the image: ``linear`` (default) or ``nearest``.

**The auto recipe** (mmsegmentation's default pipeline, lighter): horizontal flip, scale 0.75 to
1.25, brightness/contrast. It assumes left-right symmetry, as scene segmentation does; pass
transforms for data with more symmetry (microscopy: ``flip`` both, ``rot90``, ``elastic``).

**Determinism** as the detection augmenter: each example's seed is drawn in element order from
the augmenter's seeded generator before the parallel map, and albumentations is reseeded per call,
each transform with its own seed.
"""

from __future__ import annotations

import difflib
import threading

import numpy as np
import tensorflow as tf

from kvision.augment.albu import import_albumentations
from kvision.errors import InputValueError

_MAX_SEED = 2**31 - 1
AUTO_RECIPE = [
    {"name": "flip", "mode": "horizontal", "p": 0.5},
    {"name": "scale_crop", "scale": [0.75, 1.25], "p": 0.5},
    {"name": "brightness_contrast", "brightness": 0.2, "contrast": 0.2, "p": 0.5},
]
#: options of each transform with their defaults
TRANSFORMS = {
    "flip": {"mode": "horizontal", "p": 0.5},
    "rot90": {"p": 0.5},
    "rotate": {"limit": 30.0, "p": 0.5, "interpolation": "linear"},
    "elastic": {"alpha": 30.0, "sigma": 5.0, "p": 0.3, "interpolation": "linear"},
    "grid_distortion": {"num_steps": 5, "distort_limit": 0.2, "p": 0.3, "interpolation": "linear"},
    "scale_crop": {"scale": [0.75, 1.25], "p": 0.5, "interpolation": "linear"},
    "brightness_contrast": {"brightness": 0.2, "contrast": 0.2, "p": 0.5},
}


def resolve_specs(specs) -> list[dict]:
    """Transform specs (``"auto"``, names or dicts) with every option filled in.

    Raises:
        InputValueError: an unknown transform (with a "did you mean"), option or flip mode, or a
            probability outside [0, 1].
    """
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
                f"Unknown segmentation transform `{name}` (transforms[{i}]).{hint} "
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
        if name == "flip" and full["mode"] not in ("horizontal", "vertical", "both"):
            raise InputValueError(
                f"`flip.mode` should be horizontal, vertical or both. Received: {full['mode']!r}"
            )
        if full.get("interpolation", "linear") not in ("linear", "nearest"):
            raise InputValueError(
                f"`{name}.interpolation` should be linear or nearest. "
                f"Received: {full['interpolation']!r}"
            )
        out.append(full)
    return out


def _albumentations(spec: dict, ignore_index: int) -> list:
    import cv2

    A = import_albumentations()
    p = float(spec["p"])
    interp = cv2.INTER_NEAREST if spec.get("interpolation") == "nearest" else cv2.INTER_LINEAR
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": ignore_index}
    nearest = {"interpolation": interp, "mask_interpolation": cv2.INTER_NEAREST}
    name = spec["name"]
    if name == "flip":
        parts = []
        if spec["mode"] in ("horizontal", "both"):
            parts.append(A.HorizontalFlip(p=p))
        if spec["mode"] in ("vertical", "both"):
            parts.append(A.VerticalFlip(p=p))
        return parts
    if name == "rot90":
        return [A.RandomRotate90(p=p)]
    if name == "rotate":
        return [A.Rotate(limit=float(spec["limit"]), p=p, **border, **nearest)]
    if name == "elastic":
        return [A.ElasticTransform(alpha=float(spec["alpha"]), sigma=float(spec["sigma"]), p=p,
                                   **border, **nearest)]  # fmt: skip
    if name == "grid_distortion":
        return [A.GridDistortion(num_steps=int(spec["num_steps"]),
                                 distort_limit=float(spec["distort_limit"]), p=p, **border,
                                 **nearest)]  # fmt: skip
    if name == "scale_crop":
        lo, hi = (float(v) for v in spec["scale"])
        return [A.Affine(scale=(lo, hi), keep_ratio=True, p=p, **border, **nearest)]
    return [A.RandomBrightnessContrast(brightness_limit=float(spec["brightness"]),
                                       contrast_limit=float(spec["contrast"]), p=p)]  # fmt: skip


class MaskAugmenter:
    """Augments one ``(image, mask)`` example; built by :func:`build_mask_augmenter`.

    Args:
        specs: resolved transform specs (:func:`resolve_specs`).
        seed: seed of the per-example draws.
        ignore_index: the mask value of pixels brought in from outside the image.
    """

    def __init__(self, specs, seed: int = 0, ignore_index: int = 255):
        self.specs, self.seed, self.ignore_index = list(specs), int(seed), int(ignore_index)
        with tf.init_scope():
            self._generator = tf.random.Generator.from_seed(self.seed)
        self._local = threading.local()

    def to_config(self) -> list[dict]:
        return [dict(s) for s in self.specs]

    def _compose(self):
        compose = getattr(self._local, "compose", None)
        if compose is None:
            A = import_albumentations()
            parts = [t for s in self.specs for t in _albumentations(s, self.ignore_index)]
            compose = A.Compose(parts, seed=0)
            self._local.compose = compose
            self._local.nodes = list(compose.transforms)
        return compose

    def apply_numpy(self, image: np.ndarray, mask: np.ndarray, seed: int):
        """Augment with ``seed``: ``image`` float32 ``[H, W, C]`` in [0, 1], ``mask`` uint8
        ``[H, W]`` -> the same, same shapes."""
        compose = self._compose()
        compose.set_random_seed(int(seed))
        seeds = np.random.default_rng(int(seed)).integers(0, _MAX_SEED, len(self._local.nodes))
        for node, s in zip(self._local.nodes, seeds, strict=True):
            node.set_random_seed(int(s))
        out = compose(image=np.array(image, np.float32), mask=np.array(mask, np.uint8))
        img = np.clip(np.reshape(out["image"], image.shape), 0.0, 1.0).astype(np.float32)
        return img, np.asarray(out["mask"], np.uint8).reshape(mask.shape)

    def apply(self, image, mask, seed):
        """The graph-mode version of :meth:`apply_numpy` (``tf.numpy_function``)."""
        out = tf.numpy_function(
            lambda i, m, s: self.apply_numpy(i, m, int(s)), [image, mask, tf.cast(seed, tf.int64)],
            [tf.float32, tf.uint8], stateful=False, name="mask_aug",
        )  # fmt: skip
        out[0].set_shape(image.shape)
        out[1].set_shape(mask.shape)
        return out[0], out[1]

    def map(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Reproducible parallel ``dataset.map`` over ``(image, mask)`` elements."""
        seeded = dataset.map(
            lambda i, m: (i, m, self._generator.uniform([], 0, _MAX_SEED, tf.int64))
        )
        return seeded.map(self.apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def build_mask_augmenter(specs="auto", seed: int = 0, ignore_index: int = 255) -> MaskAugmenter:
    """A :class:`MaskAugmenter` from specs (module docstring); errors as :func:`resolve_specs`."""
    return MaskAugmenter(resolve_specs(specs), seed, ignore_index)
