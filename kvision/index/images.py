"""An index of image files built with an embedding model, and search by image.

    summary = build_image_index("runs/embedding/export/tflite/embedder_float32.tflite",
                                "photos/", "photos.index", kind="hnsw")
    hits = search_images("photos.index", ["query.jpg"], k=5)
    hits[0]["neighbours"][0]   # {"id": 17, "score": 0.93, "path": "photos/shoes/a.jpg"}

The model is any artifact with an ``embedding`` contract (``.tflite``, SavedModel, ``.keras``
checkpoint): images go through the same decode -> resize -> normalise path as training and
serving (:mod:`kvision.preprocess`) and through :mod:`kvision.runtime`. The index (FAISS,
cosine) stores the image paths as payloads and the model's contract, plus the model's path
(``contract["source_model"]``), so search finds the model by itself; a search model whose
contract differs from the index's (size, channels, normalisation, embedding size) is refused.
Files that cannot be decoded are skipped and listed (or raise, with ``on_error="raise"``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError

#: contract keys that must match between the index and the model that searches it
_SAME = ("height", "width", "channels", "scale", "offset", "resize", "task")


def _open(model_path):
    from kvision.models import InputContract
    from kvision.runtime import open_runtime

    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"Model not found: {model_path}")
    contract = InputContract.find(model_path)
    if contract.task != "embedding":
        raise InputValueError(
            f"{model_path} is a {contract.task or 'classification'} model: an image index needs "
            "an embedding model (kvision pipeline task=embedding)."
        )
    runtime = open_runtime(model_path)
    runtime.load()
    return contract, runtime


def image_files(folder) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted; ``.png .jpg .jpeg .bmp``).

    Raises:
        FileNotFoundError: no such folder; InputValueError: no image in it.
    """
    from kvision.data.folders import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and p.is_file() and not p.name.startswith("."))  # fmt: skip
    if not files:
        raise InputValueError(f"No image ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return files


def embed_files(contract, runtime, files, batch_size: int = 64, on_error: str = "skip",
                progress: bool = False):  # fmt: skip
    """Embeddings of image files through ``runtime``.

    Returns:
        ``(vectors float32 [N, D], kept files [N], bad [(file, reason)])``.

    Raises:
        kvision.preprocess.ImageError: a bad file with ``on_error="raise"``.
    """
    from kvision.preprocess import ImageError, load_pixels

    size = (contract.height, contract.width)
    vectors, kept, bad, batch, names = [], [], [], [], []
    bar = _bar(len(files), "embedding") if progress else None

    def flush():
        if batch:
            out = runtime.run(contract.normalize(np.stack(batch)))
            vectors.append(np.asarray(out["embedding"], np.float32))
            kept.extend(names)
            batch.clear(), names.clear()

    for f in files:
        try:
            batch.append(load_pixels(f, contract.channels, size, contract.resize))
            names.append(str(f))
        except ImageError as exc:
            if on_error == "raise":
                raise
            bad.append((str(f), str(exc)))
        if len(batch) == batch_size:
            flush()
        if bar is not None:
            bar.update(1)
    flush()
    if bar is not None:
        bar.close()
    dim = int(contract.postprocess.get("dim") or 0)
    return (np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)), kept, bad


