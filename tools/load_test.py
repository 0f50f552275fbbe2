#!/usr/bin/env python
"""Loopback load test of ``kvision serve``: concurrent clients x requests against a real
uvicorn server on 127.0.0.1, versus direct in-process calls of the same model.

Reports errors (must be 0), client-side latency p50/p99, throughput, and the ratio of the
server's p50 to a direct ``ServedVersion.predict`` call (what HTTP + JSON + the event loop
cost). Request counts are bounded (``--clients`` x ``--requests``).

Usage::

    python tools/load_test.py                                   # reference float32 model
    python tools/load_test.py --model m.tflite --clients 8 --requests 100 --batch-max-size 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MAX_TOTAL = 100_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app, port: int):
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` in a daemon thread; returns the server."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.02)
    return server, thread


def run_clients(port: int, path: str, body: bytes, clients: int, requests: int) -> dict:
    """``clients`` threads, each sending ``requests`` POSTs on one keep-alive connection."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad = [], []
        for _ in range(requests):
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or b"predictions" not in data:
                    bad.append(f"{resp.status}: {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                bad.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="load_test", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "tflite_models" / "classifier_float32.tflite"))
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=100, help="requests per client (100)")
    p.add_argument("--threads", type=int, help="runtime threads")
    p.add_argument("--instances", type=int, default=1, help="runtimes per version (1)")
    p.add_argument("--batch-max-size", type=int, default=0, help="dynamic batching (0 = off)")
    p.add_argument("--batch-timeout-ms", type=float, default=2.0)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.clients * args.requests > MAX_TOTAL:
        p.error(f"--clients x --requests should be between 1 and {MAX_TOTAL}")

    from deploy.server import create_app, load_store

    store = load_store([f"m={args.model}"], threads=args.threads, instances=args.instances)
    served = store.resolve("m")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, *served.contract.shape), dtype=np.uint8)
    x = served.contract.normalize(pixels)
    body = json.dumps({"instances": x.tolist()}).encode()

    n_direct = min(args.clients * args.requests, 2000)
    for _ in range(20):
        served.predict(x)
    times = []
    for _ in range(n_direct):
        t0 = time.perf_counter()
        served.predict(x)
        times.append(time.perf_counter() - t0)
    direct_p50 = float(np.percentile(np.asarray(times) * 1000, 50))

    batching = None
    if args.batch_max_size:
        batching = {"max_batch_size": args.batch_max_size, "timeout_ms": args.batch_timeout_ms}
    port = _free_port()
    server, thread = start_server(create_app(store, batching=batching), port)
    try:
        run_clients(port, "/v1/models/m:predict", body, 1, 10)  # warm-up
        result = run_clients(port, "/v1/models/m:predict", body, args.clients, args.requests)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
    result.update(
        model=args.model,
        clients=args.clients,
        requests_per_client=args.requests,
        batching=batching,
        instances=args.instances,
        direct_p50_ms=direct_p50,
        ratio_p50_server_vs_direct=result["p50_ms"] / direct_p50,
        direct_throughput_single_caller=1000.0 / direct_p50,
    )
    print(
        f"{args.clients} clients x {args.requests} requests: errors {result['errors']}, "
        f"p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
        f"{result['throughput_rps']:.0f} req/s | direct call p50 {direct_p50:.4f} ms "
        f"({1000 / direct_p50:.0f}/s) | server/direct p50 ratio "
        f"{result['ratio_p50_server_vs_direct']:.1f}"
    )
    if args.json:
        from kvision.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
