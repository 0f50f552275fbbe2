"""A vector index in a Qdrant collection (the only kvision module that imports ``qdrant_client``).

For collections that outgrow one machine: the same :class:`~kvision.index.VectorIndex`
interface as :class:`~kvision.index.FaissIndex`, with the vectors and payloads kept by Qdrant
(https://qdrant.tech). ``location`` picks where:

* ``":memory:"`` (default): in-process, nothing on disk (Qdrant's local mode; exact search);
* a folder path: in-process, persisted there by Qdrant (local mode; one client per folder at a
  time);
* ``"http://host:6333"`` / ``"https://..."``: a Qdrant server, which indexes with HNSW.

Qdrant reports Euclidean distances; :meth:`QdrantIndex.search` squares them so ``metric="l2"``
scores mean the same as FAISS's (squared L2). Each payload is stored as the point payload
``{"payload": value}``.
"""

from __future__ import annotations

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

INSTALL_HINT = "The Qdrant vector index needs qdrant-client: pip install qdrant-client"
MEMORY = ":memory:"
IDS_FILE = "ids.npy"
VECTORS_FILE = "vectors.npy"
PAYLOADS_FILE = "payloads.json"
PAYLOAD_KEY = "payload"


def qdrant_module():
    """``(qdrant_client.QdrantClient, qdrant_client.models)``, imported on first use.

    Raises:
        MissingDependencyError: ``qdrant-client`` is not installed (with the install command).
    """
    try:
        from qdrant_client import QdrantClient, models
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(INSTALL_HINT) from exc
    return QdrantClient, models


