"""Prometheus text-format metrics for ``kvision serve`` (no client library needed).

Exposed at ``GET /metrics``::

    kvision_requests_total{model,version,endpoint,code}      counter
    kvision_request_seconds_bucket{endpoint,le}               histogram (+ _sum, _count)
    kvision_predict_instances_total{model,version}            counter
    kvision_batch_size_bucket{model,le}                       histogram of run batch sizes
    kvision_inflight_requests                                 gauge

Example:
    >>> m = Metrics(); m.observe_request("m", 1, "predict", 200, 0.004)
    >>> "kvision_requests_total" in m.render()
    True
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}'
            for b, c in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.total}")
        return out


class Metrics:
    """Thread-safe counters and histograms rendered in Prometheus text format 0.0.4."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = defaultdict(int)
        self.latency = defaultdict(lambda: _Histogram(LATENCY_BUCKETS))
        self.instances = defaultdict(int)
        self.batches = defaultdict(lambda: _Histogram(BATCH_BUCKETS))
        self.inflight = 0

    def observe_request(self, model, version, endpoint: str, code: int, seconds: float) -> None:
        with self._lock:
            self.requests[(model or "", str(version or ""), endpoint, int(code))] += 1
            self.latency[endpoint].observe(seconds)

    def observe_predict(self, model: str, version: int, n: int) -> None:
        with self._lock:
            self.instances[(model, str(version))] += n

    def observe_batch(self, model: str, n: int) -> None:
        with self._lock:
            self.batches[model].observe(n)

    def add_inflight(self, delta: int) -> None:
        with self._lock:
            self.inflight += delta

    def render(self) -> str:
        with self._lock:
            out = [
                "# HELP kvision_requests_total Requests by model, version, endpoint, HTTP code.",
                "# TYPE kvision_requests_total counter",
            ]
            for (m, v, e, c), n in sorted(self.requests.items()):
                out.append(
                    f'kvision_requests_total{{model="{_esc(m)}",version="{v}",endpoint="{e}",'
                    f'code="{c}"}} {n}'
                )
            out += [
                "# HELP kvision_request_seconds Request latency in seconds by endpoint.",
                "# TYPE kvision_request_seconds histogram",
            ]
            for e, h in sorted(self.latency.items()):
                out += h.lines("kvision_request_seconds", f'endpoint="{e}"')
            out += [
                "# HELP kvision_predict_instances_total Images predicted.",
                "# TYPE kvision_predict_instances_total counter",
            ]
            for (m, v), n in sorted(self.instances.items()):
                out.append(
                    f'kvision_predict_instances_total{{model="{_esc(m)}",version="{v}"}} {n}'
                )
            out += [
                "# HELP kvision_batch_size Images per runtime call (after dynamic batching).",
                "# TYPE kvision_batch_size histogram",
            ]
            for m, h in sorted(self.batches.items()):
                out += h.lines("kvision_batch_size", f'model="{_esc(m)}"')
            out += [
                "# HELP kvision_inflight_requests Requests being handled now.",
                "# TYPE kvision_inflight_requests gauge",
                f"kvision_inflight_requests {self.inflight}",
            ]
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
