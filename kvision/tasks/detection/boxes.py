"""Box geometry for detection: IoU, format conversion, clipping, and SSD centre-size encoding.

Conventions (shared by every detection module):

- a box array is float32 ``[N, 4]`` ``[x_min, y_min, x_max, y_max]`` (xyxy). Boxes of images and
  predictions are in pixels of their image; model-side boxes (anchors, targets) are normalized to
  ``[0, 1]`` relative to the model input. COCO's ``[x, y, w, h]`` exists only at file boundaries
  (:func:`xywh_to_xyxy`, :func:`xyxy_to_xywh`).
- A box whose ``x_max <= x_min`` or ``y_max <= y_min`` has area 0 and IoU 0 with every box.

The numpy functions run outside the graph (readers, post-processing, evaluation). The ``*_tf``
functions are plain TensorFlow ops for ``tf.data`` and graphs (no ``numpy_function``); TensorFlow is
imported only when one of them is called::

    iou(np.array([[0, 0, 10, 10]], "f4"), np.array([[5, 0, 15, 10]], "f4"))   # [[0.3333]]
    deltas = encode(gt_boxes, anchors)            # [N, 4], per matched (box, anchor) pair
    boxes = decode(deltas, anchors)               # the boxes back, [N, 4]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kvision.errors import InputValueError

__all__ = [
    "DEFAULT_VARIANCES",
    "LOG_SIZE_CLAMP",
    "box_area",
    "clip_boxes",
    "decode",
    "decode_tf",
    "encode",
    "encode_tf",
    "iou",
    "iou_tf",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]

DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)
"""SSD's variances for ``(x, y, w, h)`` deltas (Liu et al. 2016); the same as Faster R-CNN's box
coder weights ``(10, 10, 5, 5)`` written as their inverses."""

LOG_SIZE_CLAMP = math.log(1000.0 / 16.0)
"""Upper bound of a decoded log-size change, ``log(1000 / 16) ~= 4.135``: a decoded box is at most
62.5 times its anchor's width or height (torchvision's ``bbox_xform_clip``). Keeps ``exp`` finite
for any network output."""


def as_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """``boxes`` as a float32 ``[N, 4]`` array; an empty input gives ``[0, 4]``.

    Raises:
        InputValueError: the array is not ``[N, 4]`` (the message names ``name`` and the shape).
    """
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputValueError(
            f"`{name}` should have shape [N, 4] (x_min, y_min, x_max, y_max). "
            f"Received: {name} with shape {list(arr.shape)}"
        )
    return arr


def box_area(boxes) -> np.ndarray:
    """Areas of xyxy boxes; a box with ``x_max <= x_min`` or ``y_max <= y_min`` has area 0.

    Args:
        boxes: ``[N, 4]`` xyxy boxes (any unit).

    Returns:
        float32 ``[N]``, in the boxes' unit squared.

    Example:
        >>> box_area([[0, 0, 4, 3], [5, 5, 4, 9]]).tolist()
        [12.0, 0.0]
    """
    b = as_boxes(boxes)
    return np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)


def iou(a, b) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    ``IoU = area(a & b) / (area(a) + area(b) - area(a & b))``; 0 where the union is 0 (two
    zero-area boxes), so the result never holds NaN.

    Args:
        a: ``[N, 4]`` xyxy boxes.
        b: ``[M, 4]`` xyxy boxes in the same unit.

    Returns:
        float32 ``[N, M]`` in ``[0, 1]``.

    Raises:
        InputValueError: ``a`` or ``b`` is not ``[K, 4]``.

    Example:
        >>> iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]).round(4).tolist()
        [[0.3333, 0.0]]
    """
    a = as_boxes(a, "a")
    b = as_boxes(b, "b")
    inter = _intersection(a[:, None, :], b[None, :, :])
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.maximum(w, 0) * np.maximum(h, 0)


def xyxy_to_xywh(boxes) -> np.ndarray:
    """``[x_min, y_min, x_max, y_max]`` to COCO's ``[x_min, y_min, width, height]``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.

    Returns:
        float32 ``[N, 4]`` xywh boxes, same unit.

    Example:
        >>> xyxy_to_xywh([[10, 20, 30, 60]]).tolist()
        [[10.0, 20.0, 20.0, 40.0]]
    """
    b = as_boxes(boxes).copy()
    b[:, 2:] -= b[:, :2]
    return b


def xywh_to_xyxy(boxes) -> np.ndarray:
    """COCO's ``[x_min, y_min, width, height]`` to ``[x_min, y_min, x_max, y_max]``.

    Args:
        boxes: ``[N, 4]`` xywh boxes.

    Returns:
        float32 ``[N, 4]`` xyxy boxes, same unit.

    Example:
        >>> xywh_to_xyxy([[10, 20, 20, 40]]).tolist()
        [[10.0, 20.0, 30.0, 60.0]]
    """
    b = as_boxes(boxes).copy()
    b[:, 2:] += b[:, :2]
    return b


