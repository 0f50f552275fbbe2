"""Retrieval and pair-verification metrics for embedding models.

Retrieval (Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020), each query
ranked against the references by cosine similarity, the query itself excluded:

- ``recall@k``: 1 for a query when ANY of its ``k`` nearest neighbours shares its label (the
  "Recall@K" of the deep metric learning literature, which is precision@1 for ``k = 1``), the
  mean over queries;
- ``mAP@R``: with ``R`` the number of references that share the query's label, the precision at
  each position ``i <= R`` that holds a match, summed and divided by ``R``; the mean over
  queries. It rewards ranking all ``R`` matches first, which recall@k does not see.

:func:`retrieval_metrics` scores leave-one-out retrieval in a set of embeddings (every item a
query against all the others), as on the test classes of CUB-200 / Cars196 / SOP, which training
never saw. As in pytorch-metric-learning's ``AccuracyCalculator``, a query whose label no other
item has ("lone query") cannot be scored and is left out of every metric.

Verification (same / different pairs, the Siamese use): :func:`choose_threshold` picks the
cosine-similarity threshold that maximises accuracy on validation pairs; :func:`verify_pairs`
applies it.

Example:
    >>> retrieval_metrics(embeddings, labels)   # {"recall@1": .., "mAP@R": .., "n": ..}
    >>> threshold, accuracy = choose_threshold(val_similarities, val_same)
    >>> same = verify_pairs(cosine_similarity(a, b), threshold)
"""

from __future__ import annotations

import numpy as np

from kvision.errors import InputValueError

DEFAULT_KS = (1, 5, 10)


def _check_ks(ks) -> tuple[int, ...]:
    ks = tuple(ks) if isinstance(ks, (list, tuple)) else (ks,)
    if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise InputValueError(f"`ks` should be integers >= 1. Received: ks={ks}")
    return tuple(int(k) for k in ks)


def _check_labels(labels, name: str, rows: int | None = None) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InputValueError(
            f"`{name}` should be a 1-D integer array. "
            f"Received: dtype={arr.dtype}, shape={list(arr.shape)}"
        )
    if rows is not None and len(arr) != rows:
        raise InputValueError(f"`{name}` should have {rows} entries. Received: {len(arr)}")
    return arr.astype(np.int64)


def _check_neighbors(query_labels, neighbor_labels, columns: int):
    queries = _check_labels(query_labels, "query_labels")
    neighbors = np.asarray(neighbor_labels)
    if neighbors.ndim != 2 or len(neighbors) != len(queries) or (
            neighbors.size and neighbors.dtype.kind not in "iu"):  # fmt: skip
        raise InputValueError(
            f"`neighbor_labels` should be an integer array [Q, >= {columns}] with one row per "
            f"query (Q={len(queries)}). Received: dtype={neighbors.dtype}, "
            f"shape={list(neighbors.shape)}"
        )
    if neighbors.shape[1] < columns:
        raise InputValueError(
            f"`neighbor_labels` should have at least {columns} columns (ranked neighbours). "
            f"Received: shape={list(neighbors.shape)}"
        )
    if not len(queries):
        raise InputValueError("`query_labels` is empty: there is no query to score.")
    return queries, neighbors


def _hits(queries: np.ndarray, neighbors: np.ndarray, k: int) -> np.ndarray:
    """bool ``[Q]``: a match among the first ``k`` neighbours (all of them when fewer)."""
    return np.any(neighbors[:, :k] == queries[:, None], axis=1)


def _average_precision_at_r(queries: np.ndarray, neighbors: np.ndarray, r: np.ndarray):
    """float64 ``[Q]`` AP@R per query; every ``r >= 1``, ``neighbors`` has ``>= max(r)``
    columns."""
    width = int(r.max())
    relevant = (neighbors[:, :width] == queries[:, None]) & (np.arange(width) < r[:, None])
    precision = np.cumsum(relevant, axis=1) / np.arange(1, width + 1)
    return np.sum(precision * relevant, axis=1) / r


