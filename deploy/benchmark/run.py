"""``run_benchmark``: every artifact x runtime x thread count, one row each, never a crash.

Each row loads the artifact in its runtime (any number of named inputs and outputs, through
``kvision.runtime``), runs it on the evaluation images (or on a small deterministic probe batch,
each input in its own tensor's domain, when no dataset is given or the artifact has no image
input contract), validates and scores the outputs (``deploy.benchmark.scoring``, the one
task-dependent step), times batch-1 latency after warm-up (p50/p90/p99 over every call), then
throughput at batch N (``kvision.evaluate.latency.inference_timing``), and records load time,
ops and peak memory. An artifact whose task is unknown (no contract.json, not a one-output
classifier) still gets status, load, ops, size and latency; its metric and agreement are
``not_done`` with the reason, never a number. A row that cannot run is a row with a status and
a reason (see ``deploy.benchmark.schema``); a model needing ops LiteRT lacks fails to load with
the ops named. The baseline artifact (the Keras model, else the SavedModel, else the first
artifact) runs first; every other row reports its metric delta and top-1 agreement against the
baseline's first successful row.

Example:
    >>> doc = run_benchmark(
    ...     ["runs/x/export/tflite/classifier_float32.tflite",
    ...      "runs/x/export/saved_model/classifier"],
    ...     out_dir="runs/x/benchmark", threads=[1, 2],
    ...     data=EvalData.from_dataset("fashion_mnist"))
    >>> [(r["artifact"], r["runtime"], r["status"]) for r in doc["rows"]][:2]
    [('classifier/1', 'tf_cpu', 'ok'), ('classifier/1', 'tf_gpu', 'unavailable')]
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.benchmark.memory import PeakMemory
from deploy.benchmark.schema import BENCHMARK_SCHEMA_VERSION, BenchmarkRow
from deploy.benchmark.scoring import score_outputs, task_of
from kvision.errors import InputValueError
from kvision.evaluate.latency import inference_timing
from kvision.runtime import (
    DELEGATE_PREFIX,
    RUNTIME_FORMATS,
    RuntimeUnavailable,
    default_runtimes,
    detect_format,
    find_contract,
    open_runtime,
    primary_output,
    probe_feeds,
    runtime_kind,
    saved_model_version_dir,
    split_ops,
    supports_threads,
    tflite_op_names,
)
from kvision.runtime.base import fixed_batch
from kvision.runtime.tflite_ops import describe_non_builtin

_BASELINE_ORDER = ("keras", "saved_model", "onnx", "tflite")
_PROBE_N = 16
# Room for kvision's load hints (a Keras 3 file's remedy is ~500 characters): they lead the
# message, and a long library error after them is what gets cut.
_REASON_CHARS = 1200


def run_benchmark(
    artifacts,
    out_dir=None,
    runtimes: Sequence[str] | None = None,
    threads: Sequence[int] = (1,),
    delegates: Sequence[str] = (),
    data=None,
    baseline: str | None = None,
    floor: float | None = None,
    min_agreement: float | None = None,
    warmup: int = 10,
    runs: int = 100,
    batch_size: int = 32,
    throughput_runs: int = 20,
    progress: bool = True,
) -> dict:
    """Benchmark ``artifacts`` and return the ``benchmark.json`` dict (written if ``out_dir``).

    Args:
        artifacts: paths, ``(name, path)`` pairs or a ``{name: path}`` mapping: ``.tflite``
            files, SavedModel folders, ``.keras`` / ``.h5`` / ``.hdf5`` / ``.onnx`` files.
        out_dir: write ``benchmark.json``, ``.csv``, ``.md`` and ``.html`` there (default: none).
        runtimes: runtime names to try (default: each format's defaults, see
            ``deploy.runtimes.registry``); runtimes that do not run a format are skipped for it.
        threads: thread counts for runtimes that take one (default ``(1,)``).
        delegates: LiteRT external delegates (names like ``"gpu"`` or library paths), one extra
            runtime per ``.tflite`` artifact; absent ones become ``unavailable`` rows.
        data: ``EvalData`` to score accuracy on (default ``None``: no metric). Every row,
            the baseline's included, is scored on the same images (all of ``data``, e.g. the
            first ``--limit`` test images), so ``delta_vs_baseline`` compares like with like.
        baseline: artifact name of the float baseline (default: Keras, else SavedModel, else
            the first artifact).
        floor: minimum accuracy; rows under it get status ``below_floor`` (default none).
        min_agreement: minimum top-1 agreement with the baseline; rows under it get status
            ``failed_validation`` (default none: reported only).
        warmup: untimed calls before timing (default 10).
        runs: timed batch-1 calls (default 100).
        batch_size: batch for the throughput measurement (default 32).
        throughput_runs: timed calls at ``batch_size`` (default 20).
        progress: show a tqdm progress bar (default True).

    Returns:
        The benchmark document (schema in ``deploy.benchmark.schema``).

    Raises:
        kvision.errors.InputValueError: (a ``ValueError``) a bad argument: no artifacts, an
            unknown format, runtime or baseline name, a non-positive count.
    """
    items = _normalize_artifacts(artifacts)
    threads = _check_threads(threads)
    for name, value in (
        ("warmup", warmup), ("runs", runs), ("batch_size", batch_size),
        ("throughput_runs", throughput_runs),
    ):  # fmt: skip
        low = 0 if name == "warmup" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputValueError(
                f"`{name}` should be an integer >= {low}. Received: {name}={value!r}"
            )
    if runtimes is not None:
        for r in runtimes:
            try:
                runtime_kind(r)
            except ValueError as exc:  # an unknown runtime name is the caller's
                raise InputValueError(str(exc)) from exc
    baseline = _pick_baseline(items, baseline)
    items.sort(key=lambda it: it[0] != baseline)
    plan = _plan(items, runtimes, threads, delegates)

    memory = PeakMemory()
    state = {"baseline": None, "row": None}
    rows = []
    bar = _progress(len(plan), progress)
    for name, path, fmt, runtime, n_threads in plan:
        if bar is not None:
            bar.set_postfix_str(f"{name} / {runtime}" + (f" x{n_threads}" if n_threads else ""))
        row = _bench_one(
            name, path, fmt, runtime, n_threads, data, memory, state,
            is_baseline=name == baseline,
            settings=dict(warmup=warmup, runs=runs, batch_size=batch_size,
                          throughput_runs=throughput_runs, floor=floor,
                          min_agreement=min_agreement),
        )  # fmt: skip
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    doc = {
        "schema_version": BENCHMARK_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "settings": {
            "warmup": warmup,
            "runs": runs,
            "batch_size": batch_size,
            "throughput_runs": throughput_runs,
            "threads": list(threads),
            "floor": floor,
            "min_agreement": min_agreement,
            "metric": "accuracy",
            "memory_method": memory.method,
        },
        "data": data.summary() if data is not None else None,
        "baseline": state["row"],
        "rows": [r.to_dict() for r in rows],
    }
    if out_dir is not None:
        from deploy.benchmark.outputs import write_outputs

        write_outputs(doc, out_dir)
    return doc


def _bench_one(name, path, fmt, runtime, threads, data, memory, state, is_baseline, settings):
    from kvision.export.artifact import gzip_size, path_size, short_reason

    sized = saved_model_version_dir(path) if fmt == "saved_model" else Path(path)
    row = BenchmarkRow(
        name, str(path), fmt, runtime, threads, "ok",
        size_mb=round(path_size(sized) / 1e6, 4), gzip_mb=round(gzip_size(sized) / 1e6, 4),
    )  # fmt: skip

    def fail(status, reason):
        row.status, row.reason = status, reason
        return row

    if fmt == "tflite":
        row.ops, problem = _tflite_ops(path)
        if problem:
            return fail("failed_validation", problem)
    try:
        rt = open_runtime(path, runtime, threads)
    except (ValueError, FileNotFoundError) as exc:
        return fail("failed_load", short_reason(exc, _REASON_CHARS))
    memory.start()
    start = time.perf_counter()
    try:
        rt.load()  # a model needing ops LiteRT lacks raises UnsupportedOpsError naming them
        row.load_s = round(time.perf_counter() - start, 4)
        inputs, outputs = rt.inputs, rt.outputs
        row.inputs, row.outputs = [t.to_dict() for t in inputs], [t.to_dict() for t in outputs]
        row.input = row.inputs[0] if row.inputs else None
        primary = primary_output(outputs) or (outputs[0] if outputs else None)
        row.output = primary.to_dict() if primary is not None else None
        contract, row.contract_source = find_contract(path, inputs)
        row.task, why = task_of(contract, row.contract_source, outputs)
    except RuntimeUnavailable as exc:
        return fail("unavailable", str(exc))
    except Exception as exc:  # any load failure is a row, not a crash
        return fail("failed_load", short_reason(exc, _REASON_CHARS))
    finally:
        row.options = rt.describe()
    try:
        feeds, scored_data = _feeds(rt, contract, data)
        n = len(next(iter(feeds.values())))
        outputs = rt.run(feeds)
        score = score_outputs(row.task, outputs, n, scored_data, state["baseline"], why)
        if score.problem:
            return fail("failed_validation", score.problem)
        row.metric, row.agreement, row.not_done = score.metric, score.agreement, score.not_done
        fixed = fixed_batch(inputs)
        timing = inference_timing(
            rt.run, feeds, warmup=settings["warmup"], runs=settings["runs"],
            batch_size=fixed or settings["batch_size"], throughput_runs=settings["throughput_runs"],
        )  # fmt: skip
        row.latency, row.latency_samples_ms = timing["latency"], timing["samples_ms"]
        row.throughput = timing["throughput"]
        row.memory = memory.stop()
    except Exception as exc:  # a runtime that loads but cannot run is a row too
        return fail("failed_run", _ops_hint(row.ops) + short_reason(exc))
    finally:
        row.options = rt.describe()
        rt.close()
    if is_baseline and state["row"] is None:
        metric = row.metric["value"] if row.metric else None
        state["baseline"] = {
            "task": row.task,
            "reference": score.reference,
            "metric": metric,
            "n": n,
        }
        state["row"] = {"artifact": name, "runtime": runtime, "metric": metric, "n": int(n)}
        if row.metric:
            row.metric["delta_vs_baseline"] = 0.0
        if score.reference is not None:  # the baseline agrees with itself
            row.agreement = 1.0
            row.not_done.pop("agreement", None)
    min_agreement = settings["min_agreement"]
    if (
        min_agreement is not None
        and not is_baseline
        and row.agreement is not None
        and row.agreement < min_agreement
    ):
        return fail(
            "failed_validation",
            f"top-1 agreement with the baseline {row.agreement:.2%} < {min_agreement:.2%}",
        )
    floor = settings["floor"]
    if floor is not None and row.metric and row.metric["value"] < floor:
        return fail("below_floor", f"accuracy {row.metric['value']:.4f} < floor {floor:.4f}")
    return row


def _feeds(rt, contract, data) -> tuple[dict, object]:
    """``(feeds, data scored)``: the dataset's images for a one-image-input artifact with a
    contract, else probe inputs in each input's own domain (nothing to score)."""
    inputs = rt.inputs
    if data is not None and contract is not None and len(inputs) == 1:
        return {inputs[0].name: data.inputs(contract)}, data
    return probe_feeds(inputs, _PROBE_N, contract), None


