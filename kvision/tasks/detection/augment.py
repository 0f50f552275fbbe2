"""Box- and mask-aware augmentation for detection in ``tf.data``, through albumentations 2.x.

    aug = build_detection_augmenter("auto", seed=0)
    ds = aug.map(ds)  # parallel and reproducible: (image, boxes, classes[, masks]) per example
    image, boxes, classes = aug(image, boxes, classes)  # eagerly, or in ds.map(aug)

One example per call, not a batch (the number of boxes varies): ``image`` float32 ``[H, W, C]``
in [0, 1] (C = 1 or 3), ``boxes`` float32 ``[N, 4]`` normalized ``[x_min, y_min, x_max, y_max]``
relative to the (already resized) image, ``classes`` int32 ``[N]``, optionally ``masks`` uint8
``[N, H, W]``. The same structure comes back, same static shapes, with the ``N' <= N`` objects
that survive, in their input order; the image stays in [0, 1].

**Boxes.** Geometric transforms move box corners exactly (albumentations' box functions) and
masks with nearest-neighbour resampling, so a box stays the box of its object (within ~1 px: the
mask snaps to the pixel grid). After every transform each box is clipped to the image; an object
is dropped, with its class and its mask, when

* less than ``min_visibility`` of its area is still visible: the clipped box's area over the area
  the box would have after all the transforms so far without clipping (the product over steps,
  so two cuts of 25 % each leave 56 %, not 75 %), times the part not under an erased patch; or
* the final clipped box is narrower or shorter than ``min_size_px`` pixels.

**Erasing.** A box under an erased patch is kept unchanged and so is its mask: the object is
still there, occluded (as in Random Erasing, Zhong et al. 2020). The erased part of the box counts
as not visible, so a box hidden beyond ``1 - min_visibility`` is dropped, the rule the image
border follows (YOLOv5's cutout drops labels more than 60 % obscured the same way).

**Transforms** (options, defaults):

================ ======================================= =========================================
``flip``         ``HorizontalFlip`` / ``VerticalFlip``   ``mode`` horizontal, ``p`` 0.5
``scale_crop``   ``RandomScale`` then ``RandomCrop``     ``scale`` [0.5, 1.5], ``fill`` 0.5, ``p`` 1
                 (padding at a random place if smaller)
``translate``    ``Affine(translate_percent)``           ``factor`` 0.1 per axis, ``fill`` 0.5, ``p`` 1
``color``        ``ColorJitter``                         ``hue`` 0.015, ``saturation`` 0.5,
                 (gray images: brightness only)          ``brightness`` 0.3, ``p`` 1
``brightness``   ``RandomBrightnessContrast``            ``brightness`` 0.2, ``contrast`` 0.2, ``p`` 0.5
``erase``        ``Erasing`` (rule above)                ``min_area`` 0.02, ``max_area`` 0.2,
                                                         ``aspect`` [0.3, 3.3], ``fill`` 0, ``p`` 0.5
================ ======================================= =========================================

``scale_crop`` zooms by a factor drawn from ``scale`` and cuts an output-sized window at a uniform
random place (zoom in), or pads the smaller image at a random place with ``fill`` (zoom out).
Chosen over ``RandomResizedCrop`` (zooms in only, so it never makes objects smaller, and changes
the aspect ratio), ``Affine(scale)`` (about the center only: corners are never the focus) and
``RandomSizedBBoxSafeCrop`` (never cuts a box, so the model never sees truncated objects, its
crop depends on the labels, and it cannot zoom out). Filled borders are constant: reflecting
would copy objects without boxes.

**The auto recipe** (``"auto"``, :data:`AUTO_RECIPE`), strengths after Ultralytics' defaults
(scale 0.5, translate 0.1, HSV hue 0.015) made a little gentler for small datasets: ``flip``
(p 0.5), ``scale_crop`` [0.5, 1.5], ``translate`` 0.1, ``color`` (hue 0.015, saturation 0.5,
brightness 0.3) and light ``erase`` (p 0.25, 2-10 % of the image).

**Determinism.** Each call draws a seed from the augmenter's seeded TF generator and the result
is a pure function of (example, seed); albumentations is reseeded per call (each transform with
its own derived seed) in a per-thread pipeline, so ``tf.data`` workers share no random state.
``aug.map(ds, num_parallel_calls)`` draws the seeds in element order before the parallel map, so
it gives the same outputs as calling ``aug`` eagerly on the same elements in order; a plain
``ds.map(aug)`` does too when sequential, while a parallel ``ds.map(aug, num_parallel_calls=k)``
hands the draws out in whatever order the workers run (same distribution, not reproducible).
"""

