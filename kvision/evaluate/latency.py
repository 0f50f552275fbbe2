"""Wall-clock latency of one inference call: warm-up, then timed runs, then percentiles.

The result is JSON-ready and is what an artifact's ``latency`` field in ``report.json`` holds::

    stats = measure_latency(lambda x: interpreter_predict(x), sample, warmup=10, runs=200)
    stats["p50_ms"], stats["p90_ms"]

:func:`inference_timing` is the benchmark's measurement of one runtime (batch-1 latency with
every sample kept, then throughput at a batch size); inputs may be one array or a dict of named
arrays (a multi-input artifact's feeds), sliced together along axis 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from kvision.errors import InputTypeError, InputValueError

__all__ = ["inference_timing", "measure_latency", "latency_stats"]


def measure_latency(
    fn: Callable,
    x,
    warmup: int = 10,
    runs: int = 100,
    batch_sizes: Sequence[int] | None = None,
) -> dict:
    """Time ``fn(x)`` with ``time.perf_counter_ns`` after ``warmup`` untimed calls.

    ``fn`` must block until its result is ready (call ``.numpy()`` on a TF tensor inside ``fn``
    if needed); its return value is ignored.

    Args:
        fn: runs one inference on its single argument.
        x: the input passed to ``fn`` unchanged when ``batch_sizes`` is ``None``.
        warmup: untimed calls before timing each batch size (default 10, >= 0).
        runs: timed calls per batch size (default 100, >= 1).
        batch_sizes: optional batch sizes to time. ``x`` is then a pool of samples along axis 0
            (an array, or a dict of arrays with the same number of rows) and batch ``b`` is its
            first ``b`` rows (repeated cyclically when the pool is smaller).

    Returns:
        ``{"p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms", "runs",
        "warmup"}`` for ``fn(x)``. With ``batch_sizes``, the top-level numbers are those of the
        first batch size, plus ``"batch_size"`` and ``"by_batch_size"``: one such dict per batch
        size with ``"batch_size"``, ``"per_image_ms"`` (p50 / b) and ``"images_per_s"``.

    Example:
        >>> stats = measure_latency(lambda v: sum(v), [1, 2, 3], warmup=1, runs=5)
        >>> stats["runs"], stats["p50_ms"] <= stats["p99_ms"]
        (5, True)
    """
    if not callable(fn):
        raise TypeError(f"`fn` should be callable. Received: fn={fn!r}")
    runs = _check_int(runs, "runs", minimum=1)
    warmup = _check_int(warmup, "warmup", minimum=0)
    if batch_sizes is None:
        return _time(fn, x, warmup, runs)

    sizes = _check_batch_sizes(batch_sizes)
    pool, n = _pool(x)
    by_size = []
    for b in sizes:
        batch = _take(pool, np.arange(b) % n)
        stats = _time(fn, batch, warmup, runs)
        stats["batch_size"] = b
        stats["per_image_ms"] = stats["p50_ms"] / b
        stats["images_per_s"] = 1000.0 * b / stats["p50_ms"] if stats["p50_ms"] > 0 else None
        by_size.append(stats)
    result = {k: v for k, v in by_size[0].items() if k not in ("per_image_ms", "images_per_s")}
    result["by_batch_size"] = by_size
    return result


def inference_timing(
    fn: Callable,
    x,
    warmup: int = 10,
    runs: int = 100,
    batch_size: int = 32,
    throughput_runs: int = 20,
) -> dict:
    """Batch-1 latency, then throughput at ``batch_size``, of ``fn`` on rows of ``x``.

    Args:
        fn: runs one inference on its argument (e.g. ``Runtime.run``) and blocks until done.
        x: a pool of samples along axis 0: an array or a dict of named arrays (same rows).
        warmup: untimed batch-1 calls (default 10, >= 0); throughput gets 2.
        runs: timed batch-1 calls (default 100, >= 1).
        batch_size: throughput batch (default 32; an artifact with a fixed batch is timed at
            its own, which the caller passes).
        throughput_runs: timed calls at ``batch_size`` (default 20, >= 1).

    Returns:
        ``{"latency": latency_stats(...) + {"batch_size": 1}, "samples_ms": [every batch-1
        call in ms], "throughput": {"batch_size", "p50_ms", "images_per_s"}}``.

    Example:
        >>> t = inference_timing(rt.run, {"image": x}, warmup=1, runs=5, batch_size=4)
        >>> t["latency"]["runs"], t["throughput"]["batch_size"]
        (5, 4)
    """
    if not callable(fn):
        raise TypeError(f"`fn` should be callable. Received: fn={fn!r}")
    runs = _check_int(runs, "runs", minimum=1)
    warmup = _check_int(warmup, "warmup", minimum=0)
    pool, _ = _pool(x)
    one = _take(pool, np.arange(1))
    for _ in range(warmup):
        fn(one)
    times = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        start = clock()
        fn(one)
        times[i] = clock() - start
    latency = latency_stats(times, warmup)
    latency["batch_size"] = 1
    stats = measure_latency(fn, pool, warmup=2, runs=throughput_runs, batch_sizes=[batch_size])
    best = stats["by_batch_size"][0]
    return {
        "latency": latency,
        "samples_ms": [round(t / 1e6, 5) for t in times.tolist()],
        "throughput": {
            "batch_size": best["batch_size"],
            "p50_ms": best["p50_ms"],
            "images_per_s": best["images_per_s"],
        },
    }


def _pool(x) -> tuple:
    """``(pool, rows)``: an array or a dict of arrays with the same rows, non-empty."""
    if isinstance(x, dict):
        pool = {k: np.asarray(v) for k, v in x.items()}
        rows = {k: (len(v) if v.ndim else 0) for k, v in pool.items()}
        n = next(iter(rows.values()), 0)
        if not pool or len(set(rows.values())) != 1:
            raise InputValueError(
                f"`x` should be a dict of arrays with the same number of rows. Received: {rows}"
            )
    else:
        pool = np.asarray(x)
        n = len(pool) if pool.ndim else 0
    if n == 0:
        shape = {k: v.shape for k, v in pool.items()} if isinstance(pool, dict) else pool.shape
        raise InputValueError(
            "`x` should be a non-empty pool of samples along axis 0 when batches are timed. "
            f"Received: x with shape {shape}"
        )
    return pool, n


def _take(pool, idx: np.ndarray):
    if isinstance(pool, dict):
        return {k: v[idx] for k, v in pool.items()}
    return pool[idx]


def latency_stats(times_ns: Sequence[int], warmup: int = 0) -> dict:
    """Summarize timed durations (nanoseconds) as milliseconds percentiles.

    Args:
        times_ns: one duration per timed run, in nanoseconds (at least one).
        warmup: the number of untimed warm-up runs, recorded as is (default 0).

    Example:
        >>> latency_stats([1_000_000, 3_000_000])["mean_ms"]
        2.0
    """
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    if ms.ndim != 1 or len(ms) == 0:
        raise ValueError(
            f"`times_ns` should be a non-empty list of durations. Received shape: {ms.shape}"
        )
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "std_ms": float(ms.std()),
        "runs": int(len(ms)),
        "warmup": int(warmup),
    }


def _time(fn: Callable, x, warmup: int, runs: int) -> dict:
    for _ in range(warmup):
        fn(x)
    times = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        start = clock()
        fn(x)
        times[i] = clock() - start
    return latency_stats(times, warmup)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputValueError(
            f"`{name}` should be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def _check_batch_sizes(batch_sizes) -> list[int]:
    if isinstance(batch_sizes, np.ndarray):
        batch_sizes = batch_sizes.tolist()
    if isinstance(batch_sizes, str) or not isinstance(batch_sizes, Sequence):
        raise InputTypeError(
            "`batch_sizes` should be a list of positive integers, e.g. [1, 8, 32]. "
            f"Received: batch_sizes={batch_sizes!r}"
        )
    if not batch_sizes:
        raise InputValueError("`batch_sizes` should not be empty. Received: batch_sizes=[]")
    return [_check_int(b, f"batch_sizes[{i}]", minimum=1) for i, b in enumerate(batch_sizes)]
