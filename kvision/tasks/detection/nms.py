"""Detection post-processing outside the graph (numpy): score threshold, box decoding, NMS.

NMS stays out of exported graphs so that plain TFLite / LiteRT runtimes run the model with builtin
ops only; the raw head outputs are decoded here::

    dets = postprocess(class_probs, box_deltas, anchors, image_size=(640, 480))
    dets.boxes, dets.scores, dets.classes        # [K, 4] xyxy px, [K], [K]; best score first
    dets.to_json(labels)                         # [{"label", "class_index", "score", "box"}, ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.detection.boxes import (
    DEFAULT_VARIANCES,
    _check_variances,
    _intersection,
    as_boxes,
    box_area,
    clip_boxes,
    decode,
)

__all__ = ["Detections", "batched_nms", "nms", "postprocess", "postprocess_batch"]


@dataclasses.dataclass
class Detections:
    """The detections of one image.

    Args:
        boxes: float32 ``[K, 4]`` xyxy in pixels of the image.
        scores: float32 ``[K]`` in ``[0, 1]``.
        classes: int32 ``[K]`` class indices into the dataset's labels.

    Raises:
        InputValueError: the three arrays do not have ``K`` rows or ``boxes`` is not ``[K, 4]``.

    Example:
        >>> d = Detections(np.array([[1, 2, 30, 40]], "f4"), np.array([0.9], "f4"), np.array([1]))
        >>> d.to_json(["cat", "dog"])[0]["label"]
        'dog'
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self):
        self.boxes = as_boxes(self.boxes, "boxes")
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes).reshape(-1)
        if self.classes.size and not np.issubdtype(self.classes.dtype, np.integer):
            raise InputValueError(
                f"`classes` should be integer class indices. Received: classes with dtype "
                f"{self.classes.dtype}"
            )
        self.classes = self.classes.astype(np.int32)
        k = len(self.boxes)
        if self.scores.shape != (k,) or self.classes.shape != (k,):
            raise InputValueError(
                f"`boxes`, `scores` and `classes` should have the same length. Received: "
                f"{k} boxes, {self.scores.size} scores, {self.classes.size} classes"
            )

    @classmethod
    def empty(cls) -> Detections:
        """No detections: ``[0, 4]`` boxes, ``[0]`` scores and classes."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.boxes)

    def to_json(self, labels: Sequence[str]) -> list[dict]:
        """JSON-ready list, one dict per detection in stored order: ``{"label": str,
        "class_index": int, "score": float, "box": [x_min, y_min, x_max, y_max]}`` (pixels).

        Raises:
            InputValueError: a class index is outside ``labels``.
        """
        labels = list(labels)
        bad = self.classes[(self.classes < 0) | (self.classes >= len(labels))]
        if bad.size:
            raise InputValueError(
                f"Detection class index {int(bad[0])} is outside `labels` "
                f"({len(labels)} labels: indices 0-{len(labels) - 1})"
            )
        return [
            {
                "label": labels[c],
                "class_index": int(c),
                "score": float(s),
                "box": [float(v) for v in b],
            }
            for b, s, c in zip(self.boxes, self.scores, self.classes, strict=True)
        ]


def _check_iou_threshold(iou_threshold) -> float:
    if not isinstance(iou_threshold, int | float | np.number) or not 0 <= iou_threshold <= 1:
        raise InputValueError(
            f"`iou_threshold` should be in [0, 1]. Received: iou_threshold={iou_threshold!r}"
        )
    return float(iou_threshold)


def _check_scores(scores, n: int, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float32)
    if s.shape != (n,):
        raise InputValueError(
            f"`{name}` should have one value per box ({n}). Received: {name} with shape "
            f"{list(np.shape(scores))}"
        )
    return s


def nms(boxes, scores, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression.

    Visits boxes by decreasing score (ties: the lower index first); keeps a box unless its IoU
    with an already kept box is ``> iou_threshold``. Each step is vectorised over the remaining
    boxes.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        iou_threshold: suppression threshold in ``[0, 1]`` (default 0.5).

    Returns:
        int64 ``[K]`` indices of the kept boxes, by decreasing score.

    Raises:
        InputValueError: bad shapes or ``iou_threshold``.

    Example:
        >>> nms([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7]).tolist()
        [0, 2]
    """
    boxes = as_boxes(boxes)
    scores = _check_scores(scores, len(boxes))
    iou_threshold = _check_iou_threshold(iou_threshold)
    order = np.argsort(-scores, kind="stable")
    areas = box_area(boxes)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        inter = _intersection(boxes[i], boxes[rest])
        union = areas[i] + areas[rest] - inter
        overlap = np.zeros_like(inter)
        np.divide(inter, union, out=overlap, where=union > 0)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes, scores, classes, iou_threshold: float = 0.5) -> np.ndarray:
    """:func:`nms` within each class: boxes of different classes never suppress each other.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        classes: ``[N]`` integer class indices.
        iou_threshold: suppression threshold in ``[0, 1]`` (default 0.5).

    Returns:
        int64 ``[K]`` kept indices over all classes, by decreasing score (ties: lower index).

    Raises:
        InputValueError: bad shapes or ``iou_threshold``.

    Example:
        >>> batched_nms([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [0, 1]).tolist()
        [0, 1]
    """
    boxes = as_boxes(boxes)
    scores = _check_scores(scores, len(boxes))
    classes = np.asarray(classes).reshape(-1)
    if classes.shape != (len(boxes),):
        raise InputValueError(
            f"`classes` should have one value per box ({len(boxes)}). Received: classes with "
            f"shape {list(np.shape(classes))}"
        )
    keep = [
        idx[nms(boxes[idx], scores[idx], iou_threshold)]
        for idx in (np.flatnonzero(classes == c) for c in np.unique(classes))
    ]
    keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    keep.sort()  # index order, so that the stable sort below breaks score ties by index
    return keep[np.argsort(-scores[keep], kind="stable")].astype(np.int64)


