"""Anchors for one-stage detectors (RetinaNet, Lin et al. 2017; SSD, Liu et al. 2016) and the
assignment of ground-truth boxes to them.

Anchor layout (the detection head relies on it): anchors are ordered **level by level** (in the
order of ``config.strides``), then by feature-map row ``y``, then column ``x``, then **anchor type**
(scales outer, aspect ratios inner). A head output of shape ``[B, H_l, W_l, anchors_per_location *
K]`` reshaped to ``[B, H_l * W_l * anchors_per_location, K]`` and concatenated over levels lines up
row for row with :func:`generate_anchors`.

Targets: :func:`match` assigns each anchor a ground-truth box, the background or "ignore", and
:func:`encode_targets_tf` turns that into the per-anchor box and class targets inside ``tf.data``
(:func:`encode_targets` is its numpy reference)::

    config = AnchorConfig()
    anchors = generate_anchors((256, 256), config)          # float32 [12096, 4], normalized xyxy
    targets = encode_targets_tf(gt_boxes, gt_classes, anchors)
    targets["box_targets"], targets["class_targets"]        # [A, 4] float32, [A] int32
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Sequence

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.detection.boxes import (
    DEFAULT_VARIANCES,
    _check_variances,
    as_boxes,
    encode,
    encode_tf,
    iou,
    iou_tf,
)

__all__ = [
    "AnchorConfig",
    "BACKGROUND",
    "IGNORE",
    "anchors_per_location",
    "encode_targets",
    "encode_targets_tf",
    "feature_sizes",
    "generate_anchors",
    "match",
    "match_tf",
]

BACKGROUND = -1
"""Match / class target of an anchor that is a negative (background) example."""
IGNORE = -2
"""Match / class target of an anchor whose best IoU lies between the thresholds: no loss."""


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """Anchor shapes per pyramid level: RetinaNet's (Lin et al. 2017) scaled for small inputs.

    RetinaNet uses strides 8-128 (P3-P7) and base size ``4 x stride`` for 640-1333 px images. Here
    the defaults target 160-320 px inputs with objects of 16-120 px: three levels, strides
    ``(8, 16, 32)``, base size ``2 x stride`` ``(16, 32, 64)``, so anchors span 11-143 px
    (``base * scale / sqrt(ratio)`` from 16 x 0.71 to 64 x 1.59 x 1.41). Measured on random
    boxes of 16-120 px (aspect 0.5-2) in 160-320 px inputs: >= 99.4 % have an anchor with
    IoU >= 0.5; with ``4 x stride`` only 66 % of the 16-32 px boxes do.

    An anchor of level ``l``, scale ``s`` and aspect ratio ``r`` (width / height) is
    ``base_sizes[l] * s * sqrt(r)`` wide and ``base_sizes[l] * s / sqrt(r)`` high (area
    ``(base * s)**2``), centred at ``((x + 0.5) * stride, (y + 0.5) * stride)`` pixels.

    Args:
        strides: pixels per feature-map cell, one per level, increasing (default ``(8, 16, 32)``).
        base_sizes: anchor side in pixels at scale 1 and ratio 1, one per level (default
            ``(16, 32, 64)``).
        scales: octave scales applied at every level (default ``(1, 2**(1/3), 2**(2/3))``).
        aspect_ratios: width / height ratios (default ``(0.5, 1, 2)``).

    Raises:
        InputValueError: a field is empty, not positive, not increasing (``strides``) or
            ``base_sizes`` and ``strides`` differ in length; the message names the field and value.

    Example:
        >>> cfg = AnchorConfig(strides=(8, 16), base_sizes=(24, 48))
        >>> AnchorConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    strides: tuple[int, ...] = (8, 16, 32)
    base_sizes: tuple[float, ...] = (16.0, 32.0, 64.0)
    scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)

    def __post_init__(self):
        strides = _positive_tuple(self.strides, "strides", integer=True)
        if any(b <= a for a, b in zip(strides, strides[1:], strict=False)):
            raise InputValueError(
                f"`strides` should be increasing (one per pyramid level, finest first). "
                f"Received: strides={self.strides!r}"
            )
        base_sizes = _positive_tuple(self.base_sizes, "base_sizes")
        if len(base_sizes) != len(strides):
            raise InputValueError(
                f"`base_sizes` should have one value per level, as many as `strides` "
                f"({len(strides)}). Received: base_sizes={self.base_sizes!r}, "
                f"strides={self.strides!r}"
            )
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "base_sizes", base_sizes)
        object.__setattr__(self, "scales", _positive_tuple(self.scales, "scales"))
        object.__setattr__(
            self, "aspect_ratios", _positive_tuple(self.aspect_ratios, "aspect_ratios")
        )

    def to_dict(self) -> dict:
        """JSON-ready dict of lists; :meth:`from_dict` rebuilds an equal config."""
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> AnchorConfig:
        """A config from :meth:`to_dict`'s output; missing keys take their defaults.

        Raises:
            InputValueError: ``data`` is not a dict, has an unknown key (with a "did you mean"),
                or a bad value.
        """
        if not isinstance(data, dict):
            raise InputValueError(f"`data` should be a dict. Received: data={data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise InputValueError(
                    f"Unknown AnchorConfig field `{key}`.{hint} Allowed: {', '.join(names)}."
                )
        return cls(**data)


