"""Box- and mask-aware augmentation for detection in ``tf.data``, through albumentations 2.x.

    aug = build_detection_augmenter("auto", seed=0)
    ds = aug.map(ds)  # parallel and reproducible: (image, boxes, classes[, masks]) per example
    image, boxes, classes = aug(image, boxes, classes)  # eagerly, or in ds.map(aug)

One example per call, not a batch (the number of boxes varies): ``image`` float32 ``[H, W, C]``
in [0, 1] (C = 1 or 3), ``boxes`` float32 ``[N, 4]`` normalized ``[x_min, y_min, x_max, y_max]``
of the (already resized) image, ``classes`` int32 ``[N]``, optionally ``masks`` uint8
``[N, H, W]``. The same structure comes back, same static shapes: the image in [0, 1] and the
``N' <= N`` surviving objects in input order.

**Boxes.** Geometric transforms move box corners exactly and masks by nearest-neighbour
resampling; new pixels get a constant ``fill`` (reflecting would copy objects without boxes).
After every transform boxes are clipped to the image. An object is dropped, with its class and
mask, when less than ``min_visibility`` of its box is visible (the clipped box's area over the
area the box would have after all the transforms so far without clipping, so two cuts of 25 %
leave 56 %, times the part not under an erased patch) or when its box is narrower or shorter
than ``min_size_px`` pixels. With masks, a clipped box becomes the box of what is left of its
object (an edge moves to the mask's where the mask ends more than 0.5 px inside it: a clipped
blob's box is not its clipped box), and an object with no mask pixel left is dropped.

**Erasing** keeps a box under an erased patch, unchanged, and its mask: the object is still
there, occluded (as in Random Erasing, Zhong et al. 2020). Its erased part counts as not
visible, so a box hidden beyond ``1 - min_visibility`` is dropped, the image border's rule
(YOLOv5's cutout likewise drops labels more than 60 % obscured).

**The auto recipe** (``"auto"``, :data:`AUTO_RECIPE`) follows Ultralytics' defaults (scale 0.5,
translate 0.1, hue 0.015), gentler in colour: ``flip`` (p 0.5), ``scale_crop`` [0.5, 1.5],
``translate`` 0.1, ``color`` (hue 0.015, saturation 0.5, brightness 0.3), light ``erase`` (p
0.25, 2-10 % of the image).

**Determinism.** Each call draws a seed from the augmenter's seeded TF generator, and the output
is a pure function of (example, seed): albumentations is reseeded per call, each transform with
its own seed, in a per-thread pipeline. ``aug.map(ds)`` draws the seeds in element order before
its parallel map, so it equals calling ``aug`` eagerly on the elements in order, as does a
sequential ``ds.map(aug)``; a parallel ``ds.map(aug, num_parallel_calls=k)`` hands the draws
out in the order its workers run.
"""

from __future__ import annotations

import difflib
import threading
import warnings

import numpy as np
import tensorflow as tf

from kvision.augment.albu import import_albumentations
from kvision.errors import InputTypeError, InputValueError
from kvision.tasks.detection.box_transforms import (
    _TRANSFORMS,
    Brightness,
    Color,
    DetectionTransform,
    Erase,
    Flip,
    ScaleCrop,
    Translate,
    _is_number,
)

__all__ = [
    "AUTO_RECIPE",
    "Brightness",
    "Color",
    "DetectionAugmenter",
    "DetectionTransform",
    "Erase",
    "Flip",
    "ScaleCrop",
    "Translate",
    "build_detection_augmenter",
]

_EPS = 1e-6
_MAX_SEED = 2**31 - 1

AUTO_RECIPE: list[dict] = [
    dict(name="flip", mode="horizontal", p=0.5),
    dict(name="scale_crop", scale=[0.5, 1.5], fill=0.5, p=1.0),
    dict(name="translate", factor=0.1, fill=0.5, p=1.0),
    dict(name="color", hue=0.015, saturation=0.5, brightness=0.3, p=1.0),
    dict(name="erase", min_area=0.02, max_area=0.1, aspect=[0.3, 3.3], fill=0.0, p=0.25),
]
"""The ``"auto"`` detection recipe, every option given (see the module docstring)."""