def postprocess(
    class_probs,
    box_deltas,
    anchors,
    *,
    image_size: Sequence[float],
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    pre_nms_top_k: int = 1000,
    variances: Sequence[float] = DEFAULT_VARIANCES,
    from_logits: bool = False,
    box_decoder=None,
) -> Detections:
    """RetinaNet-style decoding of one image's raw head outputs (Lin et al. 2017).

    1. Candidates are the (anchor, class) pairs with score ``> score_threshold``; sigmoid scores
       are independent, so one anchor may yield several classes (multi-label, as RetinaNet).
    2. The ``pre_nms_top_k`` best candidates over all levels and classes are kept (ties: lower
       anchor, then lower class first).
    3. Their anchors' deltas are decoded (:func:`~kvision.tasks.detection.boxes.decode`), scaled
       from normalized to pixels (``x * width``, ``y * height``), clipped to the image; boxes left
       with zero width or height (entirely outside) are dropped.
    4. :func:`batched_nms` per class with ``iou_threshold``; the ``max_detections`` best remain.

    Normalized boxes are relative to the model input; scaling by the original image's size maps
    them back when the image was resized to the input without padding (stretch resize).

    Args:
        class_probs: float ``[A, C]`` per-anchor class probabilities (sigmoid outputs), in
            ``[0, 1]``; logits with ``from_logits=True``.
        box_deltas: float ``[A, 4]`` encoded deltas (the box head's outputs).
        anchors: float32 ``[A, 4]`` normalized xyxy, from ``generate_anchors``.
        image_size: ``(width, height)`` in pixels of the image the boxes are for.
        score_threshold: minimum score, exclusive, in ``[0, 1)`` (default 0.05).
        iou_threshold: NMS threshold in ``[0, 1]`` (default 0.5).
        max_detections: most detections returned, >= 1 (default 100).
        pre_nms_top_k: most candidates entering NMS, >= 1 (default 1000).
        variances: encoding variances (default ``(0.1, 0.1, 0.2, 0.2)``).
        from_logits: apply a sigmoid to ``class_probs`` first (default False).
        box_decoder: ``(deltas [K, 4], anchors [K, 4]) -> normalized xyxy boxes [K, 4]`` for
            another box coding (the grid head's distances: ``grid.decode_ltrb``); default: the
            SSD centre-size decoding with ``variances``.

    Returns:
        :class:`Detections` sorted by decreasing score; boxes in pixels.

    Raises:
        InputValueError: shapes disagree, a score is outside ``[0, 1]`` (pass logits with
            ``from_logits=True``), or an option is out of range.

    Example:
        >>> dets = postprocess(probs, deltas, anchors, image_size=(640, 480))
        >>> dets.to_json(["cat", "dog"])
    """
    probs = np.asarray(class_probs, dtype=np.float32)
    anchors = as_boxes(anchors, "anchors")
    deltas = as_boxes(box_deltas, "box_deltas")
    num_anchors = len(anchors)
    if probs.ndim != 2 or probs.shape[0] != num_anchors or deltas.shape[0] != num_anchors:
        raise InputValueError(
            f"`class_probs` [A, C] and `box_deltas` [A, 4] should have one row per anchor "
            f"(A = {num_anchors}). Received: class_probs with shape {list(probs.shape)}, "
            f"box_deltas with shape {list(deltas.shape)}"
        )
    width, height = _check_image_size_wh(image_size)
    _check_options(score_threshold, iou_threshold, max_detections, pre_nms_top_k)
    _check_variances(variances)
    if from_logits:
        probs = (1.0 / (1.0 + np.exp(-probs.astype(np.float64)))).astype(np.float32)
    elif probs.size and not (np.nanmin(probs) >= 0 and np.nanmax(probs) <= 1):
        raise InputValueError(
            f"`class_probs` should be probabilities in [0, 1] (sigmoid of the logits). Received "
            f"values in [{np.nanmin(probs):g}, {np.nanmax(probs):g}]; pass logits with "
            f"from_logits=True"
        )
    if np.isnan(probs).any():
        raise InputValueError("`class_probs` contains NaN: the model output is broken")

    anchor_idx, class_idx = np.nonzero(probs > score_threshold)  # row-major: anchor, then class
    scores = probs[anchor_idx, class_idx]
    top = np.argsort(-scores, kind="stable")[:pre_nms_top_k]
    anchor_idx, class_idx, scores = anchor_idx[top], class_idx[top], scores[top]

    if box_decoder is None:
        boxes = decode(deltas[anchor_idx], anchors[anchor_idx], variances)
    else:
        boxes = np.asarray(box_decoder(deltas[anchor_idx], anchors[anchor_idx]), np.float32)
    boxes = clip_boxes(boxes * np.float32([width, height, width, height]), width, height)
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, class_idx = boxes[inside], scores[inside], class_idx[inside]

    keep = batched_nms(boxes, scores, class_idx, iou_threshold)[:max_detections]
    return Detections(boxes[keep], scores[keep], class_idx[keep].astype(np.int32))