def clip_boxes(boxes, width: float, height: float) -> np.ndarray:
    """Clip xyxy boxes to the image ``[0, width] x [0, height]``.

    A box fully outside the image becomes a zero-area box on its border.

    Args:
        boxes: ``[N, 4]`` xyxy boxes in pixels (or normalized, with ``width = height = 1``).
        width: image width, > 0, same unit.
        height: image height, > 0, same unit.

    Returns:
        float32 ``[N, 4]``.

    Raises:
        InputValueError: ``width`` or ``height`` is not a positive number.

    Example:
        >>> clip_boxes([[-5, 10, 120, 90]], width=100, height=80).tolist()
        [[0.0, 10.0, 100.0, 80.0]]
    """
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int | float | np.number) or not value > 0:
            raise InputValueError(f"`{name}` should be a number > 0. Received: {name}={value!r}")
    b = as_boxes(boxes)
    high = np.array([width, height, width, height], dtype=np.float32)
    return np.clip(b, 0, high).astype(np.float32)


def _check_variances(variances: Sequence[float]) -> tuple[float, float, float, float]:
    v = tuple(variances) if isinstance(variances, Sequence | np.ndarray) else ()
    if len(v) != 4 or not all(isinstance(x, int | float | np.number) and x > 0 for x in v):
        raise InputValueError(
            "`variances` should be 4 numbers > 0 for (x, y, w, h). "
            f"Received: variances={variances!r}"
        )
    return tuple(float(x) for x in v)


def encode(boxes, anchors, variances: Sequence[float] = DEFAULT_VARIANCES) -> np.ndarray:
    """Encode boxes as centre-size offsets from their anchors (SSD, Liu et al. 2016; Faster R-CNN,
    Ren et al. 2015).

    With centres ``(cx, cy)`` and sizes ``(w, h)`` of a box and ``(cxa, cya, wa, ha)`` of its
    anchor::

        tx = (cx - cxa) / wa / variances[0]      tw = log(w / wa) / variances[2]
        ty = (cy - cya) / ha / variances[1]      th = log(h / ha) / variances[3]

    Row ``i`` of ``boxes`` is encoded against row ``i`` of ``anchors`` (gather the matched boxes
    first). Boxes must have positive width and height: a zero size gives a ``-inf`` log-size delta.

    Args:
        boxes: ``[N, 4]`` xyxy boxes, same unit as ``anchors`` (normalized model-side).
        anchors: ``[N, 4]`` xyxy anchors, positive width and height.
        variances: 4 positive scales for ``(tx, ty, tw, th)`` (default ``(0.1, 0.1, 0.2, 0.2)``).

    Returns:
        float32 ``[N, 4]`` deltas ``(tx, ty, tw, th)``.

    Raises:
        InputValueError: shapes differ or are not ``[N, 4]``; bad ``variances``.

    Example:
        >>> encode([[0.1, 0.1, 0.3, 0.5]], [[0.1, 0.1, 0.3, 0.3]]).round(4).tolist()
        [[0.0, 5.0, 0.0, 3.4657]]
    """
    b = as_boxes(boxes)
    a = as_boxes(anchors, "anchors")
    _check_same_rows(b, a, "boxes")
    v = np.array(_check_variances(variances), dtype=np.float32)
    bw, bh, bx, by = _centre_size(b)
    aw, ah, ax, ay = _centre_size(a)
    with np.errstate(divide="ignore"):
        out = np.stack([(bx - ax) / aw, (by - ay) / ah, np.log(bw / aw), np.log(bh / ah)], axis=1)
    return (out / v).astype(np.float32)


def decode(deltas, anchors, variances: Sequence[float] = DEFAULT_VARIANCES) -> np.ndarray:
    """Inverse of :func:`encode`: centre-size deltas on anchors back to xyxy boxes.

    The log-size deltas, once multiplied by their variance, are clamped to at most
    :data:`LOG_SIZE_CLAMP` (``log(1000 / 16)``, as torchvision does) so that ``exp`` cannot
    overflow: a decoded box is at most 62.5 times its anchor's width and height.

    Args:
        deltas: ``[N, 4]`` ``(tx, ty, tw, th)`` (e.g. a box head's outputs).
        anchors: ``[N, 4]`` xyxy anchors.
        variances: the variances used by :func:`encode` (default ``(0.1, 0.1, 0.2, 0.2)``).

    Returns:
        float32 ``[N, 4]`` xyxy boxes in the anchors' unit; not clipped to the image.

    Raises:
        InputValueError: shapes differ or are not ``[N, 4]``; bad ``variances``.

    Example:
        >>> decode([[0.0, 5.0, 0.0, 3.4657]], [[0.1, 0.1, 0.3, 0.3]]).round(4).tolist()
        [[0.1, 0.1, 0.3, 0.5]]
    """
    d = as_boxes(deltas, "deltas")
    a = as_boxes(anchors, "anchors")
    _check_same_rows(d, a, "deltas")
    v = np.array(_check_variances(variances), dtype=np.float32)
    d = d * v
    aw, ah, ax, ay = _centre_size(a)
    cx = d[:, 0] * aw + ax
    cy = d[:, 1] * ah + ay
    w = np.exp(np.minimum(d[:, 2], LOG_SIZE_CLAMP)) * aw
    h = np.exp(np.minimum(d[:, 3], LOG_SIZE_CLAMP)) * ah
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1).astype(
        np.float32
    )


