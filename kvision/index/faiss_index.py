"""The embedded vector index on FAISS (the only kvision module that imports ``faiss``).

Three kinds:

* ``"exact"``: brute-force search (``IndexFlat`` in an ``IndexIDMap2``); the reference the
  approximate kinds are measured against.
* ``"hnsw"``: a Hierarchical Navigable Small World graph (Malkov & Yashunin, "Efficient and
  robust approximate nearest neighbor search using Hierarchical Navigable Small World graphs",
  IEEE TPAMI 2018; ``IndexHNSWFlat``). Parameters ``M`` (graph degree), ``ef_construction`` and
  ``ef_search`` (candidate-list sizes at build and search time).
* ``"ivf"``: an inverted file over a k-means coarse quantizer (Jégou, Douze & Schmid, "Product
  quantization for nearest neighbor search", IEEE TPAMI 2011; ``IndexIVFFlat``). Parameters
  ``nlist`` (clusters; the index must be trained on at least ``nlist`` vectors) and ``nprobe``
  (clusters visited per query).

FAISS: Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs", IEEE Trans. Big
Data 2019 (https://github.com/facebookresearch/faiss).

Deleting from HNSW: a FAISS HNSW graph cannot remove nodes, so :meth:`FaissIndex.delete` marks
them deleted (a tombstone) and searches skip them with an ``IDSelectorBitmap`` while walking the
graph; the vectors stay in the graph (and in the saved file) until :meth:`FaissIndex.compact`
rebuilds it from the live ones. Many tombstones slow searches down and can lower recall: compact
(or :func:`~kvision.index.rebuild_index`) after large deletions. Exact and IVF remove for real.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError, MissingDependencyError
from kvision.index.store import read_ids_file, read_payloads_file, write_index_dir
from kvision.index.vector_index import (
    VectorIndex,
    as_ids,
    as_payloads,
    as_vectors,
    check_k,
    few_values,
    pad_missing,
)

INSTALL_HINT = "The FAISS vector index needs faiss-cpu: pip install faiss-cpu"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
PAYLOADS_FILE = "payloads.json"
LABELS_FILE = "labels.npy"
#: kind -> its parameters and their defaults
KIND_PARAMS: dict[str, dict[str, int]] = {
    "exact": {},
    "hnsw": {"M": 32, "ef_construction": 100, "ef_search": 64},
    "ivf": {"nlist": 100, "nprobe": 8},
}
#: parameters that only affect search, changeable with :meth:`FaissIndex.set_params`
SEARCH_PARAMS = ("ef_search", "nprobe")


def faiss_module():
    """``faiss``, imported on first use.

    Raises:
        MissingDependencyError: ``faiss-cpu`` is not installed (with the install command).
    """
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(INSTALL_HINT) from exc
    return faiss


def set_num_threads(threads: int) -> None:
    """The number of OpenMP threads FAISS searches and builds with (process-wide)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputValueError(f"`threads` should be an integer >= 1. Received: threads={threads!r}")
    faiss_module().omp_set_num_threads(threads)