def recall_at_k(query_labels, neighbor_labels, ks=DEFAULT_KS) -> dict[int, float]:
    """Retrieval recall@k: the fraction of queries with a same-label item among their ``k``
    nearest neighbours (module docstring).

    Args:
        query_labels: int ``[Q]`` labels of the queries.
        neighbor_labels: int ``[Q, >= max(ks)]`` labels of each query's neighbours, nearest
            first, the query itself excluded.
        ks: the ``k`` values (default ``(1, 5, 10)``).

    Returns:
        ``{k: recall}`` for each ``k``, in [0, 1].

    Raises:
        InputValueError: ``ks`` not integers >= 1, no query, non-integer labels, or
            ``neighbor_labels`` not ``[Q, >= max(ks)]``.

    Example:
        >>> recall_at_k([0, 1], [[1, 0], [0, 0]], ks=(1, 2))   # query 0 matches at rank 2
        {1: 0.0, 2: 0.5}
    """
    ks = _check_ks(ks)
    queries, neighbors = _check_neighbors(query_labels, neighbor_labels, max(ks))
    return {k: float(np.mean(_hits(queries, neighbors, k))) for k in ks}


def map_at_r(query_labels, neighbor_labels, r_per_query) -> float:
    """mAP@R (Musgrave et al., ECCV 2020; module docstring), the mean over the queries with
    ``R >= 1``; queries with ``R = 0`` (no other item of their label) are left out.

    For one query with ``R`` matches: ``AP@R = (1 / R) * sum_{i=1..R} P(i) * rel(i)``, where
    ``rel(i)`` is 1 when neighbour ``i`` shares the query's label and ``P(i)`` is the fraction
    of matches among the first ``i`` neighbours.

    Args:
        query_labels: int ``[Q]`` labels of the queries.
        neighbor_labels: int ``[Q, >= max(R)]`` labels of the ranked neighbours, nearest first,
            the query itself excluded.
        r_per_query: int ``[Q]``, ``R`` of each query.

    Returns:
        mAP@R in [0, 1].

    Raises:
        InputValueError: bad shapes, negative ``R``, fewer than ``max(R)`` columns, or no query
            with ``R >= 1``.

    Example:
        >>> map_at_r([0], [[0, 1, 0]], [2])   # (1/1 + 0 * 1/2) / 2
        0.5
    """
    r = _check_labels(r_per_query, "r_per_query", len(np.asarray(query_labels).reshape(-1)))
    if (r < 0).any():
        raise InputValueError(f"`r_per_query` should be >= 0. Received: min {int(r.min())}")
    queries, neighbors = _check_neighbors(query_labels, neighbor_labels, int(r.max(initial=0)))
    scored = r > 0
    if not scored.any():
        raise InputValueError("`r_per_query` is 0 for every query: mAP@R is undefined.")
    return float(np.mean(_average_precision_at_r(queries[scored], neighbors[scored], r[scored])))


def _unit_rows(embeddings, name: str = "embeddings") -> np.ndarray:
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2:
        raise InputValueError(
            f"`{name}` should be a 2-D array [N, D]. Received: shape={list(emb.shape)}"
        )
    if not np.isfinite(emb).all():
        raise InputValueError(f"`{name}` holds NaN or infinite values.")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def _ranked(sims: np.ndarray, k: int) -> np.ndarray:
    """int ``[rows, k]`` column indices of the ``k`` largest similarities per row, best first,
    ties by lower index (at the cut-off, an arbitrary one of the tied)."""
    if k < sims.shape[1]:
        part = np.sort(np.argpartition(-sims, k - 1, axis=1)[:, :k], axis=1)
    else:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)[:, :k]