from __future__ import annotations

import difflib
import math
import threading
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from kvision.augment.albu import import_albumentations
from kvision.errors import InputTypeError, InputValueError

_EPS = 1e-6
_MAX_SEED = 2**31 - 1

AUTO_RECIPE: list[dict] = [
    {"name": "flip", "mode": "horizontal", "p": 0.5},
    {"name": "scale_crop", "scale": [0.5, 1.5], "fill": 0.5, "p": 1.0},
    {"name": "translate", "factor": 0.1, "fill": 0.5, "p": 1.0},
    {"name": "color", "hue": 0.015, "saturation": 0.5, "brightness": 0.3, "p": 1.0},
    {
        "name": "erase",
        "min_area": 0.02,
        "max_area": 0.1,
        "aspect": [0.3, 3.3],
        "fill": 0.0,
        "p": 0.25,
    },
]
"""The ``"auto"`` detection recipe, every option given (see the module docstring)."""


# -- transforms: named, validated options mapped to albumentations ---------------------------
class DetectionTransform:
    """Base class: a named detection transform with validated options.

    Subclasses set ``name`` and ``defaults`` (every allowed option), implement ``validate`` (raise
    through :meth:`error`) and ``make(A, shape, tracker)`` returning albumentations transforms
    for images of static ``shape`` ``(H, W, C)``.

    Args:
        **options: the transform's options (see ``defaults``).

    Raises:
        InputValueError: unknown option, or a value not allowed (naming both).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise InputValueError(
                f"Transform `{self.name}` got unknown option(s) {unknown}. "
                f"Allowed: {sorted(self.defaults)}."
            )
        merged = {**self.defaults, **options}
        self.validate(merged)
        self.options = {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}

    def validate(self, options: dict) -> None:
        """Raise :meth:`error` for a bad option value (override)."""

    def make(self, A, shape: tuple[int, int, int], tracker: _Tracker) -> list:
        """The albumentations transforms for images of ``shape`` (override)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """``{"name": ..., **options}`` with every option resolved."""
        return {"name": self.name, **self.options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    def error(self, option: str, value, allowed: str) -> InputValueError:
        """An error naming this transform, the option, the value and what is allowed."""
        return InputValueError(
            f"Transform `{self.name}`: `{option}` should be {allowed}. Received: {option}={value!r}"
        )

    def check_number(self, options: dict, key: str, low: float, high: float) -> float:
        value = options[key]
        if not _is_number(value) or not low <= value <= high:
            raise self.error(key, value, f"a number between {low} and {high}")
        return float(value)

    def check_pair(self, options: dict, key: str, low: float, high: float) -> tuple:
        """A ``[min, max]`` pair with ``low <= min <= max <= high``."""
        value = options[key]
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(_is_number(v) for v in value)
            or not low <= value[0] <= value[1] <= high
        ):
            raise self.error(key, value, f"a [min, max] pair with {low} <= min <= max <= {high}")
        return (float(value[0]), float(value[1]))

    def check_symmetric(self, options: dict, key: str, limit: float) -> tuple:
        """A number ``v`` in [0, limit] meaning ``[-v, v]``, or a ``[min, max]`` pair inside
        ``[-limit, limit]``; returned as the pair."""
        value = options[key]
        if isinstance(value, (list, tuple)):
            return self.check_pair(options, key, -limit, limit)
        if not _is_number(value) or not 0 <= value <= limit:
            raise self.error(
                key,
                value,
                f"a number between 0 and {limit} or a [min, max] pair in [-{limit}, {limit}]",
            )
        return (-float(value), float(value))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cv2():
    import cv2  # installed with albumentations

    return cv2