class FaissIndex(VectorIndex):
    """A FAISS vector index with stable ids, payloads, incremental add / delete and atomic save.

    Args:
        dim: vector length.
        kind: ``"exact"`` (default), ``"hnsw"`` or ``"ivf"`` (see the module docstring).
        metric: ``"cosine"`` (default: vectors are L2-normalised and compared by inner product)
            or ``"l2"`` (squared Euclidean distance).
        contract: the embedding model's contract, JSON-ready (default ``None``).
        **params: the kind's parameters: ``hnsw``: ``M=32``, ``ef_construction=100``,
            ``ef_search=64``; ``ivf``: ``nlist=100``, ``nprobe=8``; ``exact``: none.

    Raises:
        InputValueError: unknown ``kind``, ``metric`` or parameter, or a value < 1
            (``nprobe > nlist`` too).
        MissingDependencyError: ``faiss-cpu`` is not installed.

    An IVF index is trained on its first :meth:`add` (or by :meth:`train`), which needs at
    least ``nlist`` vectors (FAISS advises ``39 * nlist``).

    Example:
        >>> index = FaissIndex(4, kind="exact")
        >>> index.add(np.eye(4, dtype="float32"), payloads=["a.png", "b.png", "c.png", "d.png"])
        array([0, 1, 2, 3])
        >>> scores, ids = index.search(np.array([[0.0, 1.0, 0.1, 0.0]]), k=2)
        >>> ids.tolist(), index.payloads(ids[0])
        ([[1, 2]], ['b.png', 'c.png'])
    """

    backend = "faiss"

    def __init__(
        self, dim: int, kind: str = "exact", metric: str = "cosine", contract=None, **params
    ):
        super().__init__(dim, metric, contract)
        self._kind = _check_kind(kind)
        self.params = _check_params(kind, params)
        self._faiss = faiss_module()
        self._index = self._new_faiss_index()
        self._ids = np.zeros(0, np.int64)  # live ids, insertion order
        self._payloads: dict[int, object] = {}
        self._next_id = 0
        # hnsw: FAISS position -> id (-1: deleted), and the search filter built from it
        self._labels = np.zeros(0, np.int64)
        self._selector = None

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def is_trained(self) -> bool:
        """False for an IVF index before :meth:`train` or its first :meth:`add`."""
        return bool(self._index.is_trained)

    @property
    def tombstones(self) -> int:
        """HNSW: deleted vectors still in the graph (0 for the other kinds)."""
        return int(np.count_nonzero(self._labels < 0))

    def __len__(self) -> int:
        return len(self._ids)

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, **self.params}

    def set_params(self, **params) -> None:
        """Change search-time parameters (``ef_search`` for HNSW, ``nprobe`` for IVF).

        Raises:
            InputValueError: a parameter of another kind, one fixed at build time, or < 1.
        """
        fixed = sorted(set(params) - set(SEARCH_PARAMS))
        if fixed:
            raise InputValueError(
                f"Only search parameters {SEARCH_PARAMS} can change after the index is built; "
                f"rebuild it to change {fixed}. Received: {params}"
            )
        self.params = _check_params(self.kind, {**self.params, **params})

    def _new_faiss_index(self):
        faiss = self._faiss
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        if self.kind == "exact":
            return faiss.IndexIDMap2(faiss.IndexFlat(self.dim, metric))
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.params["M"], metric)
            index.hnsw.efConstruction = self.params["ef_construction"]
            index.hnsw.efSearch = self.params["ef_search"]
            return index
        quantizer = faiss.IndexFlat(self.dim, metric)  # kept alive by the IVF index's wrapper
        return faiss.IndexIVFFlat(quantizer, self.dim, self.params["nlist"], metric)

    def train(self, vectors) -> None:
        """Train an IVF index's coarse quantizer (k-means, ``nlist`` clusters) on ``vectors``;
        nothing to do for ``exact`` and ``hnsw``.

        Args:
            vectors: ``float32 [N, dim]`` with ``N >= nlist``, representative of what will be
                stored (usually the vectors themselves).

        Raises:
            InputValueError: too few vectors for ``nlist``, bad vectors, or an IVF index that
                is already trained (build a new one to retrain).
        """
        if self.kind != "ivf":
            return
        if self.is_trained:
            raise InputValueError(
                "This IVF index is already trained; build a new one (rebuild_index) to retrain."
            )
        arr = as_vectors(vectors, self.dim, "vectors", cosine=self.metric == "cosine")
        nlist = self.params["nlist"]
        if len(arr) < nlist:
            raise InputValueError(
                f"kind='ivf' with nlist={nlist} needs at least {nlist} training vectors (FAISS "
                f"advises {39 * nlist}). Received: {len(arr)} vectors. Train on more vectors, "
                "or choose a smaller `nlist` (about sqrt(N)) or kind='exact'."
            )
        self._index.train(arr)

    def add(self, vectors, ids=None, payloads=None) -> np.ndarray:
        arr = as_vectors(vectors, self.dim, "vectors", cosine=self.metric == "cosine")
        n = len(arr)
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        ids = as_ids(ids, n)
        present = ids[np.isin(ids, self._ids)]
        if present.size:
            raise InputValueError(
                f"`ids` already in the index: {few_values(present)}. Delete them first to "
                "replace their vectors."
            )
        payloads = as_payloads(payloads, n)
        if n == 0:
            return ids
        if not self.is_trained:
            self.train(arr)
        if self.kind == "hnsw":
            self._index.add(arr)
            self._labels = np.concatenate([self._labels, ids])
            self._selector = None
        else:
            self._index.add_with_ids(arr, ids)
        self._ids = np.concatenate([self._ids, ids])
        self._payloads.update(zip(ids.tolist(), payloads, strict=True))
        self._next_id = max(self._next_id, int(ids.max()) + 1)
        return ids

    def delete(self, ids) -> int:
        ids = as_ids(ids)
        missing = ids[~np.isin(ids, self._ids)]
        if missing.size:
            raise InputValueError(f"`ids` not in the index: {few_values(missing)}")
        if not ids.size:
            return 0
        if self.kind == "hnsw":
            self._labels[np.isin(self._labels, ids)] = -1
            self._selector = None
        else:
            removed = self._index.remove_ids(ids)
            if removed != len(ids):  # pragma: no cover - FAISS and the id list disagree
                raise RuntimeError(f"FAISS removed {removed} of {len(ids)} ids")
        self._ids = self._ids[~np.isin(self._ids, ids)]
        for i in ids.tolist():
            del self._payloads[i]
        return len(ids)

    def compact(self) -> int:
        """HNSW: rebuild the graph without the deleted vectors; return how many were dropped.

        Costs a full graph build (seconds per 100k vectors). Exact and IVF have nothing to
        drop (returns 0).
        """
        dead = self.tombstones
        if not dead:
            return 0
        live = np.flatnonzero(self._labels >= 0)
        vectors = self._index.reconstruct_n(0, self._index.ntotal)[live]
        index = self._new_faiss_index()
        index.add(vectors)
        self._index, self._labels, self._selector = index, self._labels[live], None
        return dead

    def search(self, queries, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        q = as_vectors(queries, self.dim, "queries", cosine=self.metric == "cosine")
        k = check_k(k)
        if not len(self) or not len(q):
            return pad_missing(np.zeros((len(q), k)), np.full((len(q), k), -1))
        if self.kind == "hnsw":
            params = self._faiss.SearchParametersHNSW(efSearch=max(self.params["ef_search"], k))
            if self.tombstones:
                params.sel = self._hnsw_selector()
            scores, positions = self._index.search(q, k, params=params)
            ids = np.where(positions >= 0, self._labels[np.maximum(positions, 0)], -1)
        elif self.kind == "ivf":
            params = self._faiss.SearchParametersIVF(nprobe=self.params["nprobe"])
            scores, ids = self._index.search(q, k, params=params)
        else:
            scores, ids = self._index.search(q, k)
        return pad_missing(scores, ids)

    def _hnsw_selector(self):
        """The FAISS filter that lets only live positions through (cached until a change)."""
        if self._selector is None:
            bitmap = np.packbits(self._labels >= 0, bitorder="little")
            selector = self._faiss.IDSelectorBitmap(len(self._labels), self._faiss.swig_ptr(bitmap))
            self._selector = (selector, bitmap)  # the bitmap must outlive the selector
        return self._selector[0]

    def ids(self) -> np.ndarray:
        return np.sort(self._ids)

    def payloads(self, ids) -> list:
        """The payload of each id (``None`` where none was given, and for ``-1`` padding, so
        ``index.payloads(found_ids[0])`` works on search results).

        Raises:
            InputValueError: an id that is not in the index.
        """
        ids = _lookup_ids(ids)
        missing = [i for i in ids if i >= 0 and i not in self._payloads]
        if missing:
            raise InputValueError(f"`ids` not in the index: {few_values(missing)}")
        return [self._payloads[i] if i >= 0 else None for i in ids]

    def save(self, directory: str | Path) -> Path:
        """Save to ``directory`` atomically (see :mod:`kvision.index.store` for the layout);
        the folder already there stays loadable until the new one is complete.

        Raises:
            InputValueError: ``directory`` is a file or a non-empty folder that is not an index.
        """

        def write(tmp: Path) -> dict:
            self._faiss.write_index(self._index, str(tmp / INDEX_FILE))
            np.save(tmp / IDS_FILE, self._ids)
            payloads = [self._payloads[i] for i in self._ids.tolist()]
            (tmp / PAYLOADS_FILE).write_text(json.dumps(payloads))
            files = [INDEX_FILE, IDS_FILE, PAYLOADS_FILE]
            if self.kind == "hnsw":
                np.save(tmp / LABELS_FILE, self._labels)
                files.append(LABELS_FILE)
            return {
                "backend": self.backend,
                "kind": self.kind,
                "metric": self.metric,
                "dim": self.dim,
                "count": len(self),
                "params": self.params,
                "contract": self.contract,
                "next_id": self._next_id,
                "faiss_version": self._faiss.__version__,
                "files": files,
            }

        return write_index_dir(directory, write)

    @classmethod
    def _from_saved(cls, folder: Path, meta: dict, **options) -> FaissIndex:
        meta_path = folder / "meta.json"
        if options:
            raise InputValueError(
                f"A FAISS index takes no load options. Received: {sorted(options)}"
            )
        try:
            index = cls(
                meta["dim"],
                kind=meta["kind"],
                metric=meta["metric"],
                contract=meta.get("contract"),
                **(meta.get("params") or {}),
            )
        except InputValueError as exc:
            raise InputValueError(f"{meta_path}: {exc}") from exc
        raw = index._read_faiss(folder / INDEX_FILE, meta_path)
        count = meta["count"]
        ids = read_ids_file(folder / IDS_FILE, meta_path, count)
        payloads = read_payloads_file(folder / PAYLOADS_FILE, meta_path, count)
        if index.kind == "hnsw":
            labels = read_ids_file(folder / LABELS_FILE, meta_path, int(raw.ntotal))
            if np.count_nonzero(labels >= 0) != count:
                raise InputValueError(
                    f"{folder / LABELS_FILE} holds {np.count_nonzero(labels >= 0)} live ids but "
                    f"{meta_path} field `count` is {count}."
                )
            index._labels = labels
        elif raw.ntotal != count:
            raise InputValueError(
                f"{folder / INDEX_FILE} holds {raw.ntotal} vectors but {meta_path} field "
                f"`count` is {count}."
            )
        index._index, index._ids = raw, ids
        index._payloads = dict(zip(ids.tolist(), payloads, strict=True))
        next_id = meta.get("next_id", 0)
        index._next_id = max(next_id if isinstance(next_id, int) else 0, _next_after(ids))
        return index

    def _read_faiss(self, path: Path, meta_path: Path):
        """The FAISS index in ``path``, checked against this (empty) index's kind, metric, dim."""
        if not path.is_file():
            raise InputValueError(f"{path} not found: the index folder is incomplete.")
        try:
            raw = self._faiss.read_index(str(path))
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise InputValueError(f"{path} is not a readable FAISS index: {reason}") from exc
        if raw.d != self.dim:
            raise InputValueError(
                f"{path} holds {raw.d}-dim vectors but {meta_path} field `dim` is {self.dim}."
            )
        expected = type(self._index)
        if type(raw) is not expected or raw.metric_type != self._index.metric_type:
            raise InputValueError(
                f"{path} is a {type(raw).__name__} (metric_type={raw.metric_type}) but "
                f"{meta_path} fields `kind`={self.kind!r}, `metric`={self.metric!r} need a "
                f"{expected.__name__} (metric_type={self._index.metric_type})."
            )
        return raw


def _check_kind(kind) -> str:
    if kind not in KIND_PARAMS:
        raise InputValueError(
            f"`kind` should be one of {tuple(KIND_PARAMS)}. Received: kind={kind!r}"
        )
    return kind


def _check_params(kind: str, params: dict) -> dict:
    """``params`` completed with the kind's defaults; unknown names and values < 1 raise."""
    allowed = KIND_PARAMS[kind]
    for name, value in params.items():
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputValueError(
                f"`{name}` is not a parameter of kind={kind!r}; its parameters are "
                f"{sorted(allowed) or 'none'}.{hint} Received: {name}={value!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InputValueError(f"`{name}` should be an integer >= 1. Received: {name}={value!r}")
    resolved = {**allowed, **{name: int(value) for name, value in params.items()}}
    if kind == "ivf" and resolved["nprobe"] > resolved["nlist"]:
        raise InputValueError(
            f"`nprobe` should be <= nlist ({resolved['nlist']}). "
            f"Received: nprobe={resolved['nprobe']}"
        )
    return resolved


def _lookup_ids(ids) -> list[int]:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.size == 0:
        return []
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise InputValueError(
            f"`ids` should be a 1-D array of integers. "
            f"Received: dtype={arr.dtype}, shape={list(arr.shape)}"
        )
    return arr.astype(np.int64).tolist()


def _next_after(ids: np.ndarray) -> int:
    return int(ids.max()) + 1 if ids.size else 0
