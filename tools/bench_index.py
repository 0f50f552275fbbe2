"""Vector-index benchmark: build time, query latency and recall@k of kvision's FAISS index kinds.

One run over several index sizes (default 10k, 100k and 1M stored vectors) of synthetic
embeddings: unit vectors drawn around ``--clusters`` random unit centres (Gaussian noise of
norm about ``--spread``), so nearest neighbours are neither random nor trivially separated;
queries are fresh draws from the same clusters. For each size and each kind:

* ``exact``: brute force (the reference);
* ``hnsw``: ``M``, ``ef_construction``, ``ef_search`` (Malkov & Yashunin, TPAMI 2018);
* ``ivf``: ``nlist`` (default ``round(sqrt(N))``), ``nprobe`` (Jégou et al., TPAMI 2011).

it reports the build time (adding every vector; IVF includes k-means training), the latency of
single-vector queries through :class:`kvision.index.FaissIndex` (p50 / p99 over ``--queries``
queries, after a short warm-up) and recall@k of each kind's answers against exact search. A kind
that fails is a row with its error, not a crash. Usage::

    .venv/bin/python tools/bench_index.py --sizes 10000 100000 1000000 --json bench_index.json

JSON schema (``kvision.bench_index/1``): ``dim``, ``k``, ``queries``, ``clusters``,
``spread``, ``seed``, ``machine`` (cpus, threads, versions), ``rows``: list of ``{size, kind,
params, status ("ok" or the error), build_s, p50_ms, p99_ms, recall}`` (``null`` where it
failed), ``latency_ratio``: ``{size: {kind: p50(kind) / p50(exact)}}``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

SCHEMA = "kvision.bench_index/1"
KINDS = ("exact", "hnsw", "ivf")
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
WARMUP = 5


def make_vectors(
    n: int,
    dim: int,
    clusters: int,
    spread: float,
    seed: int,
    stream: int = 0,
    chunk: int = 100_000,
) -> np.ndarray:
    """``float32 [n, dim]`` unit vectors around ``clusters`` seeded unit centres.

    The centres depend on ``seed`` only; ``stream`` selects an independent draw around them
    (0: stored vectors, 1: queries). Generated in chunks to bound memory at 1M vectors.
    """
    centres = np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, stream + 1])
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        noise = rng.standard_normal((m, dim), dtype=np.float32) * np.float32(
            spread / math.sqrt(dim)
        )
        block = centres[rng.integers(0, clusters, m)] + noise
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def kind_params(kind: str, size: int, args) -> list[dict]:
    """The FAISS parameters of ``kind`` at ``size`` stored vectors: one dict per search-time
    setting swept (``--ef-search`` / ``--nprobe`` values), all on one built index."""
    if kind == "hnsw":
        return [{"M": args.M, "ef_construction": args.ef_construction, "ef_search": ef}
                for ef in args.ef_search]  # fmt: skip
    if kind == "ivf":
        nlist = args.nlist or max(1, round(math.sqrt(size)))
        return [{"nlist": nlist, "nprobe": n} for n in sorted({min(p, nlist) for p in args.nprobe})]
    return [{}]


def bench_kind(kind: str, sweep: list[dict], base: np.ndarray, queries: np.ndarray,
               k: int) -> list[dict]:  # fmt: skip
    """Build one index (``sweep[0]``'s parameters) and time single-vector queries at each
    search-time setting of ``sweep``; each result's ``ids`` holds every query's answer."""
    from kvision.index import FaissIndex
    from kvision.index.faiss_index import SEARCH_PARAMS

    index = FaissIndex(base.shape[1], kind=kind, metric="cosine", **sweep[0])
    start = time.perf_counter()
    index.train(base)
    index.add(base)
    build_s = time.perf_counter() - start
    results = []
    for params in sweep:
        index.set_params(**{n: v for n, v in params.items() if n in SEARCH_PARAMS})
        for q in queries[:WARMUP]:
            index.search(q[None], k)
        times, ids = [], np.empty((len(queries), k), np.int64)
        for i, q in enumerate(queries):
            start = time.perf_counter()
            ids[i] = index.search(q[None], k)[1][0]
            times.append(time.perf_counter() - start)
        ms = np.array(times) * 1e3
        results.append({"build_s": build_s, "p50_ms": float(np.percentile(ms, 50)),
                        "p99_ms": float(np.percentile(ms, 99)), "ids": ids})  # fmt: skip
    return results


def run(args) -> dict:
    """The whole benchmark (see the module docstring); returns the JSON report."""
    from kvision.index import recall_at_k

    queries_cache: dict = {}
    rows = []
    for size in args.sizes:
        base = make_vectors(size, args.dim, args.clusters, args.spread, args.seed, stream=0)
        key = (args.dim, args.clusters, args.spread, args.seed)
        if key not in queries_cache:
            queries_cache[key] = make_vectors(
                args.queries, args.dim, args.clusters, args.spread, args.seed, stream=1
            )
        queries = queries_cache[key]
        exact_ids = None
        for kind in args.kinds:
            sweep = kind_params(kind, size, args)
            empty = {
                "status": "ok",
                "build_s": None,
                "p50_ms": None,
                "p99_ms": None,
                "recall": None,
            }
            kind_rows = [{"size": size, "kind": kind, "params": p, **empty} for p in sweep]
            try:
                results = bench_kind(kind, sweep, base, queries, args.k)
                if kind == "exact":
                    exact_ids = results[0]["ids"]
                if exact_ids is None:  # --kinds without exact (or exact failed): compute it
                    exact_ids = _exact_ids(base, queries, args.k)
                for row, result in zip(kind_rows, results, strict=True):
                    row["recall"] = recall_at_k(result.pop("ids"), exact_ids, args.k)
                    row.update(result)
            except Exception as exc:  # a failing kind is a row with a reason
                for row in kind_rows:
                    row["status"] = f"{type(exc).__name__}: {exc}"
            for row in kind_rows:
                rows.append(row)
                print(_row_line(row), file=sys.stderr, flush=True)
            gc.collect()
        del base
        gc.collect()
    return {
        "schema": SCHEMA,
        "dim": args.dim,
        "k": args.k,
        "queries": args.queries,
        "clusters": args.clusters,
        "spread": args.spread,
        "seed": args.seed,
        "machine": _machine(args.threads),
        "rows": rows,
        "latency_ratio": latency_ratios(rows),
    }


def _exact_ids(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    from kvision.index import FaissIndex

    index = FaissIndex(base.shape[1], kind="exact")
    index.add(base)
    return index.search(queries, k)[1]


def row_label(row: dict) -> str:
    """``hnsw``, or ``hnsw ef_search=128`` when that kind's search setting was swept."""
    setting = {n: v for n, v in row["params"].items() if n in ("ef_search", "nprobe")}
    return " ".join([row["kind"], *(f"{n}={v}" for n, v in setting.items())])


def latency_ratios(rows: list[dict]) -> dict:
    """``{size: {label: p50 / p50(exact)}}`` for the sizes whose exact row succeeded; the label
    is the kind, with its search setting when several were swept (:func:`row_label`)."""
    ratios: dict = {}
    exact = {r["size"]: r["p50_ms"] for r in rows if r["kind"] == "exact" and r["p50_ms"]}
    from collections import Counter

    count = Counter((r["size"], r["kind"]) for r in rows)
    for r in rows:
        if r["kind"] != "exact" and r["p50_ms"] is not None and r["size"] in exact:
            label = row_label(r) if count[r["size"], r["kind"]] > 1 else r["kind"]
            ratios.setdefault(str(r["size"]), {})[label] = r["p50_ms"] / exact[r["size"]]
    return ratios


def markdown(report: dict) -> str:
    """The report as one Markdown table, then the latency ratios per size."""
    k = report["k"]
    lines = [
        f"Vector index benchmark: dim {report['dim']}, {report['queries']} single-vector "
        f"queries, {report['clusters']} clusters, {report['machine']['cpus']} CPUs, "
        f"faiss {report['machine']['faiss']}",
        "",
        f"| size | index | params | build s | p50 ms | p99 ms | recall@{k} | status |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        params = " ".join(f"{name}={value}" for name, value in r["params"].items()) or "-"
        lines.append(
            f"| {r['size']} | {r['kind']} | {params} | {_fmt(r['build_s'], 3)} | "
            f"{_fmt(r['p50_ms'], 3)} | {_fmt(r['p99_ms'], 3)} | {_fmt(r['recall'], 4)} | "
            f"{r['status']} |"
        )
    lines.append("")
    for size, ratios in report["latency_ratio"].items():
        shown = ", ".join(f"{kind} {ratio:.3f}x" for kind, ratio in ratios.items())
        lines.append(f"latency p50 approx/exact at {size}: {shown}")
    return "\n".join(lines)


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row_line(row: dict) -> str:
    return (
        f"[bench_index] size={row['size']} {row['kind']}: {row['status']} "
        f"build={_fmt(row['build_s'], 3)}s p50={_fmt(row['p50_ms'], 3)}ms "
        f"recall={_fmt(row['recall'], 4)}"
    )


def _machine(threads: int | None) -> dict:
    from kvision.index.faiss_index import faiss_module

    faiss = faiss_module()
    return {
        "cpus": os.cpu_count(),
        "threads": threads or faiss.omp_get_max_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "platform": platform.platform(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200, help="single-vector queries timed")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (recall@k)")
    parser.add_argument("--clusters", type=int, default=256)
    parser.add_argument("--spread", type=float, default=0.6, help="noise norm around a centre")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--M", type=int, default=32, help="HNSW graph degree")
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument(
        "--ef-search",
        type=int,
        nargs="+",
        default=[64],
        help="HNSW search candidates; several: one row each, one build",
    )
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default sqrt(N))")
    parser.add_argument(
        "--nprobe",
        type=int,
        nargs="+",
        default=[8],
        help="IVF lists searched; several: one row each, one build",
    )
    parser.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads")
    parser.add_argument("--json", default=None, help="write the report as JSON to this path")
    args = parser.parse_args(argv)
    for name in ("dim", "queries", "k", "clusters", "M", "ef_construction", "ef_search", "nprobe"):
        values = getattr(args, name)
        if min(values if isinstance(values, list) else [values]) < 1:
            parser.error(f"--{name.replace('_', '-')} should be >= 1")
    if min(args.sizes) < args.k:
        parser.error(f"every --sizes value should be >= --k ({args.k}). Received: {args.sizes}")
    if args.threads is not None:
        from kvision.index.faiss_index import set_num_threads

        set_num_threads(args.threads)
    report = run(args)
    print(markdown(report))
    if args.json:
        from kvision.io import atomic_write_json

        print(f"wrote {atomic_write_json(args.json, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