def _positive_tuple(value, name: str, integer: bool = False) -> tuple:
    items = tuple(value) if isinstance(value, Sequence | np.ndarray) else None
    kinds = (int, np.integer) if integer else (int, float, np.number)
    if (
        not items
        or isinstance(value, str)
        or not all(
            isinstance(x, kinds) and not isinstance(x, bool) and math.isfinite(x) and x > 0
            for x in items
        )
    ):
        what = "integers" if integer else "numbers"
        raise InputValueError(
            f"`{name}` should be a non-empty list of {what} > 0. Received: {name}={value!r}"
        )
    return tuple(int(x) for x in items) if integer else tuple(float(x) for x in items)


def anchors_per_location(config: AnchorConfig) -> int:
    """Anchors at each feature-map cell: ``len(scales) * len(aspect_ratios)`` (9 by default).

    Example:
        >>> anchors_per_location(AnchorConfig())
        9
    """
    return len(config.scales) * len(config.aspect_ratios)


def feature_sizes(image_size: Sequence[int], config: AnchorConfig) -> list[tuple[int, int]]:
    """Feature-map ``(height, width)`` per level: ``ceil(size / stride)``, what a pyramid of
    'same'-padded strided convolutions gives for an input of ``image_size``.

    Args:
        image_size: model input ``(height, width)`` in pixels.
        config: the anchor config.

    Raises:
        InputValueError: ``image_size`` is not two positive integers.

    Example:
        >>> feature_sizes((100, 64), AnchorConfig())
        [(13, 8), (7, 4), (4, 2)]
    """
    h, w = _check_image_size(image_size)
    return [(math.ceil(h / s), math.ceil(w / s)) for s in config.strides]


def _check_image_size(image_size) -> tuple[int, int]:
    items = tuple(image_size) if isinstance(image_size, Sequence | np.ndarray) else ()
    if len(items) != 2 or not all(
        isinstance(x, int | np.integer) and not isinstance(x, bool) and x > 0 for x in items
    ):
        raise InputValueError(
            "`image_size` should be (height, width), two integers > 0. "
            f"Received: image_size={image_size!r}"
        )
    return int(items[0]), int(items[1])