# -- the per-thread albumentations pipeline and the box rule --------------------------------
class _Tracker:
    """Per call: the visible fraction of each input box (by index) and whether it was clipped,
    updated after every transform."""

    def __init__(self, min_visibility: float):
        self.min_visibility = min_visibility
        self.reset(0)

    def reset(self, n: int) -> None:
        self.visibility, self.clipped = np.ones(n), np.zeros(n, dtype=bool)

    def filter(self, data: np.ndarray, shape: dict) -> np.ndarray:
        """Replaces albumentations' per-step box filter: clip, update visibility, drop."""
        if len(data) == 0:
            return data
        clipped = np.array(data, dtype=np.float64)
        clipped[:, :4] = np.clip(clipped[:, :4], 0.0, 1.0)
        area, kept_area = _area(data), _area(clipped)
        ratio = np.where(area > 0, kept_area / np.maximum(area, 1e-12), 0.0)
        self.clipped[data[:, 4].astype(np.int64)] |= ratio < 1 - _EPS
        return self.occlude(clipped, ratio, kept_area > 0)

    def occlude(self, data: np.ndarray, visible: np.ndarray, keep=True) -> np.ndarray:
        index = data[:, 4].astype(np.int64)
        self.visibility[index] *= visible
        return data[keep & (self.visibility[index] >= self.min_visibility - _EPS)]


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


class _Pipeline:
    """One ``A.Compose`` for one image shape, used by one thread."""

    def __init__(self, transforms, shape, min_visibility: float):
        A = import_albumentations()
        self.tracker = _Tracker(min_visibility)
        parts = [part for t in transforms for part in t.make(A, shape, self.tracker)]
        params = dict(format="albumentations", label_fields=["index"], clip=True)
        params = A.BboxParams(**params, min_visibility=min_visibility)
        with warnings.catch_warnings():  # boxes are clipped and checked even with no geometry
            warnings.filterwarnings("ignore", "Got processor for bboxes", UserWarning)
            self.compose = A.Compose(parts, bbox_params=params, seed=0)
        # The visibility rule is over all steps (module docstring): the tracker replaces the
        # filter albumentations runs after every transform.
        self.compose.processors["bboxes"].filter = self.tracker.filter
        self.nodes = _nodes(self.compose.transforms, A.BaseCompose)

    def __call__(self, image, boxes, masks, seed: int) -> tuple:
        """``(image, boxes, index, clipped, masks)``: the kept boxes with their input indices,
        in input order, whether each was clipped, and all the masks (``None`` without)."""
        self.tracker.reset(len(boxes))
        self.compose.set_random_seed(seed)
        # set_random_seed gives every transform the same seed (the same draws): give each its own
        seeds = np.random.default_rng(seed).integers(0, _MAX_SEED, len(self.nodes))
        for node, node_seed in zip(self.nodes, seeds, strict=True):
            node.set_random_seed(int(node_seed))
        data = {"image": image, "bboxes": boxes, "index": np.arange(len(boxes))}
        if masks is not None and len(boxes):
            data["masks"] = masks
        out = self.compose(**data)
        index = np.asarray(out["index"], dtype=np.int64).reshape(-1)
        order = np.argsort(index, kind="stable")
        boxes, index = np.asarray(out["bboxes"], np.float64).reshape(-1, 4)[order], index[order]
        return out["image"], boxes, index, self.tracker.clipped[index], out.get("masks")


def _nodes(transforms, compose_type) -> list:
    out = []
    for t in transforms:
        out += [t, *(_nodes(t.transforms, compose_type) if isinstance(t, compose_type) else [])]
    return out


