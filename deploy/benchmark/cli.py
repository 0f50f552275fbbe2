"""``kvision benchmark``: the command-line mirror of :func:`deploy.benchmark.run_benchmark`.

Examples::

    kvision benchmark runs/x/export --threads 1 2 --dataset fashion_mnist --limit 2000 \
        --out runs/x/benchmark --floor 0.85
    kvision benchmark model.tflite other.tflite --delegate gpu --delegate /opt/libedgetpu.so.1

Exit status: 0 when every row ran (``ok``) or its runtime is ``unavailable`` here; 1 when an
artifact is broken (a ``failed_load``, ``failed_run`` or ``failed_validation`` row) or a row fell
under ``--floor``, and with ``--strict`` also when no row ran at all; 2 on bad arguments (a user
error, one line). Anything else is a bug in kvision: ``kvision benchmark`` prints its traceback
and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.benchmark.data import DATASET_KINDS
from kvision.errors import InputValueError


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the benchmark arguments to ``parser`` (a new one by default); the CLI reuses it."""
    p = parser or argparse.ArgumentParser(
        prog="kvision benchmark", description="Benchmark artifacts on every runtime."
    )
    p.add_argument(
        "artifacts",
        nargs="+",
        help=".tflite / .keras / .h5 / .hdf5 / .onnx files, SavedModel folders, or a folder to "
        "search (e.g. a run's export/ folder); NAME=PATH names a row",
    )
    p.add_argument("--out", help="output folder for benchmark.json/.csv/.md/.html")
    p.add_argument(
        "--runtimes",
        help="comma-separated runtime names (default: every runtime of each format)",
    )
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts (1)")
    p.add_argument(
        "--delegate",
        action="append",
        default=[],
        help="LiteRT external delegate: gpu, edgetpu, hexagon, armnn or a library path "
        "(repeatable; absent ones show as unavailable)",
    )
    p.add_argument("--dataset", choices=DATASET_KINDS, help="score accuracy on this dataset")
    p.add_argument("--data-path", help="dataset folder / .npz (default location for IDX sets)")
    p.add_argument("--limit", type=int, help="use the first N evaluation images")
    p.add_argument("--baseline", help="artifact name of the float baseline")
    p.add_argument("--floor", type=float, help="minimum accuracy; exit 1 when a row is under it")
    p.add_argument("--min-agreement", type=float, help="minimum top-1 agreement with baseline")
    p.add_argument("--warmup", type=int, default=10, help="warm-up calls (10)")
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 calls (100)")
    p.add_argument("--batch-size", type=int, default=32, help="throughput batch (32)")
    p.add_argument("--throughput-runs", type=int, default=20, help="timed batch-N calls (20)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="also exit 1 when no row ran (every runtime unavailable); broken artifacts and "
        "floor misses always exit 1",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from command-line arguments; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_from_args(args)


def run_from_args(args) -> int:
    """Run the benchmark for parsed ``args``; returns the exit status (module docstring).

    User errors (:func:`kvision.errors.is_user_error`: a missing artifact, a bad option or
    dataset) print one line and return 2; other exceptions propagate (``kvision`` reports them
    as internal errors).
    """
    from deploy.benchmark.data import EvalData
    from deploy.benchmark.outputs import render_markdown
    from deploy.benchmark.run import run_benchmark

    try:
        artifacts = expand_artifacts(args.artifacts)
        data = None
        if args.dataset:
            data = EvalData.from_dataset(args.dataset, args.data_path, args.limit)
        doc = run_benchmark(
            artifacts,
            out_dir=args.out,
            runtimes=args.runtimes.split(",") if args.runtimes else None,
            threads=args.threads,
            delegates=args.delegate,
            data=data,
            baseline=args.baseline,
            floor=args.floor,
            min_agreement=args.min_agreement,
            warmup=args.warmup,
            runs=args.runs,
            batch_size=args.batch_size,
            throughput_runs=args.throughput_runs,
            progress=not args.no_progress,
        )
    except Exception as exc:  # user errors are one line; anything else is a bug: raised
        from kvision.errors import user_error_status

        return user_error_status("benchmark", exc)
    print(render_markdown(doc))
    if args.out:
        print(f"written: {Path(args.out) / 'benchmark.json'} (+ .csv, .md, .html)")
    return exit_status(doc["rows"], strict=args.strict)


def exit_status(rows: list[dict], strict: bool = False) -> int:
    """0, or 1 when a row is broken (``BROKEN`` statuses) or below the floor, or (``strict``)
    when no row ran; the reasons go to stderr."""
    from deploy.benchmark.schema import BROKEN

    broken = [r for r in rows if r["status"] in BROKEN]
    below = [r for r in rows if r["status"] == "below_floor"]
    for r in broken:
        print(f"FAIL: {r['artifact']} / {r['runtime']}: {r['status']}: {r['reason']}",
              file=sys.stderr)  # fmt: skip
    if below:
        print(f"FAIL: {len(below)} row(s) under --floor", file=sys.stderr)
    ran = [r for r in rows if r["status"] != "unavailable"]
    if strict and not ran:
        print("FAIL: no row ran: every runtime is unavailable here (--strict)", file=sys.stderr)
    return 1 if broken or below or (strict and not ran) else 0


def expand_artifacts(specs: list[str]) -> list[tuple[str | None, Path]]:
    """``NAME=PATH`` / ``PATH`` arguments -> ``(name, path)`` pairs; folders are searched.

    A folder that is not itself a SavedModel yields its ``.tflite``, ``.keras``, ``.h5``,
    ``.hdf5`` and ``.onnx`` files and its SavedModel model folders (those holding numeric
    versions).
    """
    from kvision.runtime import detect_format

    out = []
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (None, "", spec)
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"Artifact not found: {p}")
        try:
            detect_format(p)
            out.append((name or None, p))
            continue
        except ValueError as exc:
            if not p.is_dir():
                raise InputValueError(str(exc)) from exc
        found = _search(p)
        if not found:
            raise InputValueError(
                f"No artifacts (.tflite, .keras, .h5, .hdf5, .onnx, SavedModel) under {p}"
            )
        out.extend((None, f) for f in found)
    return out


def _search(folder: Path) -> list[Path]:
    from kvision.runtime import ARTIFACT_SUFFIXES

    files = sorted(
        f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in ARTIFACT_SUFFIXES
    )
    models = sorted(
        d
        for d in folder.rglob("*")
        if d.is_dir()
        and not d.name.isdigit()
        and any(
            v.is_dir() and v.name.isdigit() and (v / "saved_model.pb").is_file()
            for v in d.iterdir()
        )
    )
    return models + files
