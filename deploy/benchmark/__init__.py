"""Benchmark every artifact on every runtime: status, size, metric, latency, memory.

Entry points: :func:`run_benchmark` (Python) and :func:`main` (``kvision benchmark``).
The ``benchmark.json`` schema is in :mod:`deploy.benchmark.schema`.

Example:
    >>> from deploy.benchmark import EvalData, run_benchmark
    >>> doc = run_benchmark(["tflite_models"], out_dir="/tmp/bench", threads=[1, 2])
"""

from deploy.benchmark.cli import main
from deploy.benchmark.data import EvalData
from deploy.benchmark.run import run_benchmark
from deploy.benchmark.schema import (
    BENCHMARK_SCHEMA_VERSION,
    STATUSES,
    BenchmarkRow,
    validate_benchmark,
)

__all__ = [
    "BENCHMARK_SCHEMA_VERSION",
    "STATUSES",
    "BenchmarkRow",
    "EvalData",
    "main",
    "run_benchmark",
    "validate_benchmark",
]
