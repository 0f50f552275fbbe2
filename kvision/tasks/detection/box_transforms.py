"""The named detection transforms (``flip``, ``scale_crop``, ``translate``, ``color``,
``brightness``, ``erase``): validated options mapped to albumentations transforms.

:func:`~kvision.tasks.detection.augment.build_detection_augmenter` builds them from specs and
runs them with the box rule described in ``augment.py``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kvision.errors import InputValueError

if TYPE_CHECKING:
    from kvision.tasks.detection.augment import _Tracker


class DetectionTransform:
    """Base class: a named detection transform with validated options.

    Subclasses set ``defaults`` (every option), ``rules`` (option -> ``("number", low, high)``,
    ``("pair", low, high)``: ``[min, max]``, ``("symmetric", limit)``: ``v`` in [0, limit] for
    ``[-v, v]`` or a pair in [-limit, limit], ``("choice", values)``, ``("area",)``: (0, 1],
    ``("fill",)``: [0, 1] or ``"random"``; ``p`` is a probability) and ``make(A, shape,
    tracker)``: the albumentations transforms for images of ``shape``.

    Raises:
        InputValueError: unknown option or bad value, naming the transform, option and value.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    rules: ClassVar[dict[str, tuple]] = {}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise InputValueError(
                f"Transform `{self.name}` got unknown option(s) {unknown}. "
                f"Allowed: {sorted(self.defaults)}."
            )
        merged = {**self.defaults, **options}
        rules = {"p": ("number", 0, 1), **self.rules}
        self.values = {key: self._check(key, merged[key], rules[key]) for key in merged}
        self.validate(self.values)
        self.options = {
            k: list(v) if isinstance(v, (list, tuple)) else v for k, v in merged.items()
        }

    def validate(self, values: dict) -> None:
        """Checks across options (override)."""

    def make(self, A, shape: tuple, tracker: _Tracker) -> list:
        raise NotImplementedError

    def get_config(self) -> dict:
        """``{"name": ..., **options}`` with every option resolved."""
        return {"name": self.name, **self.options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    def error(self, option: str, value, allowed: str) -> InputValueError:
        return InputValueError(
            f"Transform `{self.name}`: `{option}` should be {allowed}. Received: {option}={value!r}"
        )

    def _check(self, key: str, value, rule: tuple):
        """The value as used (numbers as float, ranges as pairs), or :meth:`error`."""
        kind, *args = rule
        is_pair = isinstance(value, (list, tuple)) and len(value) == 2
        is_pair = is_pair and all(_is_number(v) for v in value)
        if kind == "number" and _is_number(value) and args[0] <= value <= args[1]:
            return float(value)
        if kind == "pair" and is_pair and args[0] <= value[0] <= value[1] <= args[1]:
            return (float(value[0]), float(value[1]))
        if kind == "symmetric" and _is_number(value) and 0 <= value <= args[0]:
            return (-float(value), float(value))
        if kind == "symmetric" and is_pair and -args[0] <= value[0] <= value[1] <= args[0]:
            return (float(value[0]), float(value[1]))
        if kind == "choice" and value in args[0]:
            return value
        if kind == "area" and _is_number(value) and 0 < value <= 1:
            return float(value)
        if kind == "fill" and (value == "random" or _is_number(value) and 0 <= value <= 1):
            return "random_uniform" if value == "random" else float(value)
        allowed = _ALLOWED[kind].format(*(list(a) if isinstance(a, tuple) else a for a in args))
        raise self.error(key, value, allowed)


_ALLOWED = {
    "number": "a number between {0} and {1}",
    "pair": "a [min, max] pair with {0} <= min <= max <= {1}",
    "symmetric": "a number between 0 and {0} or a [min, max] pair in [-{0}, {0}]",
    "choice": "one of {0}",
    "area": "a number in (0, 1]",
    "fill": 'a number between 0 and 1 or "random"',
}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cv2():
    import cv2  # installed with albumentations

    return cv2


class Flip(DetectionTransform):
    """Mirror image, boxes and masks: ``mode`` ``horizontal`` (default), ``vertical`` or ``both``
    (each flip drawn with probability ``p``, default 0.5)."""

    name = "flip"
    defaults = {"mode": "horizontal", "p": 0.5}
    rules = {"mode": ("choice", ("horizontal", "vertical", "both"))}

    def make(self, A, shape, tracker):
        mode, p = self.values["mode"], self.values["p"]
        out = [A.HorizontalFlip(p=p)] if mode in ("horizontal", "both") else []
        return out + ([A.VerticalFlip(p=p)] if mode in ("vertical", "both") else [])


class ScaleCrop(DetectionTransform):
    """Zoom by a factor drawn from ``scale`` (``[min, max]`` in [0.1, 4], default [0.5, 1.5]),
    keeping the size: a window at a uniform random place when zoomed in, the image padded with
    ``fill`` (in [0, 1], default 0.5) at a random place when zoomed out; probability ``p``
    (default 1). Chosen over ``RandomResizedCrop`` (zooms in only, so objects never get
    smaller; distorts the aspect ratio), ``Affine(scale)`` (about the center only: corners are
    never zoomed on) and ``RandomSizedBBoxSafeCrop`` (never cuts a box, so truncated objects are
    never seen; the crop depends on the labels; no zoom out)."""

    name = "scale_crop"
    defaults = {"scale": [0.5, 1.5], "fill": 0.5, "p": 1.0}
    rules = {"scale": ("pair", 0.1, 4.0), "fill": ("number", 0, 1)}

    def make(self, A, shape, tracker):
        cv2, (lo, hi), v = _cv2(), self.values["scale"], self.values
        scale = A.RandomScale(
            (lo - 1, hi - 1), mask_interpolation=cv2.INTER_NEAREST, area_for_downscale="image", p=1
        )
        crop = A.RandomCrop(
            *shape[:2], pad_if_needed=True, pad_position="random", fill=v["fill"], fill_mask=0
        )
        return [A.Sequential([scale, crop], p=v["p"])]


class Translate(DetectionTransform):
    """Shift each axis independently, by whole pixels: ``factor`` ``f`` in [0, 1] draws the
    fraction of the size from ``[-f, f]`` (default 0.1), a pair ``[min, max]`` from that range;
    new pixels get ``fill`` (in [0, 1], default 0.5); probability ``p`` (default 1)."""

    name = "translate"
    defaults = {"factor": 0.1, "fill": 0.5, "p": 1.0}
    rules = {"factor": ("symmetric", 1.0), "fill": ("number", 0, 1)}

    def make(self, A, shape, tracker):
        v, cv2 = self.values, _cv2()
        shift = {"x": v["factor"], "y": v["factor"]}
        affine = A.Affine(
            translate_percent=shift,
            mask_interpolation=cv2.INTER_NEAREST,
            fill=v["fill"],
            fill_mask=0,
            p=v["p"],
        )
        return [affine]


class Color(DetectionTransform):
    """``A.ColorJitter``: hue shifted by up to ``hue`` of a full turn (in [0, 0.5], default
    0.015), saturation and brightness multiplied by a factor in ``[1 - v, 1 + v]``
    (``saturation`` default 0.5, ``brightness`` default 0.3, in [0, 1]); grayscale images get
    the brightness factor only; probability ``p`` (default 1)."""

    name = "color"
    defaults = {"hue": 0.015, "saturation": 0.5, "brightness": 0.3, "p": 1.0}
    rules = {
        "hue": ("number", 0, 0.5),
        "saturation": ("number", 0, 1),
        "brightness": ("number", 0, 1),
    }

    def make(self, A, shape, tracker):
        v, rgb = self.values, shape[2] == 3
        hue, saturation = (v["hue"], v["saturation"]) if rgb else (0.0, 0.0)
        jitter = A.ColorJitter(
            brightness=v["brightness"], contrast=0.0, saturation=saturation, hue=hue, p=v["p"]
        )
        return [jitter]


class Brightness(DetectionTransform):
    """``A.RandomBrightnessContrast``: ``brightness`` (added) and ``contrast`` (factor - 1) drawn
    from ``[-v, v]`` for ``v`` in [0, 1] or from a ``[min, max]`` pair in [-1, 1] (defaults 0.2);
    probability ``p`` (default 0.5)."""

    name = "brightness"
    defaults = {"brightness": 0.2, "contrast": 0.2, "p": 0.5}
    rules = {"brightness": ("symmetric", 1.0), "contrast": ("symmetric", 1.0)}

    def make(self, A, shape, tracker):
        v = self.values
        return [A.RandomBrightnessContrast(v["brightness"], v["contrast"], p=v["p"])]


class Erase(DetectionTransform):
    """Random erasing of one rectangle (``A.Erasing``) covering ``min_area`` to ``max_area`` of
    the image (in (0, 1], defaults 0.02 and 0.2) with an aspect ratio in ``aspect`` (default
    [0.3, 3.3]), filled with ``fill`` (in [0, 1], default 0, or ``"random"``: one random colour);
    probability ``p`` (default 0.5). Boxes and masks stay (module docstring)."""

    name = "erase"
    defaults = {"min_area": 0.02, "max_area": 0.2, "aspect": [0.3, 3.3], "fill": 0.0, "p": 0.5}
    rules = {
        "min_area": ("area",),
        "max_area": ("area",),
        "aspect": ("pair", 0.01, 100.0),
        "fill": ("fill",),
    }

    def validate(self, v):
        if v["min_area"] > v["max_area"]:
            raise self.error("min_area", v["min_area"], f"at most max_area ({v['max_area']})")

    def make(self, A, shape, tracker):
        v = self.values
        area, aspect = (v["min_area"], v["max_area"]), v["aspect"]
        erasing = _occluding_erasing(A)(scale=area, ratio=aspect, fill=v["fill"], p=v["p"])
        erasing.tracker = tracker
        return [erasing]


_TRANSFORMS = {cls.name: cls for cls in (Flip, ScaleCrop, Translate, Color, Brightness, Erase)}
_ERASING_CLASS: list = []


def _occluding_erasing(A):
    """``A.Erasing`` whose boxes follow the erase rule: kept unchanged, their erased part counted
    against visibility (albumentations would shrink them to the part not erased)."""
    if not _ERASING_CLASS:

        class OccludingErasing(A.Erasing):
            tracker: _Tracker | None = None

            def apply_to_bboxes(self, bboxes, holes, **params):
                if holes.size == 0 or len(bboxes) == 0:
                    return bboxes
                height, width = params["shape"][:2]
                erased = np.zeros((height, width))
                for x0, y0, x1, y1 in np.clip(np.asarray(holes, np.int64)[:, :4], 0, None):
                    erased[y0:y1, x0:x1] = 1.0
                covered = _covered_fraction(bboxes[:, :4] * [width, height, width, height], erased)
                return self.tracker.occlude(bboxes, 1.0 - covered)

        _ERASING_CLASS.append(OccludingErasing)
    return _ERASING_CLASS[0]


def _covered_fraction(boxes_px: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Fraction of each box (pixels, edges at integers) on the pixels marked in ``covered``
    ``[H, W]``, each pixel weighted by the part of it inside the box."""
    height, width = covered.shape
    x0, y0, x1, y1 = (boxes_px[:, i : i + 1] for i in range(4))
    cols, rows = np.arange(width), np.arange(height)
    wx = np.clip(np.minimum(cols + 1, x1) - np.maximum(cols, x0), 0, None)
    wy = np.clip(np.minimum(rows + 1, y1) - np.maximum(rows, y0), 0, None)
    area = np.maximum((x1 - x0) * (y1 - y0), 1e-12)[:, 0]
    return np.einsum("nh,hw,nw->n", wy, covered, wx) / area