class Flip(DetectionTransform):
    """Mirror the image, boxes and masks: ``mode`` horizontal (default), vertical or both (each
    drawn with probability ``p``, default 0.5)."""

    name = "flip"
    defaults = {"mode": "horizontal", "p": 0.5}

    def validate(self, o):
        if o["mode"] not in ("horizontal", "vertical", "both"):
            raise self.error("mode", o["mode"], "one of ['horizontal', 'vertical', 'both']")
        self.check_number(o, "p", 0, 1)

    def make(self, A, shape, tracker):
        mode, p = self.options["mode"], self.options["p"]
        out = [A.HorizontalFlip(p=p)] if mode in ("horizontal", "both") else []
        return out + ([A.VerticalFlip(p=p)] if mode in ("vertical", "both") else [])


class ScaleCrop(DetectionTransform):
    """Zoom by a factor from ``scale`` ([min, max] in [0.1, 4], default [0.5, 1.5]) keeping the
    output size: a random window when zoomed in, padding with ``fill`` (in [0, 1], default 0.5)
    at a random place when zoomed out; with probability ``p`` (default 1)."""

    name = "scale_crop"
    defaults = {"scale": [0.5, 1.5], "fill": 0.5, "p": 1.0}

    def validate(self, o):
        self.check_pair(o, "scale", 0.1, 4.0)
        self.check_number(o, "fill", 0, 1)
        self.check_number(o, "p", 0, 1)

    def make(self, A, shape, tracker):
        cv2, (lo, hi), o = _cv2(), self.options["scale"], self.options
        return [
            A.Sequential(
                [
                    A.RandomScale(
                        scale_limit=(lo - 1.0, hi - 1.0),
                        interpolation=cv2.INTER_LINEAR,
                        mask_interpolation=cv2.INTER_NEAREST,
                        area_for_downscale="image",
                        p=1.0,
                    ),
                    A.RandomCrop(
                        height=shape[0],
                        width=shape[1],
                        pad_if_needed=True,
                        pad_position="random",
                        border_mode=cv2.BORDER_CONSTANT,
                        fill=float(o["fill"]),
                        fill_mask=0,
                        p=1.0,
                    ),
                ],
                p=o["p"],
            )
        ]


class Translate(DetectionTransform):
    """Shift each axis independently by a fraction of the image size (whole pixels): ``factor``
    ``f`` in [0, 1] draws from ``[-f, f]`` (default 0.1), a pair ``[min, max]`` from that range;
    new pixels get ``fill`` (default 0.5); with probability ``p`` (default 1)."""

    name = "translate"
    defaults = {"factor": 0.1, "fill": 0.5, "p": 1.0}

    def validate(self, o):
        self.check_symmetric(o, "factor", 1.0)
        self.check_number(o, "fill", 0, 1)
        self.check_number(o, "p", 0, 1)

    def make(self, A, shape, tracker):
        cv2, o = _cv2(), self.options
        pair = self.check_symmetric(o, "factor", 1.0)
        return [
            A.Affine(
                translate_percent={"x": pair, "y": pair},
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=float(o["fill"]),
                fill_mask=0,
                p=o["p"],
            )
        ]


class Color(DetectionTransform):
    """Colour jitter (``A.ColorJitter``): hue shift up to ``hue`` of a full turn (in [0, 0.5],
    default 0.015), saturation and brightness factors in ``[1 - v, 1 + v]`` (``saturation``
    default 0.5, ``brightness`` default 0.3, each in [0, 1]); grayscale images get the brightness
    factor only; with probability ``p`` (default 1)."""

    name = "color"
    defaults = {"hue": 0.015, "saturation": 0.5, "brightness": 0.3, "p": 1.0}

    def validate(self, o):
        self.check_number(o, "hue", 0, 0.5)
        self.check_number(o, "saturation", 0, 1)
        self.check_number(o, "brightness", 0, 1)
        self.check_number(o, "p", 0, 1)

    def make(self, A, shape, tracker):
        o, rgb = self.options, shape[2] == 3
        return [
            A.ColorJitter(
                brightness=float(o["brightness"]),
                contrast=0.0,
                saturation=float(o["saturation"]) if rgb else 0.0,
                hue=float(o["hue"]) if rgb else 0.0,
                p=o["p"],
            )
        ]


