"""The saved index folder: its format, atomic writes, loading any backend, and safe rebuilds.

A saved index is one folder::

    my_index/
        meta.json      format, format_version, backend, kind, metric, dim, count, params,
                       contract (the embedding model's, or null), next_id, files
        index.faiss    the FAISS index (backend "faiss")
        ids.npy        int64 [count]: the stored ids, in insertion order
        payloads.json  [count] JSON values aligned with ids.npy (e.g. image paths)
        labels.npy     HNSW only: int64 [stored]: FAISS position -> id, -1 for deleted

A Qdrant index's folder holds ``meta.json`` pointing at its collection (``params.location``,
``params.collection``), plus ``ids.npy``, ``vectors.npy`` and ``payloads.json`` when the
collection lived in memory.

Writes are atomic at the folder level (:func:`write_index_dir`): the new folder is written
completely beside the old one (``.my_index.partial-XXXX``), ``meta.json`` last, then swapped in
with two renames; the old folder stays in place and loadable until the new one is complete.
Should the process die between the two renames, the old index waits in ``.my_index.previous``
and :func:`load_index` reads it from there. One writer per folder at a time; a
``.my_index.partial-XXXX`` folder left by a killed process is never read and is safe to delete.

:func:`rebuild_index` builds a whole new index in memory and saves it the same way, so a
rebuild that fails midway leaves the old index on disk untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.index.vector_index import METRICS, VectorIndex, as_ids, as_payloads, as_vectors
from kvision.io import atomic_write_json

FORMAT = "kvision.vector_index"
FORMAT_VERSION = 1
META_FILE = "meta.json"
#: backend name in meta.json -> "module:class"
BACKENDS = {
    "faiss": "kvision.index.faiss_index:FaissIndex",
    "qdrant": "kvision.index.qdrant_index:QdrantIndex",
}
_REQUIRED = {"backend": str, "kind": str, "metric": str, "dim": int, "count": int}


def write_index_dir(directory: str | Path, write_files: Callable[[Path], dict]) -> Path:
    """Write an index folder atomically: ``write_files(tmp)`` fills a temp folder beside
    ``directory`` and returns the ``meta.json`` dict; the folder then replaces ``directory``.

    ``format`` and ``format_version`` are added to the meta. On any failure the temp folder is
    removed and ``directory`` is left as it was.

    Raises:
        InputValueError: ``directory`` is a file, or a non-empty folder that is not an index
            (it is never replaced, so a wrong path cannot delete user files).
    """
    directory = Path(directory)
    _check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.partial-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0o700 -> what mkdir would have made
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **write_files(tmp)}
        atomic_write_json(tmp / META_FILE, meta)  # last: a folder with meta.json is complete
        _fsync_files(tmp)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def previous_path(directory: str | Path) -> Path:
    """Where the old index waits while a save swaps the new one in."""
    directory = Path(directory)
    return directory.parent / f".{directory.name}.previous"


def _check_replaceable(directory: Path) -> None:
    if directory.is_file():
        raise InputValueError(f"Cannot save an index to {directory}: it is a file, not a folder.")
    if directory.is_dir() and not (directory / META_FILE).is_file() and any(directory.iterdir()):
        raise InputValueError(
            f"Cannot save an index to {directory}: the folder is not empty and is not a kvision "
            f"index (no {META_FILE}); choose a new or empty folder."
        )


def _swap_in(tmp: Path, directory: Path) -> None:
    previous = previous_path(directory)
    if directory.is_dir() and not (directory / META_FILE).is_file():
        directory.rmdir()  # an empty folder (see _check_replaceable): nothing to keep
    if directory.exists():
        if previous.exists():  # a stale backup; `directory` is the complete index now
            shutil.rmtree(previous)
        os.rename(directory, previous)
        try:
            os.rename(tmp, directory)
        except BaseException:
            os.rename(previous, directory)
            raise
    else:
        os.rename(tmp, directory)
    shutil.rmtree(previous, ignore_errors=True)
    _fsync_dir(directory.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_files(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def index_folder(directory: str | Path) -> Path:
    """The folder to read an index from: ``directory``, or its ``.previous`` backup when a save
    was interrupted between its two renames (with a warning).

    Raises:
        FileNotFoundError: neither exists.
        InputValueError: ``directory`` exists but holds no ``meta.json``.
    """
    directory = Path(directory)
    if (directory / META_FILE).is_file():
        return directory
    previous = previous_path(directory)
    if not directory.exists() and (previous / META_FILE).is_file():
        warnings.warn(
            f"{directory} is missing; reading the index kept in {previous} by an interrupted "
            "save. Save the index again to restore the folder.",
            stacklevel=3,
        )
        return previous
    if not directory.exists():
        raise FileNotFoundError(f"Vector index not found: {directory}")
    raise InputValueError(
        f"{directory} is not a kvision vector index: {directory / META_FILE} not found."
    )


def read_meta(directory: str | Path, dim: int | None = None) -> dict:
    """The checked ``meta.json`` of a saved index, with ``meta["folder"]`` the folder read.

    Args:
        directory: the index folder.
        dim: the vector length the caller's embedding model produces (default ``None``: not
            checked).

    Raises:
        FileNotFoundError: no such folder.
        InputValueError: not an index, unreadable JSON, a missing or wrong field (named with
            the file), a newer format version, or a ``dim`` other than the caller's.
    """
    folder = index_folder(directory)
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputValueError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InputValueError(
            f"{path} is not a kvision vector index: field `format` should be {FORMAT!r}. "
            f"Received: {got!r}"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise InputValueError(
            f"{path}: field `format_version` should be an integer from 1 to {FORMAT_VERSION} "
            f"(a newer kvision wrote it?). Received: {version!r}"
        )
    for field, kind in _REQUIRED.items():
        value = meta.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputValueError(
                f"{path}: field `{field}` should be a {kind.__name__}. Received: {value!r}"
            )
    if meta["backend"] not in BACKENDS:
        raise InputValueError(
            f"{path}: field `backend` should be one of {sorted(BACKENDS)}. "
            f"Received: {meta['backend']!r}"
        )
    if meta["metric"] not in METRICS:
        raise InputValueError(
            f"{path}: field `metric` should be one of {METRICS}. Received: {meta['metric']!r}"
        )
    if meta["dim"] < 1 or meta["count"] < 0:
        raise InputValueError(
            f"{path}: fields `dim` >= 1 and `count` >= 0 expected. "
            f"Received: dim={meta['dim']}, count={meta['count']}"
        )
    if meta.get("contract") is not None and not isinstance(meta["contract"], dict):
        raise InputValueError(
            f"{path}: field `contract` should be an object or null. "
            f"Received: {type(meta['contract']).__name__}"
        )
    if dim is not None and meta["dim"] != dim:
        raise InputValueError(
            f"{path}: field `dim` is {meta['dim']}, but the vectors to search have dim {dim}; "
            "the index was built with another embedding model: rebuild it."
        )
    return {**meta, "folder": str(folder)}


def read_ids_file(path: Path, meta_path: Path, count: int) -> np.ndarray:
    """The ``int64 [count]`` array in ``path``; errors name the file and ``meta_path``."""
    if not path.is_file():
        raise InputValueError(f"{path} not found: the index folder is incomplete.")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputValueError(f"{path} is not a readable .npy file: {exc}") from exc
    if arr.dtype != np.int64 or arr.ndim != 1 or len(arr) != count:
        raise InputValueError(
            f"{path} should hold int64 [{count}] (field `count` of {meta_path}). "
            f"Received: dtype={arr.dtype}, shape={list(arr.shape)}"
        )
    return arr


def read_payloads_file(path: Path, meta_path: Path, count: int) -> list:
    """The list of ``count`` JSON payloads in ``path``; errors name the file and ``meta_path``."""
    if not path.is_file():
        raise InputValueError(f"{path} not found: the index folder is incomplete.")
    try:
        payloads = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputValueError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(payloads, list) or len(payloads) != count:
        got = len(payloads) if isinstance(payloads, list) else type(payloads).__name__
        raise InputValueError(
            f"{path} should hold a list of {count} payloads (field `count` of {meta_path}). "
            f"Received: {got}"
        )
    return payloads


def backend_class(name: str) -> type[VectorIndex]:
    """The :class:`VectorIndex` subclass of a backend name (imported on first use)."""
    import importlib

    if name not in BACKENDS:
        raise InputValueError(
            f"`backend` should be one of {sorted(BACKENDS)}. Received: backend={name!r}"
        )
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_index(directory: str | Path, dim: int | None = None, **options) -> VectorIndex:
    """Load a saved index of any backend.

    Args:
        directory: the folder written by ``index.save(directory)``.
        dim: the vector length the caller will search with (default ``None``: not checked).
        **options: backend options that are not saved (Qdrant: ``client_options`` such as
            ``api_key``).

    Raises:
        FileNotFoundError: no such folder.
        InputValueError: not an index, or a field or file that contradicts the others (the
            message names the file and the field).
        MissingDependencyError: the backend's package is not installed.

    Example:
        >>> index = load_index("runs/index")                     # doctest: +SKIP
        >>> scores, ids = index.search(query_vectors, k=10)      # doctest: +SKIP
    """
    meta = read_meta(directory, dim=dim)
    return backend_class(meta["backend"])._from_saved(Path(meta["folder"]), meta, **options)


def rebuild_index(
    directory: str | Path,
    vectors,
    ids=None,
    payloads=None,
    *,
    kind: str | None = None,
    metric: str | None = None,
    contract=None,
    batch_size: int = 65536,
    **params,
):
    """Build a new FAISS index from all ``vectors`` and swap it into ``directory`` only once it
    is complete: if anything fails midway, the index already in ``directory`` stays as it was.

    Args:
        directory: the index folder (may not exist yet).
        vectors: ``float32 [N, dim]``; ``dim`` may differ from the old index's (a new model).
        ids: ``int64 [N]`` (default ``None``: ``0..N-1``).
        payloads: ``N`` JSON-ready values (default ``None``).
        kind, metric: default ``None``: those of the index in ``directory``, else ``"exact"``
            and ``"cosine"``.
        contract: the embedding model's contract (default ``None``: the old index's).
        batch_size: vectors added per step (default 65536).
        **params: kind parameters (see :class:`~kvision.index.FaissIndex`); default: the old
            index's when ``kind`` is unchanged.

    Returns:
        The new :class:`~kvision.index.FaissIndex`.

    Raises:
        InputValueError: bad vectors, ids, payloads or parameters (nothing is written).

    Example:
        >>> rebuild_index("runs/index", vectors, payloads=paths, kind="hnsw")  # doctest: +SKIP
    """
    from kvision.index.faiss_index import FaissIndex

    old = _old_meta(directory)
    kind = kind or old.get("kind") or "exact"
    metric = metric or old.get("metric") or "cosine"
    if not params and old.get("kind") == kind:
        params = dict(old.get("params") or {})
    if contract is None:
        contract = old.get("contract")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputValueError(
            f"`batch_size` should be a positive integer. Received: batch_size={batch_size!r}"
        )
    arr = as_vectors(vectors, _dim_of(vectors), "vectors")
    n = len(arr)
    ids = as_ids(range(n) if ids is None else ids, n)
    payloads = as_payloads(payloads, n)
    index = FaissIndex(arr.shape[1], kind=kind, metric=metric, contract=contract, **params)
    index.train(arr)
    for start in range(0, n, batch_size):
        stop = start + batch_size
        index.add(arr[start:stop], ids[start:stop], payloads[start:stop])
    index.save(directory)
    return index


def _old_meta(directory) -> dict:
    try:
        return read_meta(directory)
    except (FileNotFoundError, InputValueError):
        return {}


def _dim_of(vectors) -> int:
    shape = np.shape(vectors)
    if len(shape) != 2 or shape[1] < 1:
        raise InputValueError(
            f"`vectors` should have shape [N, dim]. Received: shape={list(shape)}"
        )
    return int(shape[1])