def postprocess_batch(class_probs, box_deltas, anchors, *, image_size, **options) -> list:
    """:func:`postprocess` for each image of a batch.

    Args:
        class_probs: ``[B, A, C]``.
        box_deltas: ``[B, A, 4]``.
        anchors: ``[A, 4]``, shared by the batch.
        image_size: one ``(width, height)`` for all images, or a list of ``B`` of them.
        **options: the keyword options of :func:`postprocess`.

    Returns:
        list of ``B`` :class:`Detections`.

    Raises:
        InputValueError: batch sizes disagree, or as :func:`postprocess`.
    """
    probs = np.asarray(class_probs)
    deltas = np.asarray(box_deltas)
    if probs.ndim != 3 or deltas.ndim != 3 or len(probs) != len(deltas):
        raise InputValueError(
            f"`class_probs` [B, A, C] and `box_deltas` [B, A, 4] should be batches of the same "
            f"size. Received: shapes {list(probs.shape)} and {list(deltas.shape)}"
        )
    sizes = np.asarray(image_size, dtype=object)
    if sizes.ndim == 2:
        if len(sizes) != len(probs):
            raise InputValueError(
                f"`image_size` should be one (width, height) or one per image ({len(probs)}). "
                f"Received: {len(sizes)} sizes"
            )
        sizes = [tuple(s) for s in sizes]
    else:
        sizes = [image_size] * len(probs)
    return [
        postprocess(p, d, anchors, image_size=s, **options)
        for p, d, s in zip(probs, deltas, sizes, strict=True)
    ]


def _check_image_size_wh(image_size) -> tuple[float, float]:
    items = tuple(image_size) if isinstance(image_size, Sequence | np.ndarray) else ()
    if len(items) != 2 or not all(
        isinstance(x, int | float | np.number) and not isinstance(x, bool) and x > 0 for x in items
    ):
        raise InputValueError(
            "`image_size` should be (width, height) in pixels, two numbers > 0. "
            f"Received: image_size={image_size!r}"
        )
    return float(items[0]), float(items[1])


def _check_options(score_threshold, iou_threshold, max_detections, pre_nms_top_k) -> None:
    if not isinstance(score_threshold, int | float | np.number) or not 0 <= score_threshold < 1:
        raise InputValueError(
            f"`score_threshold` should be in [0, 1). Received: score_threshold={score_threshold!r}"
        )
    _check_iou_threshold(iou_threshold)
    for name, value in (("max_detections", max_detections), ("pre_nms_top_k", pre_nms_top_k)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise InputValueError(f"`{name}` should be an integer >= 1. Received: {name}={value!r}")