class Brightness(DetectionTransform):
    """Brightness shift and contrast change (``A.RandomBrightnessContrast``): ``brightness`` and
    ``contrast`` are ``v`` in [0, 1] (drawn from ``[-v, v]``) or a ``[min, max]`` pair in
    [-1, 1] (defaults 0.2 and 0.2); with probability ``p`` (default 0.5)."""

    name = "brightness"
    defaults = {"brightness": 0.2, "contrast": 0.2, "p": 0.5}

    def validate(self, o):
        self.check_symmetric(o, "brightness", 1.0)
        self.check_symmetric(o, "contrast", 1.0)
        self.check_number(o, "p", 0, 1)

    def make(self, A, shape, tracker):
        o = self.options
        return [
            A.RandomBrightnessContrast(
                brightness_limit=self.check_symmetric(o, "brightness", 1.0),
                contrast_limit=self.check_symmetric(o, "contrast", 1.0),
                p=o["p"],
            )
        ]


class Erase(DetectionTransform):
    """Random erasing, one rectangle (``A.Erasing``) of ``min_area`` to ``max_area`` of the image
    (in (0, 1], defaults 0.02 and 0.2), aspect ratio in ``aspect`` (default [0.3, 3.3]), filled
    with ``fill`` (in [0, 1], default 0, or ``"random"``: one random colour); with probability
    ``p`` (default 0.5). Boxes and masks are kept; see the module docstring for the rule."""

    name = "erase"
    defaults = {"min_area": 0.02, "max_area": 0.2, "aspect": [0.3, 3.3], "fill": 0.0, "p": 0.5}

    def validate(self, o):
        for key in ("min_area", "max_area"):
            value = o[key]
            if not _is_number(value) or not 0 < value <= 1:
                raise self.error(key, value, "a number in (0, 1]")
        if o["min_area"] > o["max_area"]:
            raise self.error("min_area", o["min_area"], f"at most max_area ({o['max_area']})")
        if self.check_pair(o, "aspect", 0.01, 100.0)[0] <= 0:
            raise self.error("aspect", o["aspect"], "a [min, max] pair with 0 < min <= max")
        if o["fill"] != "random":
            value = o["fill"]
            if not _is_number(value) or not 0 <= value <= 1:
                raise self.error("fill", value, 'a number between 0 and 1 or "random"')
        self.check_number(o, "p", 0, 1)

    def make(self, A, shape, tracker):
        o = self.options
        fill = "random_uniform" if o["fill"] == "random" else float(o["fill"])
        erasing = _occluding_erasing(A)(
            scale=(float(o["min_area"]), float(o["max_area"])),
            ratio=tuple(float(v) for v in o["aspect"]),
            fill=fill,
            p=o["p"],
        )
        erasing.tracker = tracker
        return [erasing]


_TRANSFORMS: dict[str, type[DetectionTransform]] = {
    cls.name: cls for cls in (Flip, ScaleCrop, Translate, Color, Brightness, Erase)
}
_ERASING_CLASS: list = []