def _bar(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the dependencies
        return None
    return tqdm(total=total, desc=desc, unit="img")


def build_image_index(model_path, folder, out, kind: str = "hnsw", params=None,
                      on_error: str = "skip", progress: bool = True) -> dict:  # fmt: skip
    """Embed every image under ``folder`` with ``model_path`` and save a FAISS index at ``out``
    (atomic: an index already there stays until the new one is complete).

    Args:
        model_path: an embedding artifact with its contract.
        folder: the images (recursive).
        out: the index folder.
        kind: ``exact``, ``hnsw`` (default) or ``ivf`` (:class:`~kvision.index.FaissIndex`).
        params: the kind's parameters (e.g. ``{"M": 32, "ef_search": 64}``).
        on_error: ``skip`` (default; listed in the summary) or ``raise`` for undecodable files.

    Returns:
        ``{"index", "count", "dim", "kind", "bad_files": [[file, reason]], "embed_s",
        "build_s"}``.

    Raises:
        FileNotFoundError, InputValueError: no model / folder / image, not an embedding model.
    """
    from kvision.index import FaissIndex

    contract, runtime = _open(model_path)
    files = image_files(folder)
    t = time.perf_counter()
    vectors, kept, bad = embed_files(contract, runtime, files, on_error=on_error,
                                     progress=progress)  # fmt: skip
    runtime.close()
    embed_s = time.perf_counter() - t
    if not kept:
        raise InputValueError(f"None of the {len(files)} images under {folder} could be read.")
    t = time.perf_counter()
    meta = {**contract.to_dict(), "source_model": str(Path(model_path).resolve())}
    index = FaissIndex(int(vectors.shape[1]), kind=kind, metric="cosine", contract=meta,
                       **(params or {}))  # fmt: skip
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors, payloads=kept)
    index.save(out)
    return {"index": str(out), "count": len(index), "dim": int(vectors.shape[1]), "kind": kind,
            "bad_files": [list(b) for b in bad], "embed_s": round(embed_s, 2),
            "build_s": round(time.perf_counter() - t, 2)}  # fmt: skip


def check_compatible(index_contract: dict, contract, model_path) -> None:
    """Raise ``InputValueError`` unless ``contract`` preprocesses and embeds as the index's."""
    mine = contract.to_dict()
    diff = {k: (index_contract.get(k), mine.get(k)) for k in _SAME
            if index_contract.get(k) != mine.get(k)}  # fmt: skip
    dims = (index_contract.get("postprocess") or {}).get("dim"), contract.postprocess.get("dim")
    if dims[0] != dims[1]:
        diff["dim"] = dims
    if diff:
        detail = "; ".join(f"{k}: index {a!r}, model {b!r}" for k, (a, b) in diff.items())
        raise InputValueError(
            f"{model_path} does not embed as the model the index was built with ({detail}): "
            "search with that model, or rebuild the index."
        )


def nearest(index, vectors, k: int) -> list[list[tuple[int, float, object]]]:
    """``[(id, cosine rounded to 6 places, payload)]`` best first for each row of ``vectors``
    (float32 ``[N, D]``), at most ``k`` each (FAISS pads missing neighbours with id -1: dropped)."""
    scores, ids = index.search(np.asarray(vectors, np.float32), k=k)
    out = []
    for row_scores, row_ids in zip(scores, ids, strict=True):
        keep = row_ids >= 0
        rows = zip(row_ids[keep], row_scores[keep], index.payloads(row_ids[keep]), strict=True)
        out.append([(int(i), round(float(s), 6), p) for i, s, p in rows])
    return out


def search_images(index_dir, files, k: int = 5, model_path=None) -> list[dict]:
    """The ``k`` nearest indexed images of each query image file.

    Args:
        index_dir: a folder written by :func:`build_image_index`.
        files: query image files.
        k: neighbours per query.
        model_path: the embedding model (default: the one the index was built with).

    Returns:
        One ``{"file", "neighbours": [{"id", "score" (cosine), "path"}]}`` per query, best
        first.

    Raises:
        FileNotFoundError: no index or model; InputValueError: an incompatible model;
        kvision.preprocess.ImageError: a query that cannot be decoded.
    """
    from kvision.index import load_index

    index = load_index(index_dir)
    meta = dict(index.contract or {})
    model_path = model_path or meta.get("source_model")
    if not model_path:
        raise InputValueError(f"{index_dir} does not name its model: pass the embedding model.")
    contract, runtime = _open(model_path)
    check_compatible(meta, contract, model_path)
    vectors, _, _ = embed_files(contract, runtime, list(files), on_error="raise")
    runtime.close()
    return [{"file": str(f), "neighbours": [{"id": i, "score": s, "path": p} for i, s, p in hits]}
            for f, hits in zip(files, nearest(index, vectors, k), strict=True)]  # fmt: skip
