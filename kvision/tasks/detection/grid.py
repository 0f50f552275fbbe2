"""The anchor-free grid head's geometry: one prediction per feature-map cell, centre-prior
assignment and distance (ltrb) box coding, as in FCOS (Tian et al. 2019) and YOLOX (Ge et al.
2021), which is what "YOLO-style anchor-free" means since YOLOX / YOLOv8.

A cell of level ``l`` (stride ``s``) is the square ``s`` wide centred at ``((x + 0.5) s,
(y + 0.5) s)``; :func:`grid_cells` lists them normalized xyxy in the head's output order (level,
row, column), so the rest of the detection task (NMS, metric, parity, the data pipeline) treats
them as one "anchor" per location. A cell predicts the distances from its centre to the four
sides of its object, ``(l, t, r, b) = s * exp(delta)``.

**Assignment** (:func:`encode_grid_targets_tf`): a cell is positive for a ground-truth box when

1. its centre lies inside the box,
2. its centre lies within ``center_radius * s`` of the box centre on both axes (YOLOX's centre
   prior), and
3. the box's largest centre-to-side distance ``m = max(l, t, r, b)`` suits the level:
   ``m > lower * s`` (not on the finest level) and ``m <= upper * s`` (not on the coarsest), as
   FCOS' per-level ranges (defaults 2 and 4: 32/64 px boundaries for strides 8/16/32);

a cell claimed by several boxes takes the smallest; a box that no cell claims (tiny, or at the
border) takes the cell whose centre is nearest its centre among the levels that suit it. Every
other cell is background. Two limits, as in FCOS: a box that loses every cell it claims to
smaller boxes has no positive cell, and a forced cell's centre may lie outside its box, whose
distance targets are then clamped to ``MIN_DISTANCE`` strides: the box decodes grown to reach
the cell centre, so boxes much smaller than a stride are only approximated. ``lower`` and
``upper`` tile the sizes without gaps when ``upper / lower`` equals the stride ratio (4 / 2 for
strides doubling). Targets use the task's ``[A]`` class / ``[A, 5]`` box layout, so the
focal and smooth-L1 losses are shared with the anchor head.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.detection.anchors import _check_image_size, _positive_tuple

#: the log-distance clip when decoding: exp(8) = 2981 strides, far beyond any image
MAX_LOG_DISTANCE = 8.0
#: smallest target distance, in strides: a side closer to the cell centre (or on its far side,
#: for a forced cell) is placed this far out, so targets stay >= log(0.05) = -3.0
MIN_DISTANCE = 0.05


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """Levels and assignment rule of the anchor-free grid head (module docstring).

    Args:
        strides: pixels per cell, one per level, increasing (default ``(8, 16, 32)``).
        center_radius: the centre prior, in strides (default 2.5, YOLOX's).
        lower: a level takes boxes with ``max(l, t, r, b) > lower * stride`` (default 2).
        upper: ... and ``<= upper * stride`` (default 4).

    Raises:
        InputValueError: a field is not positive, ``strides`` not increasing, ``lower >= upper``.
    """

    strides: tuple[int, ...] = (8, 16, 32)
    center_radius: float = 2.5
    lower: float = 2.0
    upper: float = 4.0

    def __post_init__(self):
        strides = _positive_tuple(self.strides, "strides", integer=True)
        if any(b <= a for a, b in zip(strides, strides[1:], strict=False)):
            raise InputValueError(
                f"`strides` should be increasing. Received: strides={self.strides!r}"
            )
        object.__setattr__(self, "strides", strides)
        for name in ("center_radius", "lower", "upper"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise InputValueError(f"`{name}` should be a number > 0. Received: {value!r}")
        if self.lower >= self.upper:
            raise InputValueError(
                f"`lower` should be below `upper`. Received: lower={self.lower}, upper={self.upper}"
            )

    def to_dict(self) -> dict:
        return {"strides": list(self.strides), "center_radius": self.center_radius,
                "lower": self.lower, "upper": self.upper}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> GridConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputValueError(f"Unknown GridConfig field(s) {unknown}. Allowed: {names}")
        return cls(**{**data, "strides": tuple(data.get("strides", cls.strides))})


def grid_cells(image_size: Sequence[int], config: GridConfig | None = None) -> np.ndarray:
    """Every cell of every level, normalized xyxy, in the head's output order.

    Args:
        image_size: model input ``(height, width)`` in pixels.
        config: the grid (default ``GridConfig()``).

    Returns:
        float32 ``[A, 4]``, ``A = sum_l ceil(H / s_l) * ceil(W / s_l)``.

    Example:
        >>> grid_cells((160, 160)).shape
        (525, 4)
    """
    config = config or GridConfig()
    h, w = _check_image_size(image_size)
    levels = []
    for s in config.strides:
        fh, fw = math.ceil(h / s), math.ceil(w / s)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * s, (np.arange(fw) + 0.5) * s, indexing="ij")
        cx, cy = cx.reshape(-1), cy.reshape(-1)
        levels.append(np.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], axis=-1))
    cells = np.concatenate(levels) / np.array([w, h, w, h], np.float64)
    return cells.astype(np.float32)


def decode_ltrb(deltas, cells) -> np.ndarray:
    """Boxes from distance deltas: ``[cx - s e^d0, cy - s e^d1, cx + s e^d2, cy + s e^d3]``
    (``s`` per axis is the cell's normalized width / height). float32 ``[A, 4]``."""
    deltas = np.clip(np.asarray(deltas, np.float64), -MAX_LOG_DISTANCE, MAX_LOG_DISTANCE)
    cells = np.asarray(cells, np.float64)
    sx, sy = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
    cx, cy = cells[:, 0] + sx / 2, cells[:, 1] + sy / 2
    d = np.exp(deltas)
    boxes = np.stack([cx - sx * d[:, 0], cy - sy * d[:, 1], cx + sx * d[:, 2], cy + sy * d[:, 3]])
    return boxes.T.astype(np.float32)


def encode_ltrb(boxes, cells) -> np.ndarray:
    """Inverse of :func:`decode_ltrb` for boxes that contain their cell's centre."""
    boxes, cells = np.asarray(boxes, np.float64), np.asarray(cells, np.float64)
    sx, sy = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
    cx, cy = cells[:, 0] + sx / 2, cells[:, 1] + sy / 2
    ltrb = np.stack([(cx - boxes[:, 0]) / sx, (cy - boxes[:, 1]) / sy,
                     (boxes[:, 2] - cx) / sx, (boxes[:, 3] - cy) / sy], axis=-1)  # fmt: skip
    return np.log(ltrb).astype(np.float32)


def encode_grid_targets_tf(gt_boxes, gt_classes, cells, config: GridConfig | None = None) -> dict:
    """Per-cell training targets of one image (graph-mode, any number of boxes including none).

    Args:
        gt_boxes: float32 ``[N, 4]`` normalized xyxy.
        gt_classes: int32 ``[N]``.
        cells: float32 ``[A, 4]`` from :func:`grid_cells`.
        config: the grid (default ``GridConfig()``).

    Returns:
        ``{"box_targets": float32 [A, 4] (log distances, zeros off positives),
        "class_targets": int32 [A] (class, or -1 background)}``.
    """
    import tensorflow as tf

    config = config or GridConfig()
    real = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), [-1, 4])
    # one far-away placeholder box keeps every reduction non-empty when the image has none
    gt = tf.concat([real, [[-10.0, -10.0, -9.0, -9.0]]], axis=0)
    valid = tf.concat([tf.ones_like(real[:, 0], tf.bool), [False]], axis=0)
    classes = tf.concat([tf.cast(tf.reshape(gt_classes, [-1]), tf.int32), [0]], axis=0)
    cells = tf.convert_to_tensor(cells, tf.float32)
    sx, sy = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
    cx, cy = cells[:, 0] + sx / 2, cells[:, 1] + sy / 2

    def distances(boxes):  # [A, N, 4] from each cell centre to each box's sides, in strides
        return tf.stack(
            [
                (cx[:, None] - boxes[None, :, 0]) / sx[:, None],
                (cy[:, None] - boxes[None, :, 1]) / sy[:, None],
                (boxes[None, :, 2] - cx[:, None]) / sx[:, None],
                (boxes[None, :, 3] - cy[:, None]) / sy[:, None],
            ],
            axis=-1,
        )

    ltrb = distances(gt)
    inside = tf.reduce_min(ltrb, axis=-1) > 0
    gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    near = (tf.abs(cx[:, None] - gcx[None]) < config.center_radius * sx[:, None]) & (
        tf.abs(cy[:, None] - gcy[None]) < config.center_radius * sy[:, None]
    )
    reach = tf.reduce_max(ltrb, axis=-1)
    finest = tf.abs(sx - tf.reduce_min(sx)) < 1e-6
    coarsest = tf.abs(sx - tf.reduce_max(sx)) < 1e-6
    suits = ((reach > config.lower) | finest[:, None]) & (
        (reach <= config.upper) | coarsest[:, None]
    )
    candidate = inside & near & suits
    # a box no cell claims takes the suitable cell whose centre is nearest its centre (any
    # cell when no level suits it)
    big = tf.constant(1e9, tf.float32)
    distance = tf.square(cx[:, None] - gcx[None]) + tf.square(cy[:, None] - gcy[None])
    unclaimed = valid & ~tf.reduce_any(candidate, axis=0)
    nearest_suitable = tf.argmin(tf.where(suits, distance, big), axis=0, output_type=tf.int32)
    nearest_any = tf.argmin(distance, axis=0, output_type=tf.int32)
    nearest = tf.where(tf.reduce_any(suits, axis=0), nearest_suitable, nearest_any)
    forced = tf.one_hot(nearest, tf.shape(cells)[0], on_value=True, off_value=False, axis=0)
    candidate = candidate | (forced & unclaimed[None, :])
    area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    cost = tf.where(candidate, tf.broadcast_to(area[None], tf.shape(candidate)), big)
    best = tf.argmin(cost, axis=1, output_type=tf.int32)  # the smallest claiming box
    positive = tf.reduce_any(candidate, axis=1)
    own = tf.gather(ltrb, best, axis=1, batch_dims=1)  # [A, 4]
    deltas = tf.math.log(tf.maximum(own, MIN_DISTANCE))
    box_targets = tf.where(positive[:, None], deltas, 0.0)
    class_targets = tf.where(positive, tf.gather(classes, best), -1)
    return {"box_targets": box_targets, "class_targets": class_targets}
