"""Recall of an approximate search against exact search."""

from __future__ import annotations

import numpy as np

from kvision.errors import InputValueError
from kvision.index.vector_index import check_k


def recall_at_k(approx_ids, exact_ids, k: int = 10) -> float:
    """The fraction of the exact top-``k`` ids that the approximate top-``k`` found, averaged
    over queries.

    Per query: ``|approx[:k] & exact[:k]| / |exact[:k]|``, where ``-1`` padding is not an id
    (a query whose exact list has fewer than ``k`` ids is scored on those it has; one with none
    is left out of the average).

    Args:
        approx_ids: ``int [Q, >= k]`` ids from the approximate index, best first.
        exact_ids: ``int [Q, >= k]`` ids from exact search for the same queries.
        k: how many of each list to compare (default 10).

    Returns:
        Recall in [0, 1].

    Raises:
        InputValueError: not 2-D integer arrays, different query counts, fewer than ``k``
            columns, ``k < 1``, or no query with an exact id.

    Example:
        >>> recall = recall_at_k([[1, 2, 3], [4, 5, 6]], [[1, 3, 9], [4, 5, 6]], k=3)
        >>> round(recall, 4)  # (2/3 + 3/3) / 2
        0.8333
    """
    k = check_k(k)
    approx = _id_matrix(approx_ids, "approx_ids", k)
    exact = _id_matrix(exact_ids, "exact_ids", k)
    if len(approx) != len(exact):
        raise InputValueError(
            "`approx_ids` and `exact_ids` should have one row per query each. "
            f"Received: {len(approx)} and {len(exact)} rows"
        )
    recalls = []
    for found, truth in zip(approx[:, :k], exact[:, :k], strict=True):
        truth = set(truth[truth >= 0].tolist())
        if truth:
            recalls.append(len(truth.intersection(found.tolist())) / len(truth))
    if not recalls:
        raise InputValueError("`exact_ids` holds no id (only -1 padding): recall is undefined.")
    return float(np.mean(recalls))


def _id_matrix(ids, name: str, k: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise InputValueError(
            f"`{name}` should be a 2-D integer array [Q, k]. "
            f"Received: dtype={arr.dtype}, shape={list(arr.shape)}"
        )
    if arr.shape[1] < k:
        raise InputValueError(
            f"`{name}` should have at least k={k} columns. Received: shape={list(arr.shape)}"
        )
    return arr