def _occluding_erasing(A):
    """``A.Erasing`` whose boxes follow the erase rule: kept unchanged, their erased part counted
    against visibility (albumentations would shrink them to the unerased part)."""
    if not _ERASING_CLASS:

        class OccludingErasing(A.Erasing):
            tracker: _Tracker | None = None

            def apply_to_bboxes(self, bboxes, holes, **params):
                if holes.size == 0 or len(bboxes) == 0:
                    return bboxes
                height, width = params["shape"][:2]
                erased = np.zeros((height, width))
                for x0, y0, x1, y1 in np.asarray(holes, dtype=np.int64)[:, :4]:
                    erased[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1.0
                covered = _covered_fraction(bboxes[:, :4] * [width, height, width, height], erased)
                return self.tracker.occlude(bboxes, 1.0 - covered)

        _ERASING_CLASS.append(OccludingErasing)
    return _ERASING_CLASS[0]


def _covered_fraction(boxes_px: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Fraction of each box's area (pixel units, edges at integers) on pixels marked in
    ``covered`` ``[H, W]``, each pixel weighted by the part of it inside the box."""
    height, width = covered.shape
    x0, y0, x1, y1 = (boxes_px[:, i : i + 1] for i in range(4))
    cols, rows = np.arange(width), np.arange(height)
    wx = np.clip(np.minimum(cols + 1, x1) - np.maximum(cols, x0), 0, None)
    wy = np.clip(np.minimum(rows + 1, y1) - np.maximum(rows, y0), 0, None)
    area = np.maximum((x1 - x0) * (y1 - y0), 1e-12)[:, 0]
    return np.einsum("nh,hw,nw->n", wy, covered, wx) / area


# -- the per-thread albumentations pipeline ----------------------------------------------------
class _Tracker:
    """Per-call visibility of each input box (by index), updated after every transform."""

    def __init__(self, min_visibility: float):
        self.min_visibility = min_visibility
        self.visibility = np.ones(0)

    def filter(self, data: np.ndarray, shape: dict) -> np.ndarray:
        """Replaces albumentations' per-step box filter: clip, multiply visibility, drop."""
        if len(data) == 0:
            return data
        clipped = np.array(data, dtype=np.float64)
        clipped[:, :4] = np.clip(clipped[:, :4], 0.0, 1.0)
        area = _area(data)
        kept_area = _area(clipped)
        ratio = np.where(area > 0, kept_area / np.maximum(area, 1e-12), 0.0)
        return self._update(clipped, ratio, kept_area > 0)

    def occlude(self, data: np.ndarray, visible: np.ndarray) -> np.ndarray:
        return self._update(data, visible, np.ones(len(data), dtype=bool))

    def _update(self, data, ratio, keep):
        index = data[:, 4].astype(np.int64)
        self.visibility[index] *= ratio
        keep = keep & (self.visibility[index] >= self.min_visibility - _EPS)
        return data[keep]


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


class _Pipeline:
    """One ``A.Compose`` for one image shape, owned by one thread."""

    def __init__(self, transforms, shape, min_visibility: float):
        A = import_albumentations()
        self.tracker = _Tracker(min_visibility)
        parts = [part for t in transforms for part in t.make(A, shape, self.tracker)]
        self.compose = A.Compose(
            parts,
            bbox_params=A.BboxParams(
                format="albumentations",
                label_fields=["index"],
                min_visibility=min_visibility,
                clip=True,
            ),
            seed=0,
        )
        # The visibility rule is over all steps (see the module docstring), so the per-step
        # filter albumentations runs after every transform is replaced by the tracker's.
        self.compose.processors["bboxes"].filter = self.tracker.filter
        self.nodes = _nodes(self.compose.transforms, A.BaseCompose)

    def __call__(self, image, boxes, masks, seed: int):
        n = len(boxes)
        self.tracker.visibility = np.ones(n)
        self.compose.set_random_seed(seed)
        # set_random_seed gives every transform the same seed (the same draws): give each its own
        for node, s in zip(
            self.nodes, np.random.default_rng(seed).integers(0, _MAX_SEED, len(self.nodes))
        ):
            node.set_random_seed(int(s))
        data = {"image": image, "bboxes": boxes, "index": np.arange(n)}
        if masks is not None and n:
            data["masks"] = masks
        out = self.compose(**data)
        index = np.asarray(out["index"], dtype=np.int64).reshape(-1)
        return (
            out["image"],
            np.asarray(out["bboxes"], np.float64).reshape(-1, 4),
            index,
            out.get("masks"),
        )


def _nodes(transforms, compose_type) -> list:
    out = []
    for t in transforms:
        out.append(t)
        if isinstance(t, compose_type):
            out.extend(_nodes(t.transforms, compose_type))
    return out


# -- the augmenter ---------------------------------------------------------------------------
class DetectionAugmenter:
    """Applies detection transforms to one example; built by :func:`build_detection_augmenter`.

    Call it as ``aug(image, boxes, classes)`` or ``aug(image, boxes, classes, masks)``:

    * ``image``: float32 ``[H, W, C]`` in [0, 1], static H, W and C (1 or 3);
    * ``boxes``: float32 ``[N, 4]`` normalized ``[x_min, y_min, x_max, y_max]``, clipped to
      [0, 1] first; each must keep ``x_min < x_max`` and ``y_min < y_max``;
    * ``classes``: int32 ``[N]``; ``masks``: uint8 ``[N, H, W]`` (optional).

    Returns the same structure: the augmented image (same static shape, in [0, 1]) and the
    ``N' <= N`` surviving objects in input order, boxes float32 ``[N', 4]``, classes int32
    ``[N']``, masks uint8 ``[N', H, W]``. Each call draws a new seed from the augmenter's
    generator; :meth:`map` is the reproducible way to run it in a parallel ``tf.data`` map.

    Args:
        transforms: built :class:`DetectionTransform` objects, applied in order.
        seed: seed of the per-call draws (default 0).
        min_visibility: drop an object when less than this fraction of its box stays visible
            (default 0.3).
        min_size_px: drop an object whose final box is narrower or shorter than this, in pixels
            (default 2).

    Raises:
        InputValueError / InputTypeError: at trace time, for a bad dtype, rank or static shape.
        tf.errors.InvalidArgumentError: at run time, carrying the ``InputValueError`` message,
            for a box that is not finite or empty after clipping, lengths that differ, masks of
            another size or image values outside [0, 1].

    Example:
        >>> aug = build_detection_augmenter(["flip", "translate"], seed=0)
        >>> image, boxes, classes = aug(tf.zeros((32, 32, 3)), [[0.1, 0.1, 0.5, 0.5]], [2])
        >>> image.shape, boxes.shape[1]
        (TensorShape([32, 32, 3]), 4)
    """

    def __init__(
        self,
        transforms: list[DetectionTransform],
        seed: int = 0,
        *,
        min_visibility: float = 0.3,
        min_size_px: float = 2,
    ):
        self.transforms = list(transforms)
        self.seed = seed
        self.min_visibility = float(min_visibility)
        self.min_size_px = float(min_size_px)
        with tf.init_scope():  # the state variable must live outside any tf.function / tf.data
            self._generator = tf.random.Generator.from_seed(seed)
        self._local = threading.local()

    def __call__(self, image, boxes, classes, masks=None):
        return self.apply(image, boxes, classes, masks, seed=self.draw_seed())

    def draw_seed(self) -> tf.Tensor:
        """The next per-example seed from the augmenter's generator (int64 scalar)."""
        return self._generator.uniform([], minval=0, maxval=_MAX_SEED, dtype=tf.int64)

    def apply(self, image, boxes, classes, masks=None, *, seed):
        """Augment one example with the given ``seed`` (an integer or int64 scalar tensor): a pure
        function of its inputs. Same arguments and results as calling the augmenter."""
        image = tf.convert_to_tensor(image)
        boxes = tf.convert_to_tensor(boxes, dtype_hint=tf.float32)
        classes = tf.convert_to_tensor(classes, dtype_hint=tf.int32)
        tensors = [image, boxes, classes, tf.cast(seed, tf.int64)]
        if masks is not None:
            tensors.append(tf.convert_to_tensor(masks, dtype_hint=tf.uint8))
        _check_static(*tensors[:3], tensors[4] if masks is not None else None)
        dtypes = [tf.float32, tf.float32, tf.int32] + ([tf.uint8] if masks is not None else [])
        out = tf.numpy_function(
            self._run, tensors, dtypes, stateful=False, name="detection_augment"
        )
        height, width, _ = image.shape
        out[0].set_shape(image.shape)
        out[1].set_shape([None, 4])
        out[2].set_shape([None])
        if masks is not None:
            out[3].set_shape([None, height, width])
        return tuple(out)

    def map(self, dataset: tf.data.Dataset, num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
        """``dataset.map`` of this augmenter, reproducible with parallel calls.

        The seeds are drawn in element order by a sequential map, then the examples are
        augmented by a parallel, order-keeping map: the outputs equal calling the augmenter on
        the elements in order, eagerly, from the same seed.

        Args:
            dataset: elements ``(image, boxes, classes)`` or ``(image, boxes, classes, masks)``.
            num_parallel_calls: as for ``tf.data.Dataset.map`` (default ``AUTOTUNE``).

        Returns:
            The augmented ``tf.data.Dataset`` with the same element structure.
        """
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (3, 4):
            raise InputValueError(
                "`dataset` elements should be (image, boxes, classes) or (image, boxes, classes, "
                f"masks). Received: element_spec={spec!r}"
            )
        seeded = dataset.map(lambda *example: (example, self.draw_seed()))
        return seeded.map(
            lambda example, seed: self.apply(*example, seed=seed),
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )

    def to_config(self) -> list[dict]:
        """The resolved specs, every option included; ``build_detection_augmenter`` accepts them."""
        return [t.get_config() for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return (
            f"DetectionAugmenter({self.transforms!r}, seed={self.seed}, "
            f"min_visibility={self.min_visibility}, min_size_px={self.min_size_px})"
        )

    def _run(self, image, boxes, classes, seed, masks=None):
        _check_example(image, boxes, classes, masks)
        height, width, channels = image.shape
        pipelines = self._local.__dict__.setdefault("pipelines", {})
        key = (height, width, channels)
        if key not in pipelines:
            pipelines[key] = _Pipeline(self.transforms, key, self.min_visibility)
        out_image, out_boxes, index, out_masks = pipelines[key](
            np.array(image, dtype=np.float32),  # copies: the inputs are read-only
            np.clip(np.array(boxes, dtype=np.float64), 0.0, 1.0),
            None if masks is None else np.array(masks, dtype=np.uint8),
            int(seed),
        )
        size = (out_boxes[:, 2:] - out_boxes[:, :2]) * [width, height]
        keep = np.all(size >= self.min_size_px - _EPS, axis=1)
        order = np.argsort(index[keep], kind="stable")
        index, out_boxes = index[keep][order], out_boxes[keep][order]
        # albumentations may drop the channel axis of grayscale images: reshape restores it
        out_image = np.clip(np.reshape(out_image, image.shape), 0.0, 1.0).astype(np.float32)
        result = [
            out_image,
            out_boxes.astype(np.float32),
            np.asarray(classes)[index].astype(np.int32),
        ]
        if masks is not None:
            kept = out_masks[index] if len(index) else np.zeros((0, height, width))
            result.append(np.asarray(kept, dtype=np.uint8).reshape(-1, height, width))
        return result


def _check_static(image, boxes, classes, masks) -> None:
    shape = image.shape
    if image.dtype != tf.float32 or shape.rank != 3 or None in shape or shape[-1] not in (1, 3):
        raise InputValueError(
            "`image` should be float32 with the static shape (H, W, C), C = 1 or 3. "
            f"Received: image.dtype={image.dtype.name}, image.shape={shape}"
        )
    if boxes.dtype != tf.float32 or boxes.shape.rank != 2 or boxes.shape[-1] != 4:
        raise InputValueError(
            "`boxes` should be float32 [N, 4] normalized xyxy. "
            f"Received: boxes.dtype={boxes.dtype.name}, boxes.shape={boxes.shape}"
        )
    if classes.dtype != tf.int32 or classes.shape.rank != 1:
        raise InputTypeError(
            "`classes` should be int32 [N]. "
            f"Received: classes.dtype={classes.dtype.name}, classes.shape={classes.shape}"
        )
    if masks is not None and (
        masks.dtype != tf.uint8
        or masks.shape.rank != 3
        or not masks.shape[1:].is_compatible_with(shape[:2])
    ):
        raise InputValueError(
            f"`masks` should be uint8 [N, H, W] with the image's H, W = {shape[:2]}. "
            f"Received: masks.dtype={masks.dtype.name}, masks.shape={masks.shape}"
        )


def _check_example(image, boxes, classes, masks) -> None:
    n = len(boxes)
    if len(classes) != n or (masks is not None and masks.shape != (n, *image.shape[:2])):
        raise InputValueError(
            "`boxes`, `classes` and `masks` should describe the same N objects, masks the "
            f"image's size. Received: boxes {boxes.shape}, classes {classes.shape}, "
            f"masks {None if masks is None else masks.shape}, image {image.shape}"
        )
    if image.size and not (image.min() >= -_EPS and image.max() <= 1 + _EPS):
        raise InputValueError(
            "`image` values should be in [0, 1]. "
            f"Received: min={image.min():.4g}, max={image.max():.4g}"
        )
    clipped = np.clip(boxes, 0.0, 1.0)
    bad = ~np.isfinite(boxes).all(axis=1) | np.any(clipped[:, 2:] <= clipped[:, :2], axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputValueError(
            f"`boxes[{i}]` should be finite with x_min < x_max and y_min < y_max inside the "
            f"image (normalized [0, 1]). Received: boxes[{i}]={boxes[i].tolist()}"
        )


def build_detection_augmenter(
    specs: list[str | dict] | str = "auto",
    seed: int = 0,
    *,
    min_visibility: float = 0.3,
    min_size_px: float = 2,
) -> DetectionAugmenter:
    """Build a :class:`DetectionAugmenter` from transform specs.

    Args:
        specs: ``"auto"`` (default: :data:`AUTO_RECIPE`) or a list of transform names
            (``"flip"``) or dicts with a ``name`` key and options
            (``{"name": "erase", "p": 0.25}``): ``flip``, ``scale_crop``, ``translate``,
            ``color``, ``brightness``, ``erase`` (see the module docstring). An empty list only
            clips boxes and checks the example.
        seed: non-negative integer seed of the per-example draws (default 0).
        min_visibility: fraction in [0, 1] of a box that must stay visible (inside the image,
            not erased) for the object to be kept (default 0.3).
        min_size_px: smallest width and height in pixels of a kept box, >= 0 (default 2).

    Returns:
        A :class:`DetectionAugmenter`; its ``to_config()`` gives the resolved specs back.

    Raises:
        InputValueError: unknown transform (with a "did you mean"), unknown option or bad value
            (naming the transform, the option and the value), bad seed or thresholds.

    Example:
        >>> aug = build_detection_augmenter("auto", seed=1)
        >>> [c["name"] for c in aug.to_config()]
        ['flip', 'scale_crop', 'translate', 'color', 'erase']
    """
    if isinstance(specs, str) and specs == "auto":
        specs = AUTO_RECIPE
    if not isinstance(specs, (list, tuple)):
        raise InputValueError(
            '`specs` should be "auto" or a list of transform names or dicts. '
            f"Received: specs={specs!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputValueError(f"`seed` should be a non-negative integer. Received: seed={seed!r}")
    if not _is_number(min_visibility) or not 0 <= min_visibility <= 1:
        raise InputValueError(
            "`min_visibility` should be a number between 0 and 1. "
            f"Received: min_visibility={min_visibility!r}"
        )
    if not _is_number(min_size_px) or min_size_px < 0:
        raise InputValueError(
            f"`min_size_px` should be a number >= 0. Received: min_size_px={min_size_px!r}"
        )
    transforms = [_build_transform(spec, i) for i, spec in enumerate(specs)]
    return DetectionAugmenter(
        transforms, int(seed), min_visibility=min_visibility, min_size_px=min_size_px
    )


def _build_transform(spec, index: int) -> DetectionTransform:
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
        options = dict(spec)
        name = options.pop("name")
    else:
        raise InputValueError(
            f"`specs[{index}]` should be a transform name or a dict with a `name` key. "
            f"Received: {spec!r}"
        )
    if name not in _TRANSFORMS:
        close = difflib.get_close_matches(name, list(_TRANSFORMS), n=1, cutoff=0.5)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise InputValueError(
            f"Unknown detection transform `{name}`.{hint} Available: {', '.join(_TRANSFORMS)}."
        )
    return _TRANSFORMS[name](**options)
