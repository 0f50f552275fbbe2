"""Streaming segmentation metrics: a confusion matrix, and instance matching for nuclei.

Semantic (from one ``C x C`` confusion matrix accumulated over the batches; ``ignore_index``
pixels are not counted):

- ``IoU_c = TP / (TP + FP + FN)``, ``Dice_c = 2 TP / (2 TP + FP + FN)`` per class;
- ``mIoU`` and ``mean_Dice``: means over the classes present in the ground truth or the
  prediction (a class absent from both has no IoU, as in mmsegmentation's ``nan`` entries);
- ``pixel_accuracy``: correct labelled pixels / labelled pixels;
- ``foreground_Dice``: Dice of "any class but the first (background)" vs background, the
  nuclei figure.

Instances (when the ground truth has instance ids and the contract's ``postprocess`` has an
``instances`` entry): predicted instances come from the class mask
(:func:`instances_from_classes`) and are matched to the ground truth with stardist's
``matching`` (Schmidt et al., MICCAI 2018: optimal one-to-one assignment, IoU above the
threshold); TP / FP / FN are summed over the images per threshold, then ``F1 = 2TP / (2TP + FP +
FN)`` and stardist's average precision ``AP = TP / (TP + FP + FN)``, at IoU 0.5 and averaged over
0.5:0.05:0.9.
"""

from __future__ import annotations

import numpy as np

from kvision.errors import MissingDependencyError
from kvision.tasks.base import StreamingMetric

INSTANCE_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.91, 0.05), 2).tolist())


