"""Write a benchmark document as ``benchmark.json``, ``benchmark.csv``, ``benchmark.md`` and
``benchmark.html`` (data first; the tables and plots are made from the JSON).

Example:
    >>> paths = write_outputs(doc, "runs/x/benchmark")
    >>> sorted(p.name for p in paths.values())
    ['benchmark.csv', 'benchmark.html', 'benchmark.json', 'benchmark.md']
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kvision.io import atomic_write_json, atomic_write_text

NOT_DONE = "not done"

CSV_COLUMNS = (
    "artifact",
    "runtime",
    "threads",
    "status",
    "size_mb",
    "gzip_mb",
    "input_dtype",
    "accuracy",
    "delta_vs_baseline",
    "agreement",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "throughput_batch",
    "images_per_s",
    "load_s",
    "peak_rss_mb",
    "peak_delta_mb",
    "task",
    "outputs",
    "not_done",
    "reason",
    "path",
)


def write_outputs(doc: dict, out_dir) -> dict[str, Path]:
    """Write the four files into ``out_dir`` atomically; returns ``{kind: path}``."""
    from deploy.benchmark.html import render_html

    out = Path(out_dir)
    return {
        "json": atomic_write_json(out / "benchmark.json", doc),
        "csv": atomic_write_text(out / "benchmark.csv", render_csv(doc)),
        "markdown": atomic_write_text(out / "benchmark.md", render_markdown(doc)),
        "html": atomic_write_text(out / "benchmark.html", render_html(doc)),
    }


def flat_row(row: dict) -> dict:
    """One benchmark row as the flat CSV record (``CSV_COLUMNS``); a check not done reads
    ``"not done"`` in its column and its reason in ``not_done``."""
    metric = row.get("metric") or {}
    lat = row.get("latency") or {}
    thr = row.get("throughput") or {}
    mem = row.get("memory") or {}
    not_done = row.get("not_done") or {}

    def value(check, number):
        return NOT_DONE if number is None and check in not_done else number

    return {
        "artifact": row["artifact"],
        "runtime": row["runtime"],
        "threads": row.get("threads"),
        "status": row["status"],
        "size_mb": row.get("size_mb"),
        "gzip_mb": row.get("gzip_mb"),
        "input_dtype": (row.get("input") or {}).get("dtype"),
        "accuracy": value("metric", metric.get("value")),
        "delta_vs_baseline": metric.get("delta_vs_baseline"),
        "agreement": value("agreement", row.get("agreement")),
        "p50_ms": lat.get("p50_ms"),
        "p90_ms": lat.get("p90_ms"),
        "p99_ms": lat.get("p99_ms"),
        "throughput_batch": thr.get("batch_size"),
        "images_per_s": thr.get("images_per_s"),
        "load_s": row.get("load_s"),
        "peak_rss_mb": mem.get("peak_rss_mb"),
        "peak_delta_mb": mem.get("peak_delta_mb"),
        "task": row.get("task"),
        "outputs": " ".join(o["name"] for o in row.get("outputs") or []),
        "not_done": "; ".join(f"{k} {NOT_DONE}: {v}" for k, v in not_done.items()),
        "reason": row.get("reason", ""),
        "path": row.get("path"),
    }


def render_csv(doc: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in doc["rows"]:
        writer.writerow({k: "" if v is None else v for k, v in flat_row(row).items()})
    return buf.getvalue()


def render_markdown(doc: dict) -> str:
    """The benchmark table (every row, every status, with reasons) and its settings."""
    s = doc["settings"]
    base = doc.get("baseline") or {}
    data = doc.get("data") or {}
    host = doc.get("host") or {}
    lines = [
        "# Benchmark",
        "",
        f"- host: {host.get('platform')}, {host.get('cpu_count')} CPUs; TensorFlow "
        f"{host.get('tensorflow')}, LiteRT {host.get('ai_edge_litert')}, ONNX Runtime "
        f"{host.get('onnxruntime') or 'not installed'}",
        f"- latency: batch 1, {s['warmup']} warm-up + {s['runs']} timed calls; throughput at "
        f"batch {s['batch_size']} ({s['throughput_runs']} calls); memory: {s['memory_method']}",
        f"- data: {data.get('source', 'none (probe inputs, no metric)')}"
        + (f", n={data.get('n')}" if data else ""),
        f"- baseline: {base.get('artifact', 'none')} / {base.get('runtime', '-')}"
        + (f", accuracy {base['metric']:.4f}" if base.get("metric") is not None else ""),
    ]
    if s.get("floor") is not None:
        lines.append(f"- floor: accuracy >= {s['floor']}")
    lines += [
        "",
        "| artifact | runtime | threads | status | size MB | gzip MB | in | accuracy | Δ base "
        "| agree | p50 ms | p90 ms | p99 ms | img/s @N | load s | peak MB (Δ) | reason |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in doc["rows"]:
        f = flat_row(row)
        thr = (
            f"{f['images_per_s']:,.0f} @{f['throughput_batch']}"
            if f["images_per_s"] is not None
            else "-"
        )
        cells = [
            f["artifact"],
            f["runtime"],
            _fmt(f["threads"], "{}"),
            f["status"],
            _fmt(f["size_mb"], "{:.3f}"),
            _fmt(f["gzip_mb"], "{:.3f}"),
            _fmt(f["input_dtype"], "{}"),
            _fmt(f["accuracy"], "{:.4f}"),
            _fmt(f["delta_vs_baseline"], "{:+.4f}"),
            _fmt(f["agreement"], "{:.3f}"),
            _fmt(f["p50_ms"], "{:.3f}"),
            _fmt(f["p90_ms"], "{:.3f}"),
            _fmt(f["p99_ms"], "{:.3f}"),
            thr,
            _fmt(f["load_s"], "{:.2f}"),
            _fmt(f["peak_rss_mb"], "{:.0f}")
            + (f" (+{f['peak_delta_mb']:.0f})" if f["peak_delta_mb"] is not None else ""),
            "; ".join(t for t in (f["reason"], f["not_done"]) if t).replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str) -> str:
    if value is None or value == "":
        return "-"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)
