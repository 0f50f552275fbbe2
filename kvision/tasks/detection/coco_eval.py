"""COCO box mAP through pycocotools, streaming over images.

The evaluator keeps only each image's boxes (small arrays, never pixels) and hands everything to
pycocotools' ``COCOeval`` (``iouType="bbox"``) in :meth:`CocoEvaluator.result`, so the numbers are
pycocotools' own: 101-point interpolated AP averaged over IoU 0.50:0.05:0.95, up to 100 detections
per image, size buckets small (< 32**2 px), medium, large (>= 96**2 px)::

    ev = CocoEvaluator(["cat", "dog"])
    for image_id, (gt_boxes, gt_classes), dets in ...:
        ev.update(image_id, gt_boxes, gt_classes, dets)      # dets: a Detections
    ev.result()["mAP@[.5:.95]"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Sequence

import numpy as np

from kvision.errors import InputTypeError, InputValueError, MissingDependencyError
from kvision.tasks.detection.boxes import as_boxes, box_area, xyxy_to_xywh
from kvision.tasks.detection.nms import Detections

__all__ = ["CocoEvaluator"]

# result key -> index in COCOeval.stats (the order summarize() prints).
_STATS = {
    "mAP@[.5:.95]": 0,
    "mAP@.5": 1,
    "mAP@.75": 2,
    "AP_small": 3,
    "AP_medium": 4,
    "AP_large": 5,
    "AR@100": 8,
}


@dataclasses.dataclass
class _Image:
    gt_boxes: np.ndarray  # [N, 4] xyxy px
    gt_classes: np.ndarray  # [N] int32
    gt_iscrowd: np.ndarray  # [N] int32 0/1
    gt_area: np.ndarray  # [N] float32 px**2
    detections: Detections
    width: int | None
    height: int | None


class CocoEvaluator:
    """Streaming COCO box evaluation (Lin et al. 2014, "Microsoft COCO") computed by pycocotools.

    Class index ``i`` is COCO category ``category_ids[i]``. Metrics are pycocotools' values,
    except that its ``-1`` ("no ground truth to score", e.g. no small objects, or a class absent
    from the ground truth) is reported as ``None``. As in COCO, detections of a class without
    ground truth affect no number.

    Args:
        labels: class names; class index ``i`` is ``labels[i]``.
        category_ids: COCO category id per class index, strictly increasing (kvision's mapping:
            indices follow ascending ids). Default ``1 .. len(labels)``.

    Raises:
        InputValueError: empty or duplicate ``labels``, or ``category_ids`` of another length or
            not strictly increasing integers.

    Example:
        >>> ev = CocoEvaluator(["cat"])
        >>> ev.update(1, [[10, 10, 50, 50]], [0], ([[10, 10, 50, 50]], [0.9], [0]))
        >>> round(ev.result()["mAP@.5"], 6)
        1.0
    """

    def __init__(self, labels: Sequence[str], category_ids: Sequence[int] | None = None):
        labels = (
            list(labels) if isinstance(labels, Sequence) and not isinstance(labels, str) else []
        )
        if not labels or len(set(labels)) != len(labels):
            raise InputValueError(
                f"`labels` should be a non-empty list of distinct class names. Received: "
                f"labels={labels!r}"
            )
        ids = list(range(1, len(labels) + 1)) if category_ids is None else list(category_ids)
        if (
            len(ids) != len(labels)
            or not all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in ids)
            or any(b <= a for a, b in zip(ids, ids[1:], strict=False))
        ):
            raise InputValueError(
                f"`category_ids` should be {len(labels)} strictly increasing integers, one per "
                f"label. Received: category_ids={category_ids!r}"
            )
        self.labels = labels
        self.category_ids = [int(c) for c in ids]
        self._images: dict[int, _Image] = {}

    @property
    def num_images(self) -> int:
        """Images added so far."""
        return len(self._images)

    def update(
        self,
        image_id: int,
        gt_boxes,
        gt_classes,
        detections,
        *,
        width: int | None = None,
        height: int | None = None,
        gt_iscrowd=None,
        gt_area=None,
    ) -> None:
        """Add one image's ground truth and detections.

        Args:
            image_id: the image's id, an integer not added before.
            gt_boxes: float ``[N, 4]`` xyxy in pixels; ``N`` may be 0.
            gt_classes: int ``[N]`` class indices.
            detections: a :class:`~kvision.tasks.detection.nms.Detections` or a ``(boxes [K, 4]
                xyxy px, scores [K], classes [K])`` tuple; ``K`` may be 0.
            width: image width in pixels (optional, recorded in the COCO image entry).
            height: image height in pixels (optional).
            gt_iscrowd: ``[N]`` 0/1 crowd flags (default all 0). A detection matched to a crowd
                region counts as neither true nor false positive.
            gt_area: ``[N]`` areas in pixels**2 for the small/medium/large buckets (default the
                box areas). COCO uses the segmentation mask's area when there is one: pass it to
                reproduce the official numbers.

        Raises:
            InputTypeError: ``image_id`` is not an integer, or ``detections`` has the wrong type.
            InputValueError: the id was already added; shapes disagree; a class index is outside
                ``labels``; a box, score or area is not finite (or an area negative).
        """
        if not isinstance(image_id, int | np.integer) or isinstance(image_id, bool):
            raise InputTypeError(f"`image_id` should be an integer. Received: {image_id!r}")
        image_id = int(image_id)
        if image_id in self._images:
            raise InputValueError(f"`image_id` {image_id} was already added to this evaluator")
        boxes = _finite(as_boxes(gt_boxes, "gt_boxes"), "gt_boxes")
        n = len(boxes)
        classes = self._classes(gt_classes, n, "gt_classes")
        dets = _as_detections(detections)
        _finite(dets.boxes, "detections.boxes")
        _finite(dets.scores, "detections.scores")
        self._classes(dets.classes, len(dets), "detections.classes")
        iscrowd = np.zeros(n, np.int32) if gt_iscrowd is None else np.asarray(gt_iscrowd)
        if iscrowd.shape != (n,) or not np.isin(iscrowd, (0, 1)).all():
            raise InputValueError(
                f"`gt_iscrowd` should be {n} values 0 or 1 (one per gt box). Received: "
                f"gt_iscrowd={gt_iscrowd!r}"
            )
        area = box_area(boxes) if gt_area is None else np.asarray(gt_area, dtype=np.float32)
        if area.shape != (n,) or not (np.isfinite(area) & (area >= 0)).all():
            raise InputValueError(
                f"`gt_area` should be {n} finite areas >= 0 in pixels**2 (one per gt box). "
                f"Received: gt_area={gt_area!r}"
            )
        for name, value in (("width", width), ("height", height)):
            if value is not None and (not isinstance(value, int | np.integer) or value <= 0):
                raise InputValueError(
                    f"`{name}` should be None or an integer > 0. Received: {name}={value!r}"
                )
        self._images[image_id] = _Image(
            boxes,
            classes,
            iscrowd.astype(np.int32),
            area,
            dets,
            None if width is None else int(width),
            None if height is None else int(height),
        )

    def _classes(self, classes, n: int, name: str) -> np.ndarray:
        c = np.asarray(classes).reshape(-1) if np.size(classes) else np.zeros(0, np.int32)
        if c.shape != (n,) or (n and not np.issubdtype(c.dtype, np.integer)):
            raise InputValueError(
                f"`{name}` should be {n} integer class indices. Received: shape "
                f"{list(np.shape(classes))}, dtype {np.asarray(classes).dtype}"
            )
        bad = c[(c < 0) | (c >= len(self.labels))]
        if bad.size:
            raise InputValueError(
                f"`{name}` holds class index {int(bad[0])}; allowed: 0 to "
                f"{len(self.labels) - 1} ({len(self.labels)} labels)"
            )
        return c.astype(np.int32)

    def merge(self, other: CocoEvaluator) -> CocoEvaluator:
        """Add ``other``'s images to this evaluator (e.g. from parallel workers); returns self.

        Raises:
            InputTypeError: ``other`` is not a CocoEvaluator.
            InputValueError: the labels or category ids differ, or an image id is in both.
        """
        if not isinstance(other, CocoEvaluator):
            raise InputTypeError(f"`other` should be a CocoEvaluator. Received: {type(other)}")
        if other.labels != self.labels or other.category_ids != self.category_ids:
            raise InputValueError(
                "`other` should have the same labels and category_ids. Received: "
                f"{other.labels} / {other.category_ids}, expected {self.labels} / "
                f"{self.category_ids}"
            )
        common = sorted(set(self._images) & set(other._images))
        if common:
            raise InputValueError(f"Image ids {common[:5]} are in both evaluators")
        self._images.update(other._images)
        return self

    def to_coco(self) -> tuple[dict, list[dict]]:
        """The accumulated data in COCO's formats (boxes as ``[x, y, w, h]`` pixels).

        Returns:
            ``(ground_truth, results)``: a COCO dataset dict (``images``, ``categories``,
            ``annotations`` with ids from 1) and the list of result dicts (``image_id``,
            ``category_id``, ``bbox``, ``score``), as json-dumpable Python values.
        """
        images, annotations, results = [], [], []
        cats = self.category_ids
        for image_id, im in self._images.items():
            entry = {"id": image_id}
            if im.width is not None:
                entry["width"] = im.width
            if im.height is not None:
                entry["height"] = im.height
            images.append(entry)
            for box, c, crowd, area in zip(
                xyxy_to_xywh(im.gt_boxes), im.gt_classes, im.gt_iscrowd, im.gt_area, strict=True
            ):
                annotations.append(
                    {
                        "id": len(annotations) + 1,  # COCOeval treats gt id 0 as "unmatched"
                        "image_id": image_id,
                        "category_id": cats[c],
                        "bbox": [float(v) for v in box],
                        "area": float(area),
                        "iscrowd": int(crowd),
                    }
                )
            d = im.detections
            for box, s, c in zip(xyxy_to_xywh(d.boxes), d.scores, d.classes, strict=True):
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": cats[c],
                        "bbox": [float(v) for v in box],
                        "score": float(s),
                    }
                )
        categories = [{"id": i, "name": n} for i, n in zip(cats, self.labels, strict=True)]
        gt = {"images": images, "categories": categories, "annotations": annotations}
        return gt, results

    def result(self) -> dict:
        """The COCO metrics of all images added, computed by pycocotools' ``COCOeval``.

        Returns:
            ``{"mAP@[.5:.95]", "mAP@.5", "mAP@.75", "AP_small", "AP_medium", "AP_large",
            "AR@100"}``: floats in ``[0, 1]`` or ``None`` where there is no ground truth to score
            (pycocotools' -1); ``"per_class_AP"`` and ``"per_class_AP50"``: ``{label: AP at
            IoU .5:.95 / at IoU .5}``, ``None`` for a class without ground truth.

        Raises:
            InputValueError: no image was added.
            MissingDependencyError: pycocotools is not installed.
        """
        if not self._images:
            raise InputValueError("No images were added: call update() before result()")
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError as e:
            raise MissingDependencyError(
                "COCO evaluation needs pycocotools: pip install 'kvision[detection]'"
            ) from e

        gt_data, results = self.to_coco()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt = COCO()
            gt.dataset = gt_data
            gt.createIndex()
            if results:
                dt = gt.loadRes(results)
            else:  # loadRes cannot take an empty list
                dt = COCO()
                dt.dataset = {**gt_data, "annotations": []}
                dt.createIndex()
            ev = COCOeval(gt, dt, iouType="bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()

        out = {key: _value(ev.stats[i]) for key, i in _STATS.items()}
        precision = ev.eval["precision"]  # [IoU T, recall R, class K, area A, max dets M]
        area_all = ev.params.areaRngLbl.index("all")
        max_100 = ev.params.maxDets.index(100)
        iou_50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
        out["per_class_AP"], out["per_class_AP50"] = {}, {}
        for label, cat in zip(self.labels, self.category_ids, strict=True):
            p = precision[:, :, ev.params.catIds.index(cat), area_all, max_100]
            out["per_class_AP"][label] = _mean_valid(p)
            out["per_class_AP50"][label] = _mean_valid(p[iou_50])
        return out


def _as_detections(detections) -> Detections:
    if isinstance(detections, Detections):
        return detections
    if isinstance(detections, tuple | list) and len(detections) == 3:
        return Detections(*detections)
    raise InputTypeError(
        "`detections` should be a Detections or a (boxes, scores, classes) tuple. Received: "
        f"{type(detections).__name__}"
    )


def _finite(x: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise InputValueError(f"`{name}` should be finite. Received values including NaN or inf")
    return x


def _value(v) -> float | None:
    return None if v < 0 else float(v)


def _mean_valid(p: np.ndarray) -> float | None:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else None
