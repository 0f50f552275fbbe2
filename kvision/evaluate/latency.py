"""Wall-clock latency of one inference call: warm-up, then timed runs, then percentiles.

The result is JSON-ready and is what an artifact's ``latency`` field in ``report.json`` holds::

    stats = measure_latency(lambda x: interpreter_predict(x), sample, warmup=10, runs=200)
    stats["p50_ms"], stats["p90_ms"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from kvision.errors import InputTypeError, InputValueError

__all__ = ["measure_latency", "latency_stats"]


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
        batch_sizes: optional batch sizes to time. ``x`` is then a pool of samples along axis 0 and
            batch ``b`` is its first ``b`` rows (repeated cyclically when the pool is smaller).

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
    pool = np.asarray(x)
    if pool.ndim < 1 or len(pool) == 0:
        raise ValueError(
            "`x` should be a non-empty array of samples along axis 0 when `batch_sizes` is given. "
            f"Received: x with shape {pool.shape}"
        )
    by_size = []
    for b in sizes:
        batch = pool[np.arange(b) % len(pool)]
        stats = _time(fn, batch, warmup, runs)
        stats["batch_size"] = b
        stats["per_image_ms"] = stats["p50_ms"] / b
        stats["images_per_s"] = 1000.0 * b / stats["p50_ms"] if stats["p50_ms"] > 0 else None
        by_size.append(stats)
    result = {k: v for k, v in by_size[0].items() if k not in ("per_image_ms", "images_per_s")}
    result["by_batch_size"] = by_size
    return result


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