def _tflite_ops(path) -> tuple[list | None, str]:
    """``(op names, "")``, or ``(None, why)`` for a file that is not a readable flatbuffer."""
    try:
        return tflite_op_names(path), ""
    except ValueError as exc:
        return None, str(exc)


def _ops_hint(ops) -> str:
    flex, custom = split_ops(ops or [])
    if not flex and not custom:
        return ""
    return f"uses {describe_non_builtin(flex, custom)}; "


def _normalize_artifacts(artifacts) -> list[tuple[str, Path, str]]:
    if isinstance(artifacts, (str, Path)):
        artifacts = [artifacts]
    pairs = list(artifacts.items()) if isinstance(artifacts, Mapping) else list(artifacts)
    if not pairs:
        raise InputValueError("`artifacts` should name at least one artifact. Received: []")
    items, seen = [], set()
    for item in pairs:
        name, path = item if isinstance(item, tuple) else (None, item)
        path = Path(path)
        try:
            fmt = detect_format(path)
        except ValueError as exc:  # not a model format: the caller's path
            raise InputValueError(str(exc)) from exc
        name = name or _default_name(path, fmt)
        base, k = name, 2
        while name in seen:
            name, k = f"{base}#{k}", k + 1
        seen.add(name)
        items.append((name, path, fmt))
    return items


