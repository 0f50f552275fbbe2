"""Classification metrics in plain NumPy: accuracy, macro F1, per-class scores, confusion matrix.

The result is a JSON-ready dict that goes straight into ``report.json`` (``evaluation`` section)::

    m = classification_metrics([0, 1, 1], [0, 1, 0], labels=["cat", "dog"])
    m["accuracy"], m["confusion_matrix"]    # 0.666..., [[1, 0], [1, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["classification_metrics", "class_ids", "metrics_from_confusion"]


def classification_metrics(y_true, y_pred, labels) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix.

    Scores of a class with nothing to divide by (no prediction for precision, no sample for recall)
    are 0, like ``sklearn.metrics`` with ``zero_division=0``. Macro F1 is the unweighted mean over
    all ``labels``, including classes absent from ``y_true``.

    Args:
        y_true: true class ids, shape ``(N,)``, or one-hot rows, shape ``(N, K)``.
        y_pred: predicted class ids, shape ``(N,)``, or scores/probabilities, shape ``(N, K)``
            (the arg-max is the prediction).
        labels: class names, index = class id (``K`` names); an int ``K`` names them ``"0".."K-1"``.

    Returns:
        ``{"accuracy", "macro_f1", "weighted_f1", "per_class": [{"label", "precision", "recall",
        "f1", "support"}, ...], "confusion_matrix": [[int]] (rows = true, cols = predicted),
        "labels", "n"}``.

    Example:
        >>> classification_metrics([0, 1], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"])["accuracy"]
        1.0
    """
    names = _label_names(labels)
    k = len(names)
    true_ids = class_ids(y_true, "y_true", k)
    pred_ids = class_ids(y_pred, "y_pred", k)
    if len(true_ids) != len(pred_ids):
        raise ValueError(
            "`y_true` and `y_pred` should have the same number of samples. "
            f"Received: len(y_true)={len(true_ids)}, len(y_pred)={len(pred_ids)}"
        )
    if len(true_ids) == 0:
        raise ValueError("`y_true` should contain at least one sample. Received: 0 samples")

    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (true_ids, pred_ids), 1)
    return metrics_from_confusion(cm, names)


def metrics_from_confusion(cm, labels) -> dict:
    """The :func:`classification_metrics` dict from a confusion matrix (rows = true class,
    columns = predicted), e.g. one accumulated batch by batch.

    Args:
        cm: integer array ``(K, K)`` with at least one sample.
        labels: class names (``K``) or the number of classes.

    Example:
        >>> metrics_from_confusion([[1, 0], [1, 1]], ["a", "b"])["accuracy"]
        0.6666666666666666
    """
    names = _label_names(labels)
    cm = np.asarray(cm, dtype=np.int64)
    k = len(names)
    if cm.shape != (k, k):
        raise ValueError(
            f"`cm` should have shape ({k}, {k}) for {k} labels. Received: cm.shape={cm.shape}"
        )
    n = int(cm.sum())
    if n == 0:
        raise ValueError("`y_true` should contain at least one sample. Received: 0 samples")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)

    per_class = [
        {
            "label": names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(k)
    ]
    return {
        "accuracy": float(tp.sum() / n),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / n),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": names,
        "n": n,
    }


def _label_names(labels) -> list[str]:
    if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
        if labels < 1:
            raise ValueError(f"`labels` should be at least 1 class. Received: labels={labels}")
        return [str(i) for i in range(int(labels))]
    if isinstance(labels, str) or not isinstance(labels, (Sequence, np.ndarray)):
        raise TypeError(
            "`labels` should be a list of class names (or the number of classes). "
            f"Received: labels={labels!r}"
        )
    names = [str(name) for name in labels]
    if not names:
        raise ValueError("`labels` should name at least one class. Received: labels=[]")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"`labels` should be unique. Received duplicates: {duplicates}")
    return names


def class_ids(values, argument: str, k: int) -> np.ndarray:
    """Turn class ids ``(N,)`` or per-class rows ``(N, K)`` into validated int ids ``(N,)``."""
    arr = np.asarray(values)
    if arr.ndim == 2:
        if arr.shape[1] != k:
            raise ValueError(
                f"`{argument}` with shape (N, K) should have K={k} columns (one per label). "
                f"Received: {argument}.shape={arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"`{argument}` should be numeric. Received dtype: {arr.dtype}")
        return np.argmax(arr, axis=1) if len(arr) else np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(
            f"`{argument}` should have shape (N,) (class ids) or (N, {k}) (per-class scores). "
            f"Received: {argument}.shape={arr.shape}"
        )
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"`{argument}` should hold integer class ids. Received dtype: {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.round(arr))][:5].tolist()
            raise ValueError(
                f"`{argument}` should hold integer class ids. Received non-integer values: {bad}"
            )
    ids = arr.astype(np.int64)
    out_of_range = (ids < 0) | (ids >= k)
    if np.any(out_of_range):
        bad = sorted(set(ids[out_of_range].tolist()))[:5]
        raise ValueError(
            f"`{argument}` class ids should be between 0 and {k - 1} ({k} labels). Received: {bad}"
        )
    return ids


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(den), where=den > 0)