def generate_anchors(image_size: Sequence[int], config: AnchorConfig | None = None) -> np.ndarray:
    """All anchors of a model input, normalized xyxy, in the head's output order.

    Order: level by level, then feature-map row ``y``, then column ``x``, then anchor type
    (scales outer, aspect ratios inner); see the module docstring. Coordinates are pixels divided
    by the input width (x) and height (y); anchors are not clipped, so border anchors may extend
    past ``[0, 1]``.

    Args:
        image_size: model input ``(height, width)`` in pixels.
        config: anchor shapes (default ``AnchorConfig()``).

    Returns:
        float32 ``[A, 4]``, ``A = sum_l H_l * W_l * anchors_per_location(config)`` with
        ``(H_l, W_l)`` from :func:`feature_sizes`.

    Raises:
        InputValueError: bad ``image_size``.

    Example:
        >>> generate_anchors((160, 160)).shape
        (4725, 4)
    """
    config = AnchorConfig() if config is None else config
    h, w = _check_image_size(image_size)
    # Anchor types: (width, height) in pixels, scales outer, ratios inner.
    scale = np.repeat(np.asarray(config.scales), len(config.aspect_ratios))
    ratio = np.tile(np.asarray(config.aspect_ratios), len(config.scales))
    levels = []
    for stride, base, (fh, fw) in zip(
        config.strides, config.base_sizes, feature_sizes((h, w), config), strict=True
    ):
        sizes_w = base * scale * np.sqrt(ratio)
        sizes_h = base * scale / np.sqrt(ratio)
        cy, cx = np.meshgrid(
            (np.arange(fh) + 0.5) * stride, (np.arange(fw) + 0.5) * stride, indexing="ij"
        )
        cx = cx.reshape(-1, 1)  # [H*W, 1]: y outer, x inner
        cy = cy.reshape(-1, 1)
        level = np.stack(
            [cx - sizes_w / 2, cy - sizes_h / 2, cx + sizes_w / 2, cy + sizes_h / 2], axis=-1
        )  # [H*W, types, 4]
        levels.append(level.reshape(-1, 4))
    anchors = np.concatenate(levels, axis=0) / np.array([w, h, w, h], dtype=np.float64)
    return anchors.astype(np.float32)


def _check_thresholds(pos_iou, neg_iou) -> None:
    for name, value in (("pos_iou", pos_iou), ("neg_iou", neg_iou)):
        if not isinstance(value, int | float | np.number) or not 0 < value <= 1:
            raise InputValueError(f"`{name}` should be in (0, 1]. Received: {name}={value!r}")
    if neg_iou > pos_iou:
        raise InputValueError(
            f"`neg_iou` should be <= `pos_iou`. Received: neg_iou={neg_iou}, pos_iou={pos_iou}"
        )


def match(
    anchors, gt_boxes, pos_iou: float = 0.5, neg_iou: float = 0.4, force_match: bool = True
) -> np.ndarray:
    """Assign each anchor a ground-truth box by IoU (RetinaNet's rule, Lin et al. 2017).

    1. Each anchor takes the gt box it overlaps most (ties: the lowest gt index). It is positive
       (that index) when the IoU is ``>= pos_iou``, background (-1) when ``< neg_iou``, ignored
       (-2) in between.
    2. With ``force_match``, every gt box with a positive best IoU also gets its best anchor
       (ties: the lowest anchor index) even below ``pos_iou`` (SSD's "best default box" step, Liu
       et al. 2016), overriding step 1 for that anchor. Conflict: when several gt boxes share the
       same best anchor, it goes to the one with the highest IoU with it (ties: the lowest gt
       index); the others keep only what step 1 gave them. A gt box with zero IoU with every
       anchor (e.g. zero area) stays unmatched.

    Args:
        anchors: ``[A, 4]`` xyxy anchors.
        gt_boxes: ``[N, 4]`` xyxy boxes, same unit as the anchors; ``N`` may be 0.
        pos_iou: positive threshold, in ``(0, 1]`` (default 0.5).
        neg_iou: background threshold, in ``(0, pos_iou]`` (default 0.4).
        force_match: give each gt box its best anchor (default True).

    Returns:
        int32 ``[A]``: index into ``gt_boxes``, -1 (:data:`BACKGROUND`) or -2 (:data:`IGNORE`).

    Raises:
        InputValueError: bad shapes or thresholds.

    Example:
        >>> match([[0, 0, 1, 1], [2, 2, 3, 3], [0, 0, 1, 2.5]], [[0, 0, 1, 1.1]]).tolist()
        [0, -1, -2]
    """
    _check_thresholds(pos_iou, neg_iou)
    anchors = as_boxes(anchors, "anchors")
    ious = iou(anchors, as_boxes(gt_boxes, "gt_boxes"))  # [A, N]
    num_anchors, num_gt = ious.shape
    matches = np.full(num_anchors, BACKGROUND, dtype=np.int32)
    if num_gt == 0:
        return matches
    best_gt = ious.argmax(axis=1)  # argmax returns the first maximum
    best_iou = ious[np.arange(num_anchors), best_gt]
    matches[best_iou >= neg_iou] = IGNORE
    positive = best_iou >= pos_iou
    matches[positive] = best_gt[positive]
    if force_match:
        best_anchor = ious.argmax(axis=0)
        winner: dict[int, int] = {}
        for j in range(num_gt):
            a = int(best_anchor[j])
            if ious[a, j] > 0 and (a not in winner or ious[a, j] > ious[a, winner[a]]):
                winner[a] = j
        for a, j in winner.items():
            matches[a] = j
    return matches