def _default_name(path: Path, fmt: str) -> str:
    if fmt != "saved_model":
        return path.stem
    version = saved_model_version_dir(path)
    return f"{version.parent.name}/{version.name}" if version.name.isdigit() else version.name


def _pick_baseline(items, baseline):
    names = [it[0] for it in items]
    if baseline is not None:
        if baseline not in names:
            raise InputValueError(f"`baseline` should be one of {names}. Received: {baseline!r}")
        return baseline
    for fmt in _BASELINE_ORDER:
        for name, _, f in items:
            if f == fmt:
                return name
    return names[0]


def _plan(items, runtimes, threads, delegates) -> list[tuple]:
    plan = []
    for name, path, fmt in items:
        names = list(runtimes) if runtimes is not None else default_runtimes(fmt)
        if fmt == "tflite":
            names += [f"{DELEGATE_PREFIX}{d}" for d in delegates]
        names = [r for r in names if fmt in RUNTIME_FORMATS[runtime_kind(r)]]
        if not names:
            names = default_runtimes(fmt)[:1]  # keeps one row that says what ran
        for r in dict.fromkeys(names):
            for t in threads if supports_threads(r) else [None]:
                plan.append((name, path, fmt, r, t))
    return plan


def _check_threads(threads) -> list[int]:
    if isinstance(threads, int):
        threads = [threads]
    threads = list(threads)
    if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
        raise InputValueError(
            f"`threads` should be a non-empty list of positive integers. Received: {threads!r}"
        )
    return threads


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="benchmark", unit="row")


def host_info() -> dict:
    """Platform, CPU count and the versions of the engines (``None`` when not installed)."""
    import os
    from importlib import metadata

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "tensorflow": version("tensorflow"),
        "ai_edge_litert": version("ai-edge-litert"),
        "onnxruntime": version("onnxruntime"),
    }
