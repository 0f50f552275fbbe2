"""Transforms run by albumentations 2.x through ``tf.numpy_function``.

albumentations is imported only when one of these transforms is built (with
``NO_ALBUMENTATIONS_UPDATE=1`` set first, so it never checks the network). Each call draws a
batch seed from the transform's seeded TF generator and reseeds its ``A.Compose`` with it, so the
result is a pure function of (images, draw): the same seed gives the same sequence eagerly and in
``tf.data``, and concurrent ``tf.data`` workers do not share random state (a lock serializes
them).

Example::

    blur = get_transform("blur")(seed=0, p=0.25)
    images = blur(images)  # float32 (B, H, W, C) in [0, 1]
"""

from __future__ import annotations

import os
import threading

import numpy as np
import tensorflow as tf

from kvision.augment.transforms import Transform, register_transform
from kvision.errors import MissingDependencyError

_INSTALL_HINT = "Install it with `pip install 'albumentations>=2,<3'`."


def import_albumentations():
    """Import albumentations lazily (no update check); raise ``ImportError`` with a hint."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations as A
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"kvision's `noise`, `cutout`, `blur` and `gamma` transforms "
            f"need albumentations 2.x. {_INSTALL_HINT}"
        ) from exc
    major = int(A.__version__.split(".")[0])
    if major != 2:
        raise MissingDependencyError(
            f"kvision needs albumentations 2.x; found {A.__version__}. {_INSTALL_HINT}"
        )
    return A


class AlbumentationsTransform(Transform):
    """Base class: one albumentations transform applied image by image on a batch.

    Subclasses implement ``make(A)`` returning the albumentations transform (built with
    ``p=1``). The per-image choice with probability ``p`` is drawn here, from the batch seed, so
    images that are not chosen are copied through without a Python call per image.
    """

    def build(self) -> None:
        A = import_albumentations()
        self._compose = A.Compose([self.make(A)], seed=self.seed)
        self._lock = threading.Lock()

    def make(self, A):
        raise NotImplementedError

    def apply(self, images):
        seed = self._generator.uniform([], minval=0, maxval=2**31 - 1, dtype=tf.int64)
        out = tf.numpy_function(
            self._run,
            [images, seed],
            tf.float32,
            stateful=False,
            name=f"albumentations_{self.name}",
        )
        out.set_shape(images.shape)
        return out

    def _run(self, images: np.ndarray, seed) -> np.ndarray:
        out = np.array(images, dtype=np.float32, order="C")  # a copy: the input is read-only
        rng = np.random.default_rng(int(seed))
        chosen = np.flatnonzero(rng.random(len(out)) < self.options["p"])
        with self._lock:
            self._compose.set_random_seed(int(seed))
            for i in chosen:
                # albumentations may drop the channel axis of grayscale images: reshape restores it
                out[i] = np.reshape(self._compose(image=out[i])["image"], out.shape[1:])
        return np.clip(out, 0.0, 1.0, out=out)


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


@register_transform("noise")
class Noise(AlbumentationsTransform):
    """Additive Gaussian noise (``A.GaussNoise``), per channel.

    Args:
        std: noise standard deviation as a fraction of the [0, 1] range: a number (fixed) or a
            ``[min, max]`` range in [0, 1] (default ``[0.02, 0.1]``).
        p: per-image probability (default 0.5).
    """

    defaults = {"std": [0.02, 0.1], "p": 0.5}

    def validate(self, options):
        self.check_range(options, "std", 0.0, 1.0)
        self.check_probability(options)

    def make(self, A):
        return A.GaussNoise(std_range=_pair(self.options["std"]), p=1.0)


def _check_fill(t: Transform, options: dict) -> None:
    value = options["fill"]
    if value == "random":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise t.error("fill", value, 'a number between 0 and 1 or "random"')


@register_transform("cutout")
class Cutout(AlbumentationsTransform):
    """Several rectangular holes per image (``A.CoarseDropout``), a coarser occlusion.

    Args:
        holes: number of holes, an integer or ``[min, max]`` (1 to 32; default ``[1, 2]``).
        size: hole height and width as a fraction of the image side, a number or ``[min, max]``
            in (0, 1] (default ``[0.1, 0.2]``).
        fill: value in [0, 1] (default 0) or ``"random"``.
        p: per-image probability (default 0.5).
    """

    defaults = {"holes": [1, 2], "size": [0.1, 0.2], "fill": 0.0, "p": 0.5}

    def validate(self, options):
        self.check_range(options, "holes", 1, 32, integer=True)
        pair = self.check_range(options, "size", 0.0, 1.0)
        if pair[0] <= 0:
            raise self.error("size", options["size"], "greater than 0")
        _check_fill(self, options)
        self.check_probability(options)

    def make(self, A):
        o = self.options
        size = tuple(float(v) for v in _pair(o["size"]))
        fill = "random_uniform" if o["fill"] == "random" else float(o["fill"])
        return A.CoarseDropout(
            num_holes_range=_pair(o["holes"]),
            hole_height_range=size,
            hole_width_range=size,
            fill=fill,
            p=1.0,
        )


@register_transform("blur")
class Blur(AlbumentationsTransform):
    """Gaussian blur (``A.GaussianBlur``), e.g. for defocus robustness.

    Args:
        kernel: odd kernel size, a number or ``[min, max]`` between 3 and 31 (default ``[3, 5]``).
        sigma: Gaussian sigma in pixels, a number or ``[min, max]`` in (0, 10] (default
            ``[0.3, 1.2]``).
        p: per-image probability (default 0.5).
    """

    defaults = {"kernel": [3, 5], "sigma": [0.3, 1.2], "p": 0.5}

    def validate(self, options):
        pair = self.check_range(options, "kernel", 3, 31, integer=True)
        if any(k % 2 == 0 for k in pair):
            raise self.error("kernel", options["kernel"], "odd")
        pair = self.check_range(options, "sigma", 0.0, 10.0)
        if pair[0] <= 0:
            raise self.error("sigma", options["sigma"], "greater than 0")
        self.check_probability(options)

    def make(self, A):
        o = self.options
        return A.GaussianBlur(
            blur_limit=_pair(o["kernel"]),
            sigma_limit=tuple(float(v) for v in _pair(o["sigma"])),
            p=1.0,
        )


@register_transform("gamma")
class Gamma(AlbumentationsTransform):
    """Random gamma curve ``x ** g`` (``A.RandomGamma``), an illumination change.

    Args:
        gamma: exponent ``g``, a number or ``[min, max]`` in [0.1, 10] (default ``[0.7, 1.5]``;
            below 1 brightens, above 1 darkens).
        p: per-image probability (default 0.5).
    """

    defaults = {"gamma": [0.7, 1.5], "p": 0.5}

    def validate(self, options):
        self.check_range(options, "gamma", 0.1, 10.0)
        self.check_probability(options)

    def make(self, A):
        lo, hi = _pair(self.options["gamma"])
        return A.RandomGamma(gamma_limit=(lo * 100.0, hi * 100.0), p=1.0)