def confusion_matrix(truth, pred, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """int64 ``[C, C]`` counts, rows = truth, columns = prediction; ``ignore_index`` and ids
    outside ``0..C-1`` in ``truth`` are skipped."""
    t = np.asarray(truth).astype(np.int64).ravel()
    p = np.asarray(pred).astype(np.int64).ravel()
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    return np.bincount(
        t[keep] * num_classes + np.clip(p[keep], 0, num_classes - 1), minlength=num_classes**2
    ).reshape(num_classes, num_classes)


def scores_from_confusion(cm: np.ndarray, labels) -> dict:
    """The semantic metrics of a confusion matrix (module docstring), JSON-ready."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    union = tp + fp + fn
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    dice = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    total = cm.sum()
    fg_tp = cm[1:, 1:].sum()
    fg_fp, fg_fn = cm[0, 1:].sum(), cm[1:, 0].sum()
    fg = 2 * fg_tp + fg_fp + fg_fn

    def clean(v):
        return None if np.isnan(v) else round(float(v), 6)

    return {
        "mIoU": clean(np.nanmean(iou)) if present.any() else None,
        "mean_Dice": clean(np.nanmean(dice)) if present.any() else None,
        "pixel_accuracy": round(float(tp.sum() / total), 6) if total else None,
        "foreground_Dice": round(float(2 * fg_tp / fg), 6) if len(cm) > 1 and fg else None,
        "per_class_IoU": {str(k): clean(v) for k, v in zip(labels, iou, strict=True)},
        "per_class_Dice": {str(k): clean(v) for k, v in zip(labels, dice, strict=True)},
        "labelled_pixels": int(total),
    }


def instances_from_classes(classes, seed_classes, foreground_classes, min_size: int = 10,
                           grow_px: int = 3) -> np.ndarray:  # fmt: skip
    """Instance ids from a class mask: connected components of the seed (interior) classes
    (scikit-image ``label``, 4-connectivity), components under ``min_size`` px dropped, each
    grown by up to ``grow_px`` px (``expand_labels``) into the foreground classes (the
    boundary), never into background.

    Args:
        classes: int ``[H, W]`` class ids.
        seed_classes: the interior class ids.
        foreground_classes: every object class id (interior and boundary).
        min_size: smallest kept component in pixels (default 10).
        grow_px: how far an instance grows into the boundary (default 3).

    Returns:
        int32 ``[H, W]``, 0 = background, 1..n instances.
    """
    from skimage.measure import label
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import expand_labels

    classes = np.asarray(classes)
    seeds = label(np.isin(classes, list(seed_classes)), connectivity=1)
    if min_size > 1 and seeds.max():
        seeds = remove_small_objects(seeds, max_size=int(min_size) - 1)
    grown = expand_labels(seeds, distance=grow_px) if grow_px else seeds
    grown[~np.isin(classes, list(foreground_classes))] = 0
    ids, inverse = np.unique(grown, return_inverse=True)
    return inverse.reshape(grown.shape).astype(np.int32) if ids[0] == 0 else grown.astype(np.int32)


def _matching(truth, pred, threshold: float):
    try:
        from stardist.matching import matching
    except ImportError:
        raise MissingDependencyError(
            "Nuclei instance metrics use stardist's matching: pip install 'kvision[segmentation]'"
        ) from None
    return matching(truth, pred, thresh=threshold)


class InstanceCounts:
    """TP / FP / FN per IoU threshold, summed over images (stardist's dataset aggregation)."""

    def __init__(self, thresholds=INSTANCE_THRESHOLDS):
        self.thresholds = tuple(thresholds)
        self.counts = {t: np.zeros(3, np.int64) for t in self.thresholds}
        self.images = 0

    def update(self, truth, pred) -> None:
        truth = np.asarray(truth).astype(np.int32)
        pred = np.asarray(pred).astype(np.int32)
        for t in self.thresholds:
            m = _matching(truth, pred, t)
            self.counts[t] += (m.tp, m.fp, m.fn)
        self.images += 1

    def result(self) -> dict:
        if not self.images:
            return {}
        out, aps = {}, []
        for t in self.thresholds:
            tp, fp, fn = (int(v) for v in self.counts[t])
            ap = tp / (tp + fp + fn) if tp + fp + fn else None
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
            aps.append(ap)
            if t == 0.5:
                out.update({"instance_F1@0.5": f1, "instance_AP@0.5": ap,
                            "instance_TP@0.5": tp, "instance_FP@0.5": fp,
                            "instance_FN@0.5": fn})  # fmt: skip
        if all(a is not None for a in aps):
            out["instance_AP@[.5:.9]"] = float(np.mean(aps))
        return out


class SegmentationMetric(StreamingMetric):
    """mIoU and friends (and instance F1 / AP) streamed over batches.

    ``update(outputs, targets)`` takes the batch's raw outputs and its :class:`SegmentationTarget`
    list (ground truth at each image's own size); predictions are decoded to that size first.
    Per image, only its IoU is kept (for the worst-images gallery).
    """

    def __init__(self, task, contract):
        self.task, self.contract = task, contract
        self.labels = list(contract.labels)
        self.cm = np.zeros((len(self.labels),) * 2, np.int64)
        self.ignore_index = int((contract.postprocess or {}).get("ignore_index", 255))
        self.instance_cfg = (contract.postprocess or {}).get("instances")
        self.instances = InstanceCounts() if self.instance_cfg else None
        self.per_image: list[tuple[str, float | None]] = []

    def update(self, outputs, targets) -> None:
        sizes = [(t.classes.shape[1], t.classes.shape[0]) for t in targets]
        for target, pred in zip(targets, self.task.decode(outputs, self.contract, sizes),
                                strict=True):  # fmt: skip
            cm = confusion_matrix(target.classes, pred.classes, len(self.labels), self.ignore_index)
            self.cm += cm
            self.per_image.append((target.name, scores_from_confusion(cm, self.labels)["mIoU"]))
            if self.instances is not None and target.instances is not None:
                self.instances.update(target.instances, pred.instance_ids(self.contract))

    def result(self) -> dict:
        out = scores_from_confusion(self.cm, self.labels)
        out["n"] = len(self.per_image)
        if self.instances is not None:
            out.update(self.instances.result())
        return out
