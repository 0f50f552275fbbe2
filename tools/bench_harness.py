#!/usr/bin/env python
"""How much does the benchmark harness add? Its batch-1 latency for one artifact against a bare
``interpreter.invoke()`` loop on the same model, same threads, same process, same run.

The harness number is ``run_benchmark``'s p50 (LiteRTRuntime.predict: input checks, quantize,
set_tensor, invoke, get_tensor, dequantize); the bare number times ``invoke()`` alone on a
tensor set once. The ratio (harness / bare) is the harness overhead; the bare loop is timed
before and after the harness to show drift.

Usage::

    python tools/bench_harness.py                                  # reference float32 model
    python tools/bench_harness.py --model m.tflite --threads 2 --runs 2000 --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def bare_invoke(path, threads: int, runs: int, warmup: int) -> dict:
    """p50/p90/p99 of ``invoke()`` alone (input set once, batch 1)."""
    from kvision.evaluate import latency_stats
    from kvision.export.litert import LiteRTModel

    m = LiteRTModel(path, num_threads=threads)
    interp = m.interpreter
    inp = m.input_details[0]
    shape = [1, *m.input_shape[1:]]
    if list(inp["shape"]) != shape:
        interp.resize_tensor_input(inp["index"], shape)
        interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.zeros(shape, dtype=m.input_dtype))
    for _ in range(warmup):
        interp.invoke()
    times = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        t0 = clock()
        interp.invoke()
        times[i] = clock() - t0
    return latency_stats(times, warmup)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="bench_harness", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "tflite_models" / "classifier_float32.tflite"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from deploy.benchmark import run_benchmark

    before = bare_invoke(args.model, args.threads, args.runs, args.warmup)
    doc = run_benchmark(
        [args.model],
        runtimes=["litert"],
        threads=[args.threads],
        warmup=args.warmup,
        runs=args.runs,
        throughput_runs=5,
        progress=False,
    )
    harness = doc["rows"][0]["latency"]
    after = bare_invoke(args.model, args.threads, args.runs, args.warmup)
    bare_p50 = min(before["p50_ms"], after["p50_ms"])
    result = {
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "harness_p50_ms": harness["p50_ms"],
        "harness_p99_ms": harness["p99_ms"],
        "bare_invoke_p50_ms": [before["p50_ms"], after["p50_ms"]],
        "bare_invoke_p99_ms": [before["p99_ms"], after["p99_ms"]],
        "ratio_p50": harness["p50_ms"] / bare_p50,
        "overhead_us": (harness["p50_ms"] - bare_p50) * 1000,
    }
    print(
        f"harness p50 {harness['p50_ms']:.4f} ms | bare invoke() p50 {before['p50_ms']:.4f} / "
        f"{after['p50_ms']:.4f} ms (before / after) | ratio {result['ratio_p50']:.3f} "
        f"(+{result['overhead_us']:.1f} us per call)"
    )
    if args.json:
        from kvision.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