def retrieval_metrics(embeddings, labels, ks=DEFAULT_KS, chunk_size: int = 1024) -> dict:
    """Leave-one-out retrieval in a set of embeddings: recall@k and mAP@R (module docstring).

    Each item is a query against all the other items, ranked by exact cosine similarity in
    float32 NumPy, ``chunk_size`` queries at a time (memory ``chunk_size x N`` float32: 40 MB
    for 1024 x 10k). When fewer than ``k`` other items exist, recall@k uses all of them.

    Args:
        embeddings: float ``[N, D]`` (normalised here; a zero row has similarity 0 to all).
        labels: int ``[N]`` class labels.
        ks: the recall ``k`` values (default ``(1, 5, 10)``).
        chunk_size: queries per similarity block (default 1024).

    Returns:
        ``{"recall@k": float for each k, "mAP@R": float, "n": scored queries,
        "lone_queries": queries left out}``; the metrics are ``None`` when no query can be
        scored (every label unique, or fewer than 2 items).

    Raises:
        InputValueError: ``embeddings`` not ``[N, D]`` or not finite, ``labels`` not ``[N]``
            integers, bad ``ks`` or ``chunk_size < 1``.

    Example:
        >>> emb = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
        >>> retrieval_metrics(emb, [0, 0, 1, 1], ks=(1,))
        {'recall@1': 1.0, 'mAP@R': 1.0, 'n': 4, 'lone_queries': 0}
    """
    ks = _check_ks(ks)
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise InputValueError(f"`chunk_size` should be an integer >= 1. Received: {chunk_size}")
    emb = _unit_rows(embeddings)
    labels = _check_labels(labels, "labels", len(emb))
    n = len(emb)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r = (counts[inverse] - 1).astype(np.int64) if n else np.zeros(0, np.int64)
    hits = {k: 0 for k in ks}
    ap_sum, scored = 0.0, 0
    for start in range(0, n, int(chunk_size)):
        rows = np.arange(start, min(start + int(chunk_size), n))
        rows = rows[r[rows] > 0]
        if not len(rows):
            continue
        sims = emb[rows] @ emb.T
        sims[np.arange(len(rows)), rows] = -np.inf
        width = min(n - 1, max(max(ks), int(r[rows].max())))
        neighbors = labels[_ranked(sims, width)]
        queries = labels[rows]
        for k in ks:
            hits[k] += int(_hits(queries, neighbors, k).sum())
        ap_sum += float(_average_precision_at_r(queries, neighbors, r[rows]).sum())
        scored += len(rows)
    out = {f"recall@{k}": (hits[k] / scored if scored else None) for k in ks}
    out["mAP@R"] = ap_sum / scored if scored else None
    out.update(n=scored, lone_queries=n - scored)
    return out


class StreamingEmbeddings:
    """Retrieval metrics of embeddings fed batch by batch.

    Retrieval ranks every item against all the others, so unlike the other streaming metrics
    this one keeps every embedding (float32 ``[N, D]``: 5 MB for 10k x 128) and its label; the
    images and raw outputs are not kept.

    Args:
        ks: the recall ``k`` values (default ``(1, 5, 10)``).

    Example:
        >>> metric = StreamingEmbeddings()
        >>> for images, labels in test_ds:
        ...     metric.update(embedder(images, training=False), labels)
        >>> metric.result()   # retrieval_metrics of everything seen
    """

    def __init__(self, ks=DEFAULT_KS):
        self.ks = _check_ks(ks)
        self._embeddings: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(e) for e in self._embeddings)

    def update(self, embeddings, labels) -> None:
        """Add one batch: float ``[B, D]`` embeddings and int ``[B]`` (or ``[B, 1]``) labels.

        Raises:
            InputValueError: bad shapes, or an embedding size that differs from earlier batches.
        """
        emb = np.array(embeddings, np.float32)
        if emb.ndim != 2:
            raise InputValueError(
                f"`embeddings` should be [B, D]. Received: shape={list(emb.shape)}"
            )
        if self._embeddings and emb.shape[1] != self._embeddings[0].shape[1]:
            raise InputValueError(
                f"`embeddings` should keep the size D={self._embeddings[0].shape[1]} of the "
                f"earlier batches. Received: shape={list(emb.shape)}"
            )
        self._labels.append(_check_labels(labels, "labels", len(emb)))
        self._embeddings.append(emb)

    def result(self) -> dict:
        """:func:`retrieval_metrics` of every item seen (``None`` metrics before any query can
        be scored)."""
        if not self._embeddings:
            return retrieval_metrics(np.zeros((0, 1), np.float32), np.zeros(0, np.int64), self.ks)
        return retrieval_metrics(
            np.concatenate(self._embeddings), np.concatenate(self._labels), self.ks
        )