def encode_targets(
    gt_boxes,
    gt_classes,
    anchors,
    *,
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    force_match: bool = True,
    variances: Sequence[float] = DEFAULT_VARIANCES,
) -> dict[str, np.ndarray]:
    """Numpy reference of :func:`encode_targets_tf` (same arguments and outputs)."""
    gt_boxes = as_boxes(gt_boxes, "gt_boxes")
    gt_classes = _check_classes(gt_classes, len(gt_boxes))
    anchors = as_boxes(anchors, "anchors")
    _check_variances(variances)
    matches = match(anchors, gt_boxes, pos_iou, neg_iou, force_match)
    positive = matches >= 0
    box_targets = np.zeros((len(anchors), 4), dtype=np.float32)
    box_targets[positive] = encode(gt_boxes[matches[positive]], anchors[positive], variances)
    class_targets = matches.copy()
    class_targets[positive] = gt_classes[matches[positive]]
    return {"box_targets": box_targets, "class_targets": class_targets}


def _check_classes(gt_classes, n: int) -> np.ndarray:
    classes = np.asarray(gt_classes)
    if classes.size == 0 and n == 0:
        return np.zeros(0, dtype=np.int32)
    if classes.shape != (n,) or not np.issubdtype(classes.dtype, np.integer):
        raise InputValueError(
            f"`gt_classes` should be integers of shape [{n}] (one per gt box). Received: "
            f"gt_classes with shape {list(classes.shape)} and dtype {classes.dtype}"
        )
    return classes.astype(np.int32)