def _centre_size(b):
    """``(w, h, cx, cy)`` of xyxy boxes (numpy arrays or tensors)."""
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    return w, h, b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h


def _check_same_rows(x: np.ndarray, anchors: np.ndarray, name: str) -> None:
    if x.shape[0] != anchors.shape[0]:
        raise InputValueError(
            f"`{name}` and `anchors` should have the same number of rows (row i is encoded "
            f"against anchor i). Received: {name} with {x.shape[0]} rows, anchors with "
            f"{anchors.shape[0]}"
        )


# ---- TensorFlow versions: graph-mode ops for tf.data (no validation beyond TF's own) ----------


def iou_tf(a, b):
    """TensorFlow :func:`iou`: ``a`` ``[N, 4]``, ``b`` ``[M, 4]`` xyxy -> float32 ``[N, M]``.

    Same formula and float32 operation order as :func:`iou`; 0 where the union is 0. Works on
    dynamic ``N`` and ``M`` (including 0) inside ``tf.data`` and ``tf.function``.

    Example:
        >>> iou_tf(tf.constant([[0.0, 0, 10, 10]]), tf.constant([[5.0, 0, 15, 10]]))
        <tf.Tensor: shape=(1, 1), dtype=float32, numpy=array([[0.33333334]], dtype=float32)>
    """
    import tensorflow as tf

    ax1, ay1, ax2, ay2 = tf.split(tf.convert_to_tensor(a, tf.float32), 4, axis=1)  # [N, 1]
    bx1, by1, bx2, by2 = tf.split(tf.transpose(tf.convert_to_tensor(b, tf.float32)), 4)  # [1, M]
    w = tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1)
    h = tf.minimum(ay2, by2) - tf.maximum(ay1, by1)
    inter = tf.maximum(w, 0.0) * tf.maximum(h, 0.0)
    area_a = tf.maximum(ax2 - ax1, 0.0) * tf.maximum(ay2 - ay1, 0.0)
    area_b = tf.maximum(bx2 - bx1, 0.0) * tf.maximum(by2 - by1, 0.0)
    # union >= max(area_a, area_b) >= 0; divide_no_nan gives 0 where it is 0
    return tf.math.divide_no_nan(inter, area_a + area_b - inter)


def encode_tf(boxes, anchors, variances: Sequence[float] = DEFAULT_VARIANCES):
    """TensorFlow :func:`encode`: ``boxes`` and ``anchors`` ``[N, 4]`` xyxy -> float32 ``[N, 4]``
    deltas ``(tx, ty, tw, th)`` (SSD centre-size encoding with ``variances``).

    Raises:
        InputValueError: bad ``variances`` (checked when the graph is built).

    Example:
        >>> encode_tf([[0.1, 0.1, 0.3, 0.5]], [[0.1, 0.1, 0.3, 0.3]])  # [[0, 5, 0, 3.4657]]
    """
    import tensorflow as tf

    v = tf.constant(_check_variances(variances), tf.float32)
    bw, bh, bx, by = _centre_size(tf.convert_to_tensor(boxes, tf.float32))
    aw, ah, ax, ay = _centre_size(tf.convert_to_tensor(anchors, tf.float32))
    out = tf.stack([(bx - ax) / aw, (by - ay) / ah, tf.math.log(bw / aw), tf.math.log(bh / ah)], 1)
    return out / v


def decode_tf(deltas, anchors, variances: Sequence[float] = DEFAULT_VARIANCES):
    """TensorFlow :func:`decode`: deltas and anchors ``[N, 4]`` -> float32 ``[N, 4]`` xyxy boxes,
    log-size deltas clamped to :data:`LOG_SIZE_CLAMP` (``log(1000 / 16)``).

    Raises:
        InputValueError: bad ``variances`` (checked when the graph is built).

    Example:
        >>> decode_tf([[0.0, 5.0, 0.0, 3.4657]], [[0.1, 0.1, 0.3, 0.3]])  # [[0.1, 0.1, 0.3, 0.5]]
    """
    import tensorflow as tf

    d = tf.convert_to_tensor(deltas, tf.float32) * tf.constant(_check_variances(variances))
    aw, ah, ax, ay = _centre_size(tf.convert_to_tensor(anchors, tf.float32))
    cx = d[:, 0] * aw + ax
    cy = d[:, 1] * ah + ay
    w = tf.exp(tf.minimum(d[:, 2], LOG_SIZE_CLAMP)) * aw
    h = tf.exp(tf.minimum(d[:, 3], LOG_SIZE_CLAMP)) * ah
    return tf.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)
