"""The :class:`VectorIndex` interface every vector-search backend implements, and the checks of
its inputs (vectors, ids, payloads, ``k``) that all backends share.

Conventions (the same for every backend, so callers never branch on it):

* vectors and queries are ``float32 [N, dim]`` (other float/int arrays are cast; NaN, Infinity,
  and, for ``metric="cosine"``, all-zero rows are refused);
* ids are non-negative ``int64``, unique in the index; ``add(ids=None)`` numbers new vectors
  after the largest id the index has seen;
* ``search`` returns ``(scores [Q, k] float32, ids [Q, k] int64)``, best first. Scores are the
  cosine similarity for ``metric="cosine"`` (higher is better) and the *squared* Euclidean
  distance for ``metric="l2"`` (lower is better). Rows with fewer than ``k`` hits are padded
  with id ``-1`` and score ``NaN``;
* a payload (any JSON value, e.g. the image path) is kept per id and returned by
  :meth:`VectorIndex.payloads`.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError

METRICS = ("cosine", "l2")


class VectorIndex(abc.ABC):
    """A searchable set of ``dim``-dimensional vectors with stable integer ids and payloads.

    Subclasses: :class:`~kvision.index.FaissIndex` (embedded, saved to a folder) and
    :class:`~kvision.index.QdrantIndex` (a Qdrant collection, in-process or on a server).

    Args:
        dim: vector length (a positive int).
        metric: ``"cosine"`` (default) or ``"l2"``.
        contract: the embedding model's input contract as a JSON-ready dict (or an object with
            ``to_dict()``, e.g. :class:`~kvision.models.contract.InputContract`), saved with the
            index so a search embeds queries the way the index was built (default ``None``).

    Raises:
        InputValueError: a bad ``dim``, ``metric`` or ``contract``.
    """

    #: the backend name written to ``meta.json`` (``"faiss"``, ``"qdrant"``)
    backend: str = ""

    def __init__(self, dim: int, metric: str = "cosine", contract=None):
        self.dim = check_dim(dim)
        self.metric = check_metric(metric)
        self.contract = check_contract(contract)

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """The search structure: ``"exact"``, ``"hnsw"`` or ``"ivf"``."""

    @property
    def higher_is_better(self) -> bool:
        """True for cosine similarity scores, False for squared L2 distances."""
        return self.metric == "cosine"

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of vectors that a search can return (deleted ones excluded)."""

    @abc.abstractmethod
    def add(self, vectors, ids=None, payloads=None) -> np.ndarray:
        """Add vectors; return their ids (``int64 [N]``).

        Args:
            vectors: ``float32 [N, dim]``.
            ids: ``int64 [N]`` unique non-negative ids not in the index (default ``None``:
                numbered after the largest id seen).
            payloads: ``N`` JSON-ready values, e.g. image paths (default ``None`` for each).

        Raises:
            InputValueError: wrong shape or dim, non-finite values, zero vectors under cosine,
                duplicate ids or ids already in the index, a payload that is not JSON-ready.
        """

    @abc.abstractmethod
    def delete(self, ids) -> int:
        """Delete the vectors with these ids; return how many were deleted.

        Raises:
            InputValueError: an id that is not in the index.
        """

    @abc.abstractmethod
    def search(self, queries, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query.

        Args:
            queries: ``float32 [Q, dim]``.
            k: hits per query (default 10).

        Returns:
            ``(scores float32 [Q, k], ids int64 [Q, k])``, best first, padded with ``NaN`` /
            ``-1`` when fewer than ``k`` vectors are stored.

        Raises:
            InputValueError: wrong shape or dim, non-finite values, ``k < 1``.
        """

    @abc.abstractmethod
    def ids(self) -> np.ndarray:
        """The ids stored (``int64``, ascending)."""

    @abc.abstractmethod
    def payloads(self, ids) -> list:
        """The payload of each id (``None`` where none was given).

        Raises:
            InputValueError: an id that is not in the index.
        """

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Save the index to ``directory`` atomically (see :mod:`kvision.index.store`)."""

    @classmethod
    def load(cls, directory: str | Path, dim: int | None = None, **options) -> VectorIndex:
        """Load an index saved by :meth:`save`; see :func:`kvision.index.load_index`."""
        from kvision.index.store import load_index

        index = load_index(directory, dim=dim, **options)
        if not isinstance(index, cls):
            raise InputValueError(
                f"{directory} holds a {type(index).__name__}, not a {cls.__name__}; "
                "use kvision.index.load_index to load any backend."
            )
        return index

    @classmethod
    @abc.abstractmethod
    def _from_saved(cls, folder: Path, meta: dict, **options) -> VectorIndex:
        """The index saved in ``folder``, whose checked ``meta.json`` is ``meta``; ``options``
        are the backend's unsaved options (see :func:`kvision.index.load_index`)."""

    def close(self) -> None:
        """Release the backend's resources (files, locks); the index is unusable after.
        Nothing to release by default."""
        return None

    def get_config(self) -> dict:
        """The constructor arguments (JSON-ready), as written to ``meta.json``."""
        return {"dim": self.dim, "metric": self.metric, "contract": self.contract}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self.dim}, kind={self.kind!r}, "
            f"metric={self.metric!r}, count={len(self)})"
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_dim(dim) -> int:
    """``dim`` as an int, or ``InputValueError`` unless it is a positive integer."""
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise InputValueError(f"`dim` should be a positive integer. Received: dim={dim!r}")
    return int(dim)


