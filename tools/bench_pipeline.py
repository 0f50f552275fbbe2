"""Benchmark the main job: wall time and accuracy of `kvision pipeline` from scratch.

    .venv/bin/python tools/bench_pipeline.py [--runs-dir DIR] [--json out.json] [key=value ...]

Runs the default pipeline (plus any overrides) in a fresh run directory as a subprocess, as a
user would, and prints the wall time of the whole command, each stage's time from report.json, and
every artifact's accuracy, size and latency. Targets checked (reported, never asserted in tests):
float test accuracy >= 0.92 and wall time <= 15 min on a 2-core machine for the float job (train,
evaluate, export, benchmark); the compression targets of ``tools/bench_compress.py`` on the
compress stage's result; the total with compression is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACCURACY_TARGET = 0.92
WALL_TARGET_S = 15 * 60


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", help="parent folder for the run (default: a temp folder)")
    parser.add_argument("--json", help="write the measurements to this JSON file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="kvision-bench-"))
    name = f"bench_{time.strftime('%Y%m%d_%H%M%S')}"
    cmd = [
        sys.executable,
        "-m",
        "kvision.cli",
        "pipeline",
        f"runs_dir={runs_dir}",
        f"name={name}",
        *args.overrides,
    ]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    report_path = runs_dir / name / "report.json"
    if not report_path.is_file():
        print(f"pipeline failed (exit {proc.returncode}) after {wall:.0f} s; no report.json")
        return 1
    report = json.loads(report_path.read_text())
    stages = report["run"]["wall_time_s"]
    keras_acc = report["evaluation"]["accuracy"]
    compress_s = stages.get("compress", 0.0)
    float_job = wall - compress_s
    met = "met" if float_job <= WALL_TARGET_S else "MISSED"
    print(f"\nwall time (whole command): {wall:.1f} s = {wall / 60:.1f} min")
    print(
        f"float job (all but the compress stage): {float_job / 60:.1f} min "
        f"(target <= {WALL_TARGET_S / 60:.0f} min: {met}); compress stage {compress_s / 60:.1f} min"
    )
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    print(
        f"float test accuracy (Keras): {keras_acc:.4f} (target >= {ACCURACY_TARGET}: "
        f"{'met' if keras_acc >= ACCURACY_TARGET else 'MISSED'})"
    )
    print("\n| artifact | status | accuracy | size KB | gzip KB | p50 ms | p90 ms |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for a in report["artifacts"]:
        m, lat = a.get("metrics") or {}, a.get("latency") or {}
        acc = f"{m['accuracy']:.4f}" if m.get("accuracy") is not None else "-"
        p50 = f"{lat['p50_ms']:.3f}" if lat.get("p50_ms") is not None else "-"
        p90 = f"{lat['p90_ms']:.3f}" if lat.get("p90_ms") is not None else "-"
        print(
            f"| {a['name']} | {a['status']} | {acc} | {a['size_bytes'] / 1024:.1f} | "
            f"{a['gzip_bytes'] / 1024:.1f} | {p50} | {p90} |"
        )
    compressed = runs_dir / name / "compress" / "compress_report.json"
    if compressed.is_file():
        from bench_compress import print_targets

        from kvision.compress.result import CompressionResult

        print_targets(CompressionResult.from_dict(json.loads(compressed.read_text())))
    result = {
        "command": cmd,
        "wall_s": wall,
        "stages_s": stages,
        "keras_accuracy": keras_acc,
        "artifacts": report["artifacts"],
        "run_dir": str(runs_dir / name),
        "cpu_count": report["run"]["host"]["cpu_count"],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