def _fit_to_masks(boxes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[K, 4]`` (normalized) with each edge moved to its mask's ``[K, H, W]`` where the
    mask ends more than 0.5 px inside it, and whether each mask has a pixel."""
    height, width = masks.shape[1:]
    cols, rows = masks.any(axis=1), masks.any(axis=2)
    x0, x1 = np.argmax(cols, axis=1), width - np.argmax(cols[:, ::-1], axis=1)
    y0, y1 = np.argmax(rows, axis=1), height - np.argmax(rows[:, ::-1], axis=1)
    scale = np.array([width, height, width, height], np.float64)
    tight = np.stack([x0, y0, x1, y1], axis=1) / scale
    found = cols.any(axis=1)
    inside = ((tight - boxes) * scale * [1, 1, -1, -1] > 0.5) & found[:, None]
    return np.where(inside, tight, boxes), found


# -- the augmenter ---------------------------------------------------------------------------
class DetectionAugmenter:
    """Augments one detection example; built by :func:`build_detection_augmenter`.

    Called as ``aug(image, boxes, classes)`` or ``aug(image, boxes, classes, masks)`` on one
    example (shapes, dtypes and rules in the module docstring; boxes are clipped to [0, 1]
    first and must then have ``x_min < x_max`` and ``y_min < y_max``); returns the same
    structure. Each call draws a new seed from the augmenter's generator; :meth:`map` is the
    reproducible way to run it in a parallel ``tf.data`` map.

    Args:
        transforms: built :class:`DetectionTransform` objects, applied in order.
        seed: seed of the per-call draws (default 0).
        min_visibility: keep an object while at least this fraction of its box is visible
            (default 0.3).
        min_size_px: drop an object whose box is narrower or shorter than this, in pixels
            (default 2).

    Raises:
        InputValueError, InputTypeError: when traced, for a dtype, rank or static shape; when
            run, for a box not finite or empty after clipping, lengths that differ or image
            values outside [0, 1] (inside ``tf.data``: ``tf.errors.InvalidArgumentError``
            with the same message).

    Example:
        >>> aug = build_detection_augmenter(["flip", "translate"], seed=0)
        >>> image, boxes, classes = aug(tf.zeros((32, 32, 3)), [[0.1, 0.1, 0.5, 0.5]], [2])
        >>> image.shape, boxes.shape[1]
        (TensorShape([32, 32, 3]), 4)
    """

    def __init__(self, transforms, seed: int = 0, *, min_visibility=0.3, min_size_px=2):
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
        """Augment one example with ``seed`` (int or int64 scalar tensor): a pure function of
        its inputs; otherwise as calling the augmenter. NumPy inputs are cast to the dtypes."""
        image = tf.convert_to_tensor(image)
        tensors = [
            image,
            tf.convert_to_tensor(boxes, dtype_hint=tf.float32),
            tf.convert_to_tensor(classes, dtype_hint=tf.int32),
            tf.cast(seed, tf.int64),
        ]
        if masks is not None:
            tensors.append(tf.convert_to_tensor(masks, dtype_hint=tf.uint8))
        _check_static(*tensors[:3], None if masks is None else tensors[4])
        dtypes = [tf.float32, tf.float32, tf.int32] + ([tf.uint8] if masks is not None else [])
        out = tf.numpy_function(self._run, tensors, dtypes, stateful=False, name="detection_aug")
        shapes = [image.shape, [None, 4], [None], [None, *image.shape[:2]]]
        for tensor, shape in zip(out, shapes, strict=False):
            tensor.set_shape(shape)
        return tuple(out)

    def map(self, dataset: tf.data.Dataset, num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
        """``dataset.map`` of this augmenter, reproducible with parallel calls: a sequential map
        draws the seeds in element order, then a parallel order-keeping map augments, so the
        outputs equal calling the augmenter on the elements in order, from the same seed.

        Args:
            dataset: elements ``(image, boxes, classes)`` or ``(image, boxes, classes, masks)``.
            num_parallel_calls: as for ``tf.data.Dataset.map`` (default ``AUTOTUNE``).

        Returns:
            The augmented ``tf.data.Dataset``, same element structure.
        """
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (3, 4):
            raise InputValueError(
                "`dataset` elements should be (image, boxes, classes[, masks]). "
                f"Received: element_spec={spec!r}"
            )
        seeded = dataset.map(lambda *example: (example, self.draw_seed()))
        return seeded.map(
            lambda example, seed: self.apply(*example, seed=seed),
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )

    def to_config(self) -> list[dict]:
        """The resolved specs, every option included; ``build_detection_augmenter`` takes them."""
        return [t.get_config() for t in self.transforms]

    def __repr__(self) -> str:
        return (
            f"DetectionAugmenter({self.transforms!r}, seed={self.seed}, "
            f"min_visibility={self.min_visibility}, min_size_px={self.min_size_px})"
        )

    def _run(self, image, boxes, classes, seed, masks=None):
        _check_example(image, boxes, classes, masks)
        height, width = image.shape[:2]
        pipelines = self._local.__dict__.setdefault("pipelines", {})
        if image.shape not in pipelines:
            pipelines[image.shape] = _Pipeline(self.transforms, image.shape, self.min_visibility)
        out_image, out_boxes, index, clipped, out_masks = pipelines[image.shape](
            np.array(image, dtype=np.float32),  # copies: the inputs are read-only
            np.clip(np.array(boxes, dtype=np.float64), 0.0, 1.0),
            None if masks is None else np.array(masks, dtype=np.uint8),
            int(seed),
        )
        keep = np.ones(len(index), dtype=bool)
        if masks is not None and len(index):
            out_masks = out_masks[index]
            # an object whose input mask is empty: its mask says nothing about it
            had = masks.reshape(len(masks), -1).any(axis=1)[index]
            fitted, found = _fit_to_masks(out_boxes, out_masks)
            out_boxes = np.where((clipped & had)[:, None], fitted, out_boxes)
            keep &= found | ~had
        keep &= np.all(
            (out_boxes[:, 2:] - out_boxes[:, :2]) * [width, height] >= self.min_size_px - _EPS,
            axis=1,
        )
        index = index[keep]
        # albumentations may drop the channel axis of grayscale images: reshape restores it
        out_image = np.clip(np.reshape(out_image, image.shape), 0.0, 1.0).astype(np.float32)
        result = [out_image, out_boxes[keep].astype(np.float32), classes[index].astype(np.int32)]
        if masks is not None:
            kept = out_masks[keep] if len(index) else np.zeros((0, height, width))
            result.append(np.asarray(kept, dtype=np.uint8).reshape(-1, height, width))
        return result


def _check_static(image, boxes, classes, masks) -> None:
    shape = image.shape
    if image.dtype != tf.float32 or shape.rank != 3 or None in shape or shape[-1] not in (1, 3):
        raise InputValueError(
            "`image` should be float32 with the static shape (H, W, C), C = 1 or 3. "
            f"Received: image.dtype={image.dtype.name}, image.shape={shape}"
        )
    for name, tensor, dtype, want in (
        ("boxes", boxes, tf.float32, [None, 4]),
        ("classes", classes, tf.int32, [None]),
        ("masks", masks, tf.uint8, [None, *shape[:2]]),
    ):
        if tensor is not None and (
            tensor.dtype != dtype or not tensor.shape.is_compatible_with(want)
        ):
            error = InputTypeError if tensor.dtype != dtype else InputValueError
            raise error(
                f"`{name}` should be {dtype.name} {want} (None: any). "
                f"Received: {name}.dtype={tensor.dtype.name}, {name}.shape={tensor.shape}"
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
            f"`image` values should be in [0, 1]. Received: min={image.min():.4g}, "
            f"max={image.max():.4g}"
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
        specs: ``"auto"`` (default; :data:`AUTO_RECIPE`) or a list of transform names
            (``"flip"``) or dicts with a ``name`` and options (``{"name": "erase", "p": 0.25}``):
            ``flip``, ``scale_crop``, ``translate``, ``color``, ``brightness``, ``erase``. An
            empty list only clips and checks.
        seed: non-negative integer seed of the per-example draws (default 0).
        min_visibility: fraction in [0, 1] of its box that must stay visible (inside the image,
            not erased) for an object to be kept (default 0.3).
        min_size_px: smallest width and height of a kept box in pixels, >= 0 (default 2).

    Returns:
        A :class:`DetectionAugmenter`; its ``to_config()`` gives the resolved specs back.

    Raises:
        InputValueError: unknown transform (with a "did you mean"), unknown option or bad value
            (naming the transform, the option and the value), bad seed or threshold.

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
    for name, value, ok, allowed in (
        ("seed", seed, isinstance(seed, (int, np.integer)) and seed >= 0, "an integer >= 0"),
        (
            "min_visibility",
            min_visibility,
            _is_number(min_visibility) and 0 <= min_visibility <= 1,
            "a number between 0 and 1",
        ),
        ("min_size_px", min_size_px, _is_number(min_size_px) and min_size_px >= 0, "a number >= 0"),
    ):
        if isinstance(value, bool) or not ok:
            raise InputValueError(f"`{name}` should be {allowed}. Received: {name}={value!r}")
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
