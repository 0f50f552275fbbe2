"""The transform registry and the transforms built on tf_keras preprocessing layers.

Every transform works on a float32 batch ``(B, H, W, C)`` in ``[0, 1]`` (C = 1 or 3), keeps its
shape and dtype, and is registered by name with ``@register_transform``::

    t = get_transform("rotate")(seed=0, factor=0.05)
    images = t(images)

Options are validated when a transform is built: an unknown option names itself and the allowed
ones, a bad value names the option, the value and what is allowed. Each transform draws its random
numbers from its own seeded ``tf.random.Generator`` (stateful: a new draw on every call, the same
sequence for the same seed), so it runs the same eagerly and inside ``tf.data``.

Every transform has the option ``p``: the per-image probability of applying it.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, ClassVar

import tensorflow as tf

from kvision.errors import InputValueError

_REGISTRY: dict[str, type[Transform]] = {}


def register_transform(name: str):
    """Class decorator that registers a :class:`Transform` subclass under ``name``.

    Raises ``ValueError`` if the name is already taken.
    """

    def decorator(cls):
        if name in _REGISTRY:
            raise ValueError(
                f"Transform `{name}` is already registered by {_REGISTRY[name].__module__}."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_transforms() -> list[str]:
    """Names of all registered transforms, sorted.

    Example:
        >>> "flip" in list_transforms()
        True
    """
    _import_builtin_transforms()
    return sorted(_REGISTRY)


def get_transform(name: str) -> type[Transform]:
    """The transform class registered as ``name``; ``ValueError`` with a suggestion otherwise."""
    _import_builtin_transforms()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.5)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise InputValueError(
            f"Unknown transform `{name}`.{hint} Available: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def _import_builtin_transforms() -> None:
    # Importing the module runs its @register_transform decorators; albumentations itself is only
    # imported when one of its transforms is built.
    from kvision.augment import albu, erasing  # noqa: F401


class Transform:
    """Base class: a named, seeded, validated batch transform.

    Subclasses set ``defaults`` (every allowed option with its default), implement
    ``validate(options)`` (raise ``ValueError`` naming the option) and ``apply(images)``.

    Args:
        seed: integer seed for this transform's random draws.
        **options: the transform's options (see ``defaults``).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, seed: int = 0, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise InputValueError(
                f"Transform `{self.name}` got unknown option(s) {unknown}. "
                f"Allowed: {sorted(self.defaults)}."
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputValueError(f"`seed` should be an integer. Received: seed={seed!r}")
        self.seed = seed
        merged = {**self.defaults, **options}
        self.validate(merged)
        # Tuples become lists so the config is YAML/JSON-ready; values are not otherwise changed.
        self.options = {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}
        with tf.init_scope():  # the state variable must live outside any tf.function / tf.data
            self._generator = tf.random.Generator.from_seed(seed)
        self.build()

    def validate(self, options: dict) -> None:
        """Raise ``ValueError`` for a bad option value (override)."""

    def build(self) -> None:
        """Create layers or helpers from ``self.options`` (override)."""

    def apply(self, images: tf.Tensor) -> tf.Tensor:
        """Transform a float32 batch ``(B, H, W, C)`` in [0, 1] (override)."""
        raise NotImplementedError

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return self.apply(images)

    def get_config(self) -> dict:
        """``{"name": ..., **options}`` with every option resolved (defaults included)."""
        return {"name": self.name, **self.options}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    # -- helpers for subclasses -------------------------------------------------------------
    def error(self, option: str, value, allowed: str) -> ValueError:
        """A ``ValueError`` naming this transform, the option, the value and what is allowed."""
        return InputValueError(
            f"Transform `{self.name}`: `{option}` should be {allowed}. Received: {option}={value!r}"
        )

    def check_probability(self, options: dict, key: str = "p") -> None:
        value = options[key]
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise self.error(key, value, "a number between 0 and 1")

    def check_choice(self, options: dict, key: str, choices) -> None:
        if options[key] not in choices:
            raise self.error(key, options[key], f"one of {list(choices)}")

    def check_range(
        self,
        options: dict,
        key: str,
        low: float,
        high: float,
        scalar_low: float | None = None,
        integer: bool = False,
    ) -> tuple:
        """Check a number or an ordered ``[min, max]`` pair inside ``[low, high]``.

        A scalar must lie in ``[scalar_low, high]`` (``scalar_low`` defaults to ``low``).
        Returns the value as a ``(min, max)`` pair when it is a pair, ``(v,)`` when scalar.
        """
        value = options[key]
        kind = "integers" if integer else "numbers"
        ok_type = (
            (lambda v: isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number
        )
        if isinstance(value, (list, tuple)):
            if len(value) != 2 or not all(ok_type(v) for v in value):
                raise self.error(key, value, f"a number or a [min, max] pair of {kind}")
            lo, hi = value
            if not (low <= lo <= hi <= high):
                raise self.error(
                    key, value, f"a [min, max] pair with {low} <= min <= max <= {high}"
                )
            return (lo, hi)
        s_low = low if scalar_low is None else scalar_low
        if not ok_type(value) or not s_low <= value <= high:
            raise self.error(
                key, value, f"a number between {s_low} and {high} or a [min, max] pair of {kind}"
            )
        return (value,)

    def select(self, images: tf.Tensor, augmented: tf.Tensor, p: float) -> tf.Tensor:
        """Per image, keep ``augmented`` with probability ``p`` and ``images`` otherwise."""
        if p >= 1.0:
            return augmented
        if p <= 0.0:
            return images
        mask = self._generator.uniform([tf.shape(images)[0], 1, 1, 1]) < p
        return tf.where(mask, augmented, images)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_FILL_MODES = ("reflect", "wrap", "constant", "nearest")
_INTERPOLATIONS = ("bilinear", "nearest")
_GEOMETRIC_DEFAULTS = {
    "fill_mode": "reflect",
    "fill_value": 0.0,
    "interpolation": "bilinear",
    "p": 1.0,
}


class KerasLayerTransform(Transform):
    """A transform that runs one seeded ``tf_keras.layers.Random*`` layer (``training=True``).

    Subclasses implement ``make_layer(seed)``; the layer always computes in float32 (a global
    mixed-precision policy would otherwise make it cast to float16).
    """

    def build(self) -> None:
        self.layer = self.make_layer(self.seed)

    def make_layer(self, seed: int):
        raise NotImplementedError

    def apply(self, images):
        return self.select(images, self.layer(images, training=True), self.options["p"])

    def check_geometric(self, options: dict) -> None:
        self.check_choice(options, "fill_mode", _FILL_MODES)
        self.check_choice(options, "interpolation", _INTERPOLATIONS)
        value = options["fill_value"]
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise self.error("fill_value", value, "a number between 0 and 1")
        self.check_probability(options)


def _layer_factor(value):
    """A config factor (number or ``[lo, hi]`` list) as the number or tuple Keras layers take."""
    return tuple(value) if isinstance(value, list) else value


def _layers():
    from kvision._keras import keras

    return keras.layers


@register_transform("flip")
class Flip(Transform):
    """Mirror images (``mode``: ``horizontal``, ``vertical`` or ``both``) with probability ``p``.

    ``tf_keras.layers.RandomFlip`` always flips with probability 0.5, so this transform draws its
    own per-image decision to make ``p`` configurable (``p=1`` is an exact mirror). With ``both``
    the horizontal and vertical flips are drawn independently.

    Args:
        mode: ``horizontal`` (default), ``vertical`` or ``both``.
        p: probability of each flip per image (default 0.5).

    Example:
        >>> images = Flip(seed=0, mode="horizontal", p=1.0)(tf.zeros((2, 8, 8, 1)))
    """

    defaults = {"mode": "horizontal", "p": 0.5}

    def validate(self, options):
        self.check_choice(options, "mode", ("horizontal", "vertical", "both"))
        self.check_probability(options)

    def apply(self, images):
        mode, p = self.options["mode"], self.options["p"]
        if mode in ("horizontal", "both"):
            images = self.select(images, tf.reverse(images, axis=[2]), p)
        if mode in ("vertical", "both"):
            images = self.select(images, tf.reverse(images, axis=[1]), p)
        return images


@register_transform("rotate")
class Rotate(KerasLayerTransform):
    """Random rotation (``tf_keras.layers.RandomRotation``).

    Args:
        factor: fraction of a full turn; ``f`` rotates by an angle in ``[-f, f] * 360``
            degrees, a pair ``[lo, hi]`` uses that range (default 0.05, i.e. +-18 degrees).
            Allowed: 0 <= f <= 0.5, or -0.5 <= lo <= hi <= 0.5.
        fill_mode: ``reflect`` (default), ``wrap``, ``constant`` or ``nearest``.
        fill_value: value in [0, 1] used with ``fill_mode="constant"``.
        interpolation: ``bilinear`` (default) or ``nearest``.
        p: per-image probability (default 1.0).
    """

    defaults = {"factor": 0.05, **_GEOMETRIC_DEFAULTS}

    def validate(self, options):
        self.check_range(options, "factor", -0.5, 0.5, scalar_low=0.0)
        self.check_geometric(options)

    def make_layer(self, seed):
        o = self.options
        factor = _layer_factor(o["factor"])
        return _layers().RandomRotation(
            factor,
            fill_mode=o["fill_mode"],
            fill_value=o["fill_value"],
            interpolation=o["interpolation"],
            seed=seed,
            dtype="float32",
        )


@register_transform("zoom")
class Zoom(KerasLayerTransform):
    """Random zoom keeping the aspect ratio (``tf_keras.layers.RandomZoom``).

    Args:
        factor: ``f`` zooms by a fraction in ``[-f, f]`` of the size; a pair ``[lo, hi]`` uses
            that range with Keras' sign convention (negative zooms in, positive zooms out).
            Allowed: 0 <= f <= 0.9, or -0.9 <= lo <= hi <= 0.9. Default 0.1.
        fill_mode, fill_value, interpolation, p: as for ``rotate``.
    """

    defaults = {"factor": 0.1, **_GEOMETRIC_DEFAULTS}

    def validate(self, options):
        self.check_range(options, "factor", -0.9, 0.9, scalar_low=0.0)
        self.check_geometric(options)

    def make_layer(self, seed):
        o = self.options
        factor = _layer_factor(o["factor"])
        return _layers().RandomZoom(
            factor,
            width_factor=None,
            fill_mode=o["fill_mode"],
            fill_value=o["fill_value"],
            interpolation=o["interpolation"],
            seed=seed,
            dtype="float32",
        )


@register_transform("translate")
class Translate(KerasLayerTransform):
    """Random shift along both axes (``tf_keras.layers.RandomTranslation``).

    Args:
        factor: ``f`` shifts each axis by a fraction in ``[-f, f]`` of the image size; a pair
            ``[lo, hi]`` uses that range. Allowed: 0 <= f <= 1, or -1 <= lo <= hi <= 1.
            Default 0.1.
        fill_mode, fill_value, interpolation, p: as for ``rotate``.
    """

    defaults = {"factor": 0.1, **_GEOMETRIC_DEFAULTS}

    def validate(self, options):
        self.check_range(options, "factor", -1.0, 1.0, scalar_low=0.0)
        self.check_geometric(options)

    def make_layer(self, seed):
        o = self.options
        factor = _layer_factor(o["factor"])
        return _layers().RandomTranslation(
            factor,
            factor,
            fill_mode=o["fill_mode"],
            fill_value=o["fill_value"],
            interpolation=o["interpolation"],
            seed=seed,
            dtype="float32",
        )


@register_transform("contrast")
class Contrast(KerasLayerTransform):
    """Random contrast per image (``tf_keras.layers.RandomContrast``).

    The contrast factor is drawn from ``[1 - lo, 1 + hi]`` and applied around each image's
    per-channel mean. The Keras layer draws one factor per call, so it is run once per image
    (``tf.map_fn``) to give every image its own factor.

    Args:
        factor: ``f`` (``lo = hi = f``) or a pair ``[lo, hi]`` (not an interval: the factor is
            drawn from ``[1 - lo, 1 + hi]``); 0 <= lo <= 1, 0 <= hi <= 10. Default 0.2.
        p: per-image probability (default 1.0).
    """

    defaults = {"factor": 0.2, "p": 1.0}

    def validate(self, options):
        value = options["factor"]
        pair = value if isinstance(value, (list, tuple)) else [value, value]
        if (
            len(pair) != 2
            or not all(_is_number(v) for v in pair)
            or not (0.0 <= pair[0] <= 1.0 and 0.0 <= pair[1] <= 10.0)
        ):
            raise self.error(
                "factor",
                value,
                "a number between 0 and 1 or a pair [lo, hi] with 0 <= lo <= 1 and 0 <= hi <= 10",
            )
        self.check_probability(options)

    def make_layer(self, seed):
        return _layers().RandomContrast(
            _layer_factor(self.options["factor"]), seed=seed, dtype="float32"
        )

    def apply(self, images):
        augmented = tf.map_fn(
            lambda im: self.layer(im, training=True),
            images,
            fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
        )
        return self.select(images, augmented, self.options["p"])


@register_transform("brightness")
class Brightness(KerasLayerTransform):
    """Random illumination shift per image (``tf_keras.layers.RandomBrightness``, range [0, 1]).

    Args:
        factor: ``f`` adds a value in ``[-f, f]`` to every pixel; a pair ``[lo, hi]`` uses that
            range. Allowed: 0 <= f <= 1, or -1 <= lo <= hi <= 1. Default 0.2.
        p: per-image probability (default 1.0).
    """

    defaults = {"factor": 0.2, "p": 1.0}

    def validate(self, options):
        self.check_range(options, "factor", -1.0, 1.0, scalar_low=0.0)
        self.check_probability(options)

    def make_layer(self, seed):
        return _layers().RandomBrightness(
            _layer_factor(self.options["factor"]),
            value_range=(0.0, 1.0),
            seed=seed,
            dtype="float32",
        )