def match_tf(anchors, gt_boxes, pos_iou: float = 0.5, neg_iou: float = 0.4, force_match=True):
    """TensorFlow :func:`match` (same rule, ties and conflicts): graph-mode ops only, dynamic
    ``N`` including 0.

    Args:
        anchors: ``[A, 4]`` xyxy tensor or array.
        gt_boxes: ``[N, 4]`` xyxy tensor, same unit.
        pos_iou, neg_iou, force_match: as in :func:`match`.

    Returns:
        int32 tensor ``[A]``: gt index, -1 background, -2 ignore.

    Raises:
        InputValueError: bad thresholds (checked when the graph is built).
    """
    import tensorflow as tf

    _check_thresholds(pos_iou, neg_iou)
    ious = iou_tf(anchors, gt_boxes)  # [A, N]
    num_anchors = tf.shape(ious)[0]
    num_gt = tf.shape(ious)[1]
    gt_index = tf.range(num_gt, dtype=tf.int32)
    # Step 1: first maximum per anchor (reduce_min of the indices that reach it; argmax does not
    # promise which tie it returns). With N = 0 the max is -inf: every anchor is background.
    best_iou = tf.reduce_max(ious, axis=1)
    best_gt = tf.reduce_min(tf.where(ious == best_iou[:, None], gt_index[None, :], num_gt), axis=1)
    matches = tf.where(
        best_iou >= pos_iou,
        best_gt,
        tf.where(best_iou >= neg_iou, tf.constant(IGNORE), tf.constant(BACKGROUND)),
    )
    if not force_match:
        return matches
    # Step 2: each gt's first best anchor; among gts sharing an anchor the highest IoU wins.
    col_best = tf.reduce_max(ious, axis=0)  # [N]
    anchor_index = tf.range(num_anchors, dtype=tf.int32)
    best_anchor = tf.reduce_min(
        tf.where(ious == col_best[None, :], anchor_index[:, None], num_anchors), axis=0
    )
    same = best_anchor[:, None] == best_anchor[None, :]  # [N, N]: [k, j]
    beats = (col_best[:, None] > col_best[None, :]) | (
        (col_best[:, None] == col_best[None, :]) & (gt_index[:, None] < gt_index[None, :])
    )  # gt k beats gt j
    beaten = tf.reduce_any(same & beats, axis=0)
    wins = (col_best > 0) & ~beaten
    return tf.tensor_scatter_nd_update(
        matches, tf.boolean_mask(best_anchor, wins)[:, None], tf.boolean_mask(gt_index, wins)
    )


def encode_targets_tf(
    gt_boxes,
    gt_classes,
    anchors,
    *,
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    force_match: bool = True,
    variances: Sequence[float] = DEFAULT_VARIANCES,
) -> dict:
    """Per-anchor training targets of one image, for ``tf.data.Dataset.map`` (graph-mode ops, no
    ``numpy_function``; any number of gt boxes, including none).

    Anchors are matched with :func:`match`'s rule; positives get their gt box encoded with
    :func:`~kvision.tasks.detection.boxes.encode_tf` (SSD centre-size deltas).

    Args:
        gt_boxes: float32 ``[N, 4]`` normalized xyxy boxes of the model input; ``N`` may be 0.
        gt_classes: int32 ``[N]`` class indices.
        anchors: float32 ``[A, 4]`` normalized xyxy (:func:`generate_anchors`).
        pos_iou: positive IoU threshold (default 0.5).
        neg_iou: background IoU threshold (default 0.4); in between is ignored.
        force_match: give each gt box its best anchor even below ``pos_iou`` (default True).
        variances: encoding variances (default ``(0.1, 0.1, 0.2, 0.2)``).

    Returns:
        ``{"box_targets": float32 [A, 4], "class_targets": int32 [A]}``: encoded deltas (zeros
        where the anchor is not positive) and the class index for positives, -1 background,
        -2 ignore.

    Raises:
        InputValueError: bad thresholds or variances (checked when the graph is built).

    Example:
        >>> anchors = generate_anchors((160, 160))
        >>> ds = ds.map(lambda image, boxes, classes: (
        ...     image, encode_targets_tf(boxes, classes, anchors)))
    """
    import tensorflow as tf

    _check_variances(variances)
    gt_boxes = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), [-1, 4])
    gt_classes = tf.cast(tf.reshape(gt_classes, [-1]), tf.int32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    matches = match_tf(anchors, gt_boxes, pos_iou, neg_iou, force_match)
    positive = matches >= 0
    safe = tf.maximum(matches, 0)
    # Encode only the positives: the gathered box of a non-positive anchor is a placeholder
    # (gt 0, or nothing when N = 0) whose deltas may be -inf.
    pos_index = tf.where(positive)[:, 0]
    deltas = encode_tf(
        tf.gather(gt_boxes, tf.gather(safe, pos_index)), tf.gather(anchors, pos_index), variances
    )
    box_targets = tf.scatter_nd(pos_index[:, None], deltas, tf.shape(anchors, out_type=tf.int64))
    class_targets = tf.where(positive, tf.gather(tf.concat([gt_classes, [0]], 0), safe), matches)
    return {"box_targets": box_targets, "class_targets": class_targets}