def check_metric(metric) -> str:
    """``metric``, or ``InputValueError`` unless it is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise InputValueError(f"`metric` should be one of {METRICS}. Received: metric={metric!r}")
    return metric


def check_contract(contract) -> dict | None:
    """The contract as a JSON-ready dict (``to_dict()`` is called on objects that have it)."""
    if contract is None:
        return None
    if hasattr(contract, "to_dict"):
        contract = contract.to_dict()
    if not isinstance(contract, dict):
        raise InputValueError(
            "`contract` should be a JSON-ready dict (InputContract.to_dict()) or None. "
            f"Received: contract of type {type(contract).__name__}"
        )
    try:
        return json.loads(json.dumps(contract))
    except (TypeError, ValueError) as exc:
        raise InputValueError(f"`contract` is not JSON-ready: {exc}") from exc


def check_k(k) -> int:
    """``k`` as an int, or ``InputValueError`` unless it is an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputValueError(f"`k` should be an integer >= 1. Received: k={k!r}")
    return int(k)


def as_vectors(x, dim: int, name: str = "vectors", cosine: bool = False) -> np.ndarray:
    """``x`` as a C-contiguous ``float32 [N, dim]`` array, L2-normalised when ``cosine``.

    Raises:
        InputValueError: not 2-D, a different dim, non-numeric, NaN / Infinity, or (cosine) a
            row of zeros, whose direction is undefined. The message names ``name``.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise InputValueError(
            f"`{name}` should be a float array [N, {dim}]. Received: dtype={arr.dtype}"
        )
    if arr.ndim != 2 or arr.shape[1] != dim:
        hint = " (one vector: pass x[None])" if arr.ndim == 1 else ""
        raise InputValueError(
            f"`{name}` should have shape [N, {dim}]{hint}. Received: shape={list(arr.shape)}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise InputValueError(f"`{name}` contains NaN or Infinity in rows {few_values(rows)}")
    if cosine and len(arr):
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if zero.size:
            raise InputValueError(
                f"`{name}` has all-zero rows {few_values(zero)}: cosine similarity is undefined "
                "for them (use metric='l2' or drop them)"
            )
        arr = arr / norms
    return arr


def as_ids(ids, n: int | None = None, name: str = "ids") -> np.ndarray:
    """``ids`` as ``int64 [n]``: integers >= 0, no duplicates.

    Raises:
        InputValueError: not 1-D integers, a length other than ``n``, a negative id or a
            duplicate (named in the message).
    """
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.size == 0:
        arr = arr.astype(np.int64).reshape(0)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise InputValueError(
            f"`{name}` should be a 1-D array of integers. "
            f"Received: dtype={arr.dtype}, shape={list(arr.shape)}"
        )
    if n is not None and len(arr) != n:
        raise InputValueError(
            f"`{name}` should have one id per vector ({n}). Received: {len(arr)} ids"
        )
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InputValueError(f"`{name}` should fit in int64. Received: max={arr.max()}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise InputValueError(f"`{name}` should be >= 0. Received: {few_values(arr[arr < 0])}")
    unique, counts = np.unique(arr, return_counts=True)
    if len(unique) != len(arr):
        raise InputValueError(f"`{name}` has duplicates: {few_values(unique[counts > 1])}")
    return arr


def as_payloads(payloads, n: int) -> list:
    """``payloads`` as a list of ``n`` JSON-ready values (``None`` -> ``n`` Nones).

    Raises:
        InputValueError: a length other than ``n``, or a value JSON cannot hold.
    """
    if payloads is None:
        return [None] * n
    if isinstance(payloads, str | bytes | dict):
        raise InputValueError(
            f"`payloads` should be a list with one value per vector. "
            f"Received: a single {type(payloads).__name__}"
        )
    payloads = list(payloads)
    if len(payloads) != n:
        raise InputValueError(
            f"`payloads` should have one value per vector ({n}). Received: {len(payloads)}"
        )
    try:
        return json.loads(json.dumps(payloads, default=_json_path))
    except (TypeError, ValueError) as exc:
        raise InputValueError(f"`payloads` should be JSON-ready values: {exc}") from exc


def _json_path(obj):
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def pad_missing(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores float32, ids int64)`` with ``NaN`` scores where ``ids`` is ``-1``."""
    scores = np.asarray(scores, dtype=np.float32).copy()
    ids = np.asarray(ids, dtype=np.int64)
    scores[ids < 0] = np.nan
    return scores, ids


def few_values(values, limit: int = 5) -> str:
    """At most ``limit`` values for an error message."""
    values = [v.item() if hasattr(v, "item") else v for v in values]
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)} in all)"