class QdrantIndex(VectorIndex):
    """A Qdrant collection behind the :class:`~kvision.index.VectorIndex` interface.

    Args:
        dim: vector length.
        location: ``":memory:"`` (default), a local folder, or a server URL (see the module
            docstring).
        collection: the collection name (default ``"kvision"``); created when missing, checked
            against ``dim`` and ``metric`` when present.
        metric: ``"cosine"`` (default) or ``"l2"``.
        contract: the embedding model's contract, JSON-ready (default ``None``).
        batch_size: points per upsert / query request (default 1024).
        **client_options: passed to ``QdrantClient`` (e.g. ``api_key``, ``timeout``); never
            saved (give them again to ``load_index(directory, **client_options)``).

    The first :meth:`add` without ``ids`` reads the collection's ids once to number after the
    largest; pass ids to avoid that scan on a large server collection.

    Raises:
        InputValueError: bad arguments, an existing collection with another dim or metric, or
            a local folder already opened by another client.
        MissingDependencyError: ``qdrant-client`` is not installed.

    Example:
        >>> index = QdrantIndex(4)                                   # in-process, in memory
        >>> index.add(np.eye(4, dtype="float32"), payloads=["a", "b", "c", "d"])
        array([0, 1, 2, 3])
        >>> index.search(np.array([[0.0, 0.0, 1.0, 0.0]]), k=1)[1].tolist()
        [[2]]
    """

    backend = "qdrant"

    def __init__(
        self,
        dim: int,
        location: str | Path = MEMORY,
        collection: str = "kvision",
        metric: str = "cosine",
        contract=None,
        batch_size: int = 1024,
        **client_options,
    ):
        super().__init__(dim, metric, contract)
        if not isinstance(location, str | Path) or not str(location):
            raise InputValueError(
                "`location` should be ':memory:', a folder path or a server URL. "
                f"Received: location={location!r}"
            )
        if not isinstance(collection, str) or not collection:
            raise InputValueError(
                f"`collection` should be a non-empty string. Received: collection={collection!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputValueError(
                f"`batch_size` should be a positive integer. Received: batch_size={batch_size!r}"
            )
        self.location = str(location)
        self.collection = collection
        self.batch_size = batch_size
        client_cls, self._models = qdrant_module()
        self._client = _open_client(client_cls, self.location, client_options)
        self._next_id: int | None = None  # found on the first add without ids
        self._ensure_collection()

    @property
    def is_server(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    @property
    def kind(self) -> str:
        """``"hnsw"`` on a server, ``"exact"`` in local mode (which searches by brute force)."""
        return "hnsw" if self.is_server else "exact"

    def get_config(self) -> dict:
        location = self.location
        if not self.is_server and location != MEMORY:
            location = str(Path(location).resolve())
        return {**super().get_config(), "location": location, "collection": self.collection}

    def _distance(self):
        distance = self._models.Distance
        return distance.COSINE if self.metric == "cosine" else distance.EUCLID

    def _ensure_collection(self) -> None:
        if not self._client.collection_exists(self.collection):
            self._client.create_collection(
                self.collection,
                vectors_config=self._models.VectorParams(size=self.dim, distance=self._distance()),
            )
            return
        params = self._client.get_collection(self.collection).config.params.vectors
        where = f"Qdrant collection {self.collection!r} at {self.location}"
        if not isinstance(params, self._models.VectorParams):
            raise InputValueError(f"{where} has named vectors; kvision needs one unnamed vector.")
        if params.size != self.dim:
            raise InputValueError(
                f"{where} holds {params.size}-dim vectors. Received: dim={self.dim}"
            )
        if params.distance != self._distance():
            raise InputValueError(
                f"{where} uses distance {params.distance.value!r}, which is not "
                f"metric={self.metric!r}."
            )

    def __len__(self) -> int:
        return int(self._client.count(self.collection, exact=True).count)

    def add(self, vectors, ids=None, payloads=None) -> np.ndarray:
        arr = as_vectors(vectors, self.dim, "vectors", cosine=self.metric == "cosine")
        n = len(arr)
        if ids is None:
            start = self._next_id if self._next_id is not None else _next_after(self.ids())
            ids = np.arange(start, start + n, dtype=np.int64)
        ids = as_ids(ids, n)
        present = self._present(ids)
        if present:
            raise InputValueError(
                f"`ids` already in the index: {few_values(present)}. Delete them first to "
                "replace their vectors."
            )
        payloads = as_payloads(payloads, n)
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            batch = self._models.Batch(
                ids=ids[start:stop].tolist(),
                vectors=arr[start:stop].tolist(),
                payloads=[{PAYLOAD_KEY: p} for p in payloads[start:stop]],
            )
            self._client.upsert(self.collection, points=batch, wait=True)
        if n:
            known = self._next_id if self._next_id is not None else 0
            self._next_id = max(known, int(ids.max()) + 1)
        return ids

    def delete(self, ids) -> int:
        ids = as_ids(ids)
        missing = sorted(set(ids.tolist()) - set(self._present(ids)))
        if missing:
            raise InputValueError(f"`ids` not in the index: {few_values(missing)}")
        if ids.size:
            selector = self._models.PointIdsList(points=ids.tolist())
            self._client.delete(self.collection, points_selector=selector, wait=True)
        return len(ids)

    def _present(self, ids: np.ndarray) -> list[int]:
        """The ids of ``ids`` that are in the collection."""
        found = []
        for start in range(0, len(ids), self.batch_size):
            records = self._client.retrieve(
                self.collection,
                ids=ids[start : start + self.batch_size].tolist(),
                with_payload=False,
                with_vectors=False,
            )
            found.extend(int(r.id) for r in records)
        return found

    def search(self, queries, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        q = as_vectors(queries, self.dim, "queries", cosine=self.metric == "cosine")
        k = check_k(k)
        scores = np.zeros((len(q), k), np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for start in range(0, len(q), self.batch_size):
            requests = [
                self._models.QueryRequest(query=v.tolist(), limit=k, with_payload=False)
                for v in q[start : start + self.batch_size]
            ]
            results = self._client.query_batch_points(self.collection, requests=requests)
            for row, result in enumerate(results, start=start):
                points = result.points[:k]
                ids[row, : len(points)] = [int(p.id) for p in points]
                scores[row, : len(points)] = [p.score for p in points]
        if self.metric == "l2":
            scores = scores**2
        return pad_missing(scores, ids)

    def _scroll(self, with_vectors: bool = False, with_payload: bool = False):
        """Every point of the collection, page by page."""
        offset = None
        while True:
            points, offset = self._client.scroll(
                self.collection,
                limit=self.batch_size,
                offset=offset,
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
            yield from points
            if offset is None:
                return

    def ids(self) -> np.ndarray:
        return np.sort(np.array([int(p.id) for p in self._scroll()], dtype=np.int64))

    def payloads(self, ids) -> list:
        """The payload of each id (``None`` where none was given, and for ``-1`` padding).

        Raises:
            InputValueError: an id that is not in the index.
        """
        wanted = np.asarray(ids)
        wanted = wanted[None] if wanted.ndim == 0 else wanted
        if wanted.size and (wanted.dtype.kind not in "iu" or wanted.ndim != 1):
            raise InputValueError(
                f"`ids` should be a 1-D array of integers. "
                f"Received: dtype={wanted.dtype}, shape={list(wanted.shape)}"
            )
        wanted = wanted.astype(np.int64).tolist()
        unique = sorted({i for i in wanted if i >= 0})
        found = {}
        for start in range(0, len(unique), self.batch_size):
            records = self._client.retrieve(
                self.collection, ids=unique[start : start + self.batch_size], with_payload=True
            )
            found.update({int(r.id): (r.payload or {}).get(PAYLOAD_KEY) for r in records})
        missing = [i for i in unique if i not in found]
        if missing:
            raise InputValueError(f"`ids` not in the index: {few_values(missing)}")
        return [found[i] if i >= 0 else None for i in wanted]

    def save(self, directory: str | Path) -> Path:
        """Save atomically to ``directory``: ``meta.json`` (with ``location`` and
        ``collection``), and for a ``":memory:"`` collection its points (``ids.npy``,
        ``vectors.npy``, ``payloads.json``). A folder or server collection stays where Qdrant
        keeps it; the saved folder points at it. ``client_options`` (credentials) are not saved.
        """

        def write(tmp: Path) -> dict:
            config = self.get_config()
            files = []
            count = len(self)
            if self.location == MEMORY:
                points = sorted(self._scroll(with_vectors=True, with_payload=True), key=_id)
                vectors = np.array([p.vector for p in points], np.float32).reshape(-1, self.dim)
                np.save(tmp / IDS_FILE, np.array([_id(p) for p in points], np.int64))
                np.save(tmp / VECTORS_FILE, vectors)
                payloads = [(p.payload or {}).get(PAYLOAD_KEY) for p in points]
                (tmp / PAYLOADS_FILE).write_text(json.dumps(payloads))
                files = [IDS_FILE, VECTORS_FILE, PAYLOADS_FILE]
                count = len(points)
            return {
                "backend": self.backend,
                "kind": self.kind,
                "metric": self.metric,
                "dim": self.dim,
                "count": count,
                "params": {"location": config["location"], "collection": self.collection},
                "contract": self.contract,
                "next_id": self._next_id,
                "files": files,
            }

        return write_index_dir(directory, write)

    @classmethod
    def _from_saved(cls, folder: Path, meta: dict, **client_options) -> QdrantIndex:
        meta_path = folder / "meta.json"
        params = meta.get("params") or {}
        location, collection = params.get("location"), params.get("collection")
        if not isinstance(location, str) or not isinstance(collection, str):
            raise InputValueError(
                f"{meta_path}: field `params` should hold the strings `location` and "
                f"`collection`. Received: {params!r}"
            )
        try:
            index = cls(
                meta["dim"],
                location=location,
                collection=collection,
                metric=meta["metric"],
                contract=meta.get("contract"),
                **client_options,
            )
        except InputValueError as exc:
            raise InputValueError(f"{meta_path}: {exc}") from exc
        if location == MEMORY:
            count = meta["count"]
            ids = read_ids_file(folder / IDS_FILE, meta_path, count)
            payloads = read_payloads_file(folder / PAYLOADS_FILE, meta_path, count)
            vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
            if vectors.shape != (count, meta["dim"]):
                raise InputValueError(
                    f"{folder / VECTORS_FILE} should hold [{count}, {meta['dim']}] vectors "
                    f"(fields `count` and `dim` of {meta_path}). "
                    f"Received: shape={list(vectors.shape)}"
                )
            index.add(vectors, ids, payloads)
        next_id = meta.get("next_id")
        if isinstance(next_id, int):
            index._next_id = max(next_id, index._next_id or 0)
        return index

    def close(self) -> None:
        self._client.close()


def _open_client(client_cls, location: str, options: dict):
    if location == MEMORY:
        return client_cls(location=MEMORY, **options)
    if location.startswith(("http://", "https://")):
        return client_cls(url=location, **options)
    try:
        return client_cls(path=location, **options)
    except RuntimeError as exc:  # local mode locks its folder
        raise InputValueError(
            f"Cannot open the Qdrant folder {location}: {exc} Close the other QdrantIndex "
            "(index.close()) or use a server for shared access."
        ) from exc


def _id(point) -> int:
    return int(point.id)


def _next_after(ids: np.ndarray) -> int:
    return int(ids.max()) + 1 if ids.size else 0