def cosine_similarity(a, b) -> np.ndarray:
    """float32 ``[N]`` cosine similarity of each row of ``a`` with the same row of ``b``
    (``[N, D]`` each): the score of a pair of embeddings.

    Raises:
        InputValueError: ``a`` and ``b`` not 2-D of the same shape, or not finite.

    Example:
        >>> round(float(cosine_similarity([[1.0, 0.0]], [[1.0, 1.0]])[0]), 4)
        0.7071
    """
    a, b = _unit_rows(a, "a"), _unit_rows(b, "b")
    if a.shape != b.shape:
        raise InputValueError(
            f"`a` and `b` should have the same shape. Received: {list(a.shape)}, {list(b.shape)}"
        )
    return np.sum(a * b, axis=1)


def choose_threshold(similarities, same) -> tuple[float, float]:
    """The similarity threshold that best separates same from different pairs on validation
    data, and its accuracy (a pair is "same" when its similarity is ``>= threshold``).

    Accuracy only changes between consecutive distinct similarities, so each candidate is the
    midpoint between two of them (the lowest similarity itself for "all same", the next float
    above the highest for "all different"). When several candidates tie for the best accuracy,
    the middle one (the lower of the two middle ones for an even count) is returned.

    Args:
        similarities: float ``[N]`` pair similarities (cosine, or any higher-is-closer score).
        same: bool (or 0 / 1) ``[N]``, whether each pair shows the same identity / class.

    Returns:
        ``(threshold, accuracy)``, floats.

    Raises:
        InputValueError: empty or non-finite ``similarities``, ``same`` not boolean or 0 / 1, or
            different lengths.

    Example:
        >>> choose_threshold([0.1, 0.3, 0.8, 0.9], [False, False, True, True])
        (0.55, 1.0)
    """
    sims = np.asarray(similarities, np.float64).reshape(-1)
    truth = np.asarray(same).reshape(-1)
    if not len(sims) or not np.isfinite(sims).all():
        raise InputValueError(
            f"`similarities` should be a non-empty array of finite numbers. Received: "
            f"{len(sims)} values{'' if np.isfinite(sims).all() else ' with NaN or inf'}"
        )
    if len(truth) != len(sims) or not np.isin(truth, [0, 1]).all():
        raise InputValueError(
            f"`same` should be {len(sims)} booleans (or 0 / 1), one per similarity. Received: "
            f"{len(truth)} values {np.unique(truth)[:5].tolist()}"
        )
    order = np.argsort(sims, kind="stable")
    sims, truth = sims[order], truth[order].astype(bool)
    n = len(sims)
    # split i: the first i pairs are called different, the rest same
    different_below = np.concatenate([[0], np.cumsum(~truth)])
    same_above = truth.sum() - np.concatenate([[0], np.cumsum(truth)])
    correct = different_below + same_above
    valid = np.ones(n + 1, bool)
    valid[1:n] = sims[1:] > sims[:-1]
    best = correct[valid].max()
    candidates = np.flatnonzero(valid & (correct == best))
    i = int(candidates[(len(candidates) - 1) // 2])
    if i == 0:
        threshold = sims[0]
    elif i == n:
        threshold = np.nextafter(sims[-1], np.inf)
    else:
        threshold = (sims[i - 1] + sims[i]) / 2
    return float(threshold), float(best / n)


def verify_pairs(similarities, threshold: float) -> np.ndarray:
    """bool ``[N]``: ``similarities >= threshold`` (the pair shows the same identity / class).

    Example:
        >>> verify_pairs([0.2, 0.7], 0.5).tolist()
        [False, True]
    """
    return np.asarray(similarities) >= float(threshold)
