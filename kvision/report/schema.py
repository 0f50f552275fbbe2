"""The schema of ``report.json``, the data every Markdown/HTML report and plot is made from.

A run writes one report (``write_report``); :func:`validate_report` checks it against the table
below and names the first bad field by its path, e.g. ``artifacts[2].status``. Sections other than
``run`` and ``artifacts`` may be ``null`` or absent (``kvision evaluate`` alone has no
``training``); what is present is validated. "optional" fields may be absent or ``null`` (the
same meaning; an optional string may also be empty); paths are strings relative to the run
directory. Keys starting with ``x_`` are extensions and are never checked; any other unknown key
is an error (typos are caught early).
The full description with an example is in ``docs/report_schema.md``::

    schema_version      int, required, == REPORT_SCHEMA_VERSION (1)
    run                 required
      name                str, required            created          ISO-8601 str, required
      kvision_version     str, required            tensorflow_version   str
      in_progress         str: the stage still running when the report was written (absent when
                          the run finished); the pipeline writes the report after every stage
      host                {cpu_count: int >= 1, platform: str, python: str}
      wall_time_s         {train, evaluate, export, benchmark: number >= 0; total: required}
                          (seconds; other stage names allowed, also numbers >= 0)
    config              the resolved PipelineConfig as a dict (free-form)
    data
      dataset             str, required           source           str (where it was read from)
      num_classes         int >= 1, required      labels           [str] x num_classes, required
      splits              {train, val, test, ...: int >= 0}
      bad_files           int >= 0                bad_files_path   path (list of skipped files)
      seen_classes        [str] (classes trained on, when some are held out: embeddings)
      unseen_classes      [str] (classes kept out of training and retrieved among)
    augmentation
      enabled             bool, required          transforms       [str | {name: str, ...}]
      preview_png         path                    reason           str (why, when chosen: auto)
      sampling            str (how training batches are drawn, when not shuffled: P x K)
    training
      epochs              int >= 0, required      epochs_run       int >= 0, required
      resumed_from_epoch  int >= 0                best_epoch       int >= 1 (1-based)
      best_val_accuracy   number in [0, 1]        history_csv      path (Keras CSVLogger)
      curves_png          path                    checkpoint       path
      epochs_reason       str (why this many epochs, when train.epochs was auto)
      monitor             str (the checkpoint's Keras log key)   best_monitor_value  number
    evaluation
      split               str, required ("test")  n                int >= 0
      accuracy            [0, 1], required        macro_f1         [0, 1], required
      weighted_f1         [0, 1]                  labels           [str]
      per_class           [{label: str, precision, recall, f1: [0, 1], support: int >= 0}],
                          required, one per row of confusion_matrix
      confusion_matrix    [[int >= 0]] square, rows = true, cols = predicted, required
      confusion_matrix_png  path                  metrics_json     path
    task                the evaluation of a task other than classification (kvision.spine)
      name                str, required           primary_metric   str, required (its key)
      higher_is_better    bool                    split            str, required
      n                   int >= 0                metrics          free-form dict, required
      gallery_png         path                    metrics_json     path
      notes               [str]
    compression         free-form dict (per-layer quantized/pruned/skipped report)
    artifacts           list, required (may be empty); names unique
      name                str, required           format           str, required
      status              "ok" | "failed", required
      reason              str, required non-empty when status is "failed"
      path                path, required when status is "ok"
      size_bytes          int >= 0                gzip_bytes       int >= 0
      metrics             {accuracy: [0, 1], delta_vs_keras: number, n: int >= 0,
                           macro_f1: [0, 1], other names: number}
      latency             {} or {p50_ms, p90_ms, p99_ms, mean_ms, min_ms, max_ms, std_ms:
                           number >= 0, p50 <= p90 <= p99; runs: int >= 1, warmup: int >= 0,
                           batch_size: int >= 1, threads: int >= 1, xnnpack: bool, runtime: str,
                           by_batch_size: [dict], other keys free}
      checks              free-form dict (verification results: ops, dtypes, max_abs_diff, ...)
      compression         free-form dict (how this artifact was made)

Example:
    >>> validate_report({"schema_version": 1, "artifacts": [],
    ...     "run": {"name": "r", "created": "2025-01-01T00:00:00", "kvision_version": "0.1.0"}})
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath

__all__ = ["REPORT_SCHEMA_VERSION", "ReportSchemaError", "validate_report", "schema_field_paths"]

REPORT_SCHEMA_VERSION = 1


class ReportSchemaError(ValueError):
    """A report field is missing or invalid; ``.field`` is its path (``artifacts[2].status``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"report field `{field}` {message}")
        self.field = field


@dataclass(frozen=True)
class _F:
    """One field: its kind, whether it is required, and what its contents must be.

    kind: str, int, number, bool, datetime, path, dict (``fields`` declared, ``values`` for other
    keys, ``None`` = unknown keys are errors), free (any dict), list (``items``), transform, any.
    """

    kind: str
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    fields: Mapping | None = None
    values: _F | None = None
    items: _F | None = None
    blank_ok: bool = False  # a whitespace-only string is a value (an OCR charset's space)


# A class label or charset symbol: non-empty, but " " is a real symbol of an OCR charset.
_LABEL = _F("str", True, blank_ok=True)
_RATIO = _F("number", lo=0, hi=1)
_COUNT = _F("int", lo=0)
_MS = _F("number", lo=0)
_SECONDS = _F("number", lo=0)

_RUN = {
    "name": _F("str", True),
    "created": _F("datetime", True),
    "kvision_version": _F("str", True),
    "tensorflow_version": _F("str"),
    "in_progress": _F("str"),
    "host": _F(
        "dict", fields={"cpu_count": _F("int", lo=1), "platform": _F("str"), "python": _F("str")}
    ),
    "wall_time_s": _F(
        "dict",
        fields={
            "train": _SECONDS,
            "evaluate": _SECONDS,
            "export": _SECONDS,
            "benchmark": _SECONDS,
            "total": _F("number", True, lo=0),
        },
        values=_SECONDS,
    ),
}
_DATA = {
    "dataset": _F("str", True),
    "source": _F("str"),
    "num_classes": _F("int", True, lo=1),
    "labels": _F("list", True, items=_LABEL),
    "splits": _F("dict", fields={"train": _COUNT, "val": _COUNT, "test": _COUNT}, values=_COUNT),
    "bad_files": _COUNT,
    "bad_files_path": _F("path"),
    "seen_classes": _F("list", items=_F("str", True)),
    "unseen_classes": _F("list", items=_F("str", True)),
}
_AUGMENTATION = {
    "enabled": _F("bool", True),
    "transforms": _F("list", items=_F("transform", True)),
    "preview_png": _F("path"),
    "reason": _F("str"),
    "sampling": _F("str"),
}
_TRAINING = {
    "epochs": _F("int", True, lo=0),
    "epochs_run": _F("int", True, lo=0),
    "epochs_reason": _F("str"),
    "resumed_from_epoch": _F("int", lo=0),
    "best_epoch": _F("int", lo=1),
    "best_val_accuracy": _RATIO,
    "monitor": _F("str"),
    "best_monitor_value": _F("number"),
    "history_csv": _F("path"),
    "curves_png": _F("path"),
    "checkpoint": _F("path"),
}
_PER_CLASS = {
    "label": _F("str", True),
    "precision": _F("number", True, lo=0, hi=1),
    "recall": _F("number", True, lo=0, hi=1),
    "f1": _F("number", True, lo=0, hi=1),
    "support": _F("int", True, lo=0),
}
_EVALUATION = {
    "split": _F("str", True),
    "n": _COUNT,
    "accuracy": _F("number", True, lo=0, hi=1),
    "macro_f1": _F("number", True, lo=0, hi=1),
    "weighted_f1": _RATIO,
    "labels": _F("list", items=_LABEL),
    "per_class": _F("list", True, items=_F("dict", True, fields=_PER_CLASS)),
    "confusion_matrix": _F("list", True, items=_F("list", True, items=_F("int", True, lo=0))),
    "confusion_matrix_png": _F("path"),
    "metrics_json": _F("path"),
}
_TASK = {
    "name": _F("str", True),
    "primary_metric": _F("str", True),
    "higher_is_better": _F("bool"),
    "split": _F("str", True),
    "n": _COUNT,
    "metrics": _F("free", True),
    "gallery_png": _F("path"),
    "metrics_json": _F("path"),
    "notes": _F("list", items=_F("str", True)),
}
_LATENCY = {
    **{k: _MS for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms")},
    "runs": _F("int", lo=1),
    "warmup": _F("int", lo=0),
    "batch_size": _F("int", lo=1),
    "threads": _F("int", lo=1),
    "xnnpack": _F("bool"),
    "runtime": _F("str"),
    "by_batch_size": _F("list", items=_F("free", True)),
}
_ARTIFACT = {
    "name": _F("str", True),
    "format": _F("str", True),
    "status": _F("str", True, choices=("ok", "failed")),
    "reason": _F("str"),
    "path": _F("path"),
    "size_bytes": _COUNT,
    "gzip_bytes": _COUNT,
    "metrics": _F(
        "dict",
        fields={
            "accuracy": _RATIO,
            "delta_vs_keras": _F("number"),
            "n": _COUNT,
            "macro_f1": _RATIO,
        },
        values=_F("number"),
    ),
    "latency": _F("dict", fields=_LATENCY, values=_F("any")),
    "checks": _F("free"),
    "compression": _F("free"),
}
_REPORT = _F(
    "dict",
    True,
    fields={
        "schema_version": _F("int", True),
        "run": _F("dict", True, fields=_RUN),
        "config": _F("free"),
        "data": _F("dict", fields=_DATA),
        "augmentation": _F("dict", fields=_AUGMENTATION),
        "training": _F("dict", fields=_TRAINING),
        "evaluation": _F("dict", fields=_EVALUATION),
        "task": _F("dict", fields=_TASK),
        "compression": _F("free"),
        "artifacts": _F("list", True, items=_F("dict", True, fields=_ARTIFACT)),
    },
)


def validate_report(report: dict) -> None:
    """Check ``report`` against the report schema; raise on the first bad field.

    Args:
        report: the report dict (see the module docstring and ``docs/report_schema.md``).

    Raises:
        ReportSchemaError: a ``ValueError`` whose message and ``.field`` name the field path,
            e.g. ``artifacts[2].status``, the received value and what is allowed.

    Example:
        >>> validate_report({"schema_version": 2})
        Traceback (most recent call last):
        ...
        kvision.report.schema.ReportSchemaError: report field `schema_version` should be 1 ...
    """
    if not isinstance(report, Mapping):
        raise ReportSchemaError("<report>", f"should be a dict. Received: {type(report).__name__}")
    version = report.get("schema_version")
    if version is not None and not isinstance(version, bool) and version != REPORT_SCHEMA_VERSION:
        raise ReportSchemaError(
            "schema_version",
            f"should be {REPORT_SCHEMA_VERSION} (this kvision's report schema). "
            f"Received: schema_version={version!r}",
        )
    _check(report, _REPORT, "")
    _check_consistency(report)


def schema_field_paths() -> list[str]:
    """Every declared field as a path (``artifacts[].metrics.accuracy``), in schema order.

    Example:
        >>> "artifacts[].status" in schema_field_paths()
        True
    """
    out: list[str] = []

    def walk(spec: _F, path: str) -> None:
        if spec.kind == "dict":
            for key, sub in spec.fields.items():
                child = f"{path}.{key}" if path else key
                out.append(child)
                walk(sub, child)
        elif spec.kind == "list" and spec.items is not None:
            walk(spec.items, path + "[]")

    walk(_REPORT, "")
    return out


# ----------------------------------------------------------------------------------------------
def _check(value, spec: _F, path: str) -> None:
    kind = spec.kind
    if kind == "any":
        return
    if kind in ("dict", "free"):
        if not isinstance(value, Mapping):
            _fail(path, "should be a dict", value)
        if kind == "dict":
            _check_dict(value, spec, path)
        return
    if kind == "list":
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            _fail(path, "should be a list", value)
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if item is None:
                _fail(item_path, "should not be null", item)
            _check(item, spec.items, item_path)
        return
    if kind == "str":
        if not isinstance(value, str):
            _fail(path, "should be a string", value)
        if spec.required and not (value if spec.blank_ok else value.strip()):
            _fail(path, "should be a non-empty string", value)
        if spec.choices is not None and value not in spec.choices:
            allowed = ", ".join(repr(c) for c in spec.choices)
            _fail(path, f"should be one of {allowed}", value)
        return
    if kind == "path":
        _check_path(value, path)
        return
    if kind == "datetime":
        if not isinstance(value, str):
            _fail(
                path, "should be an ISO-8601 time string, e.g. '2025-01-31T12:00:00+00:00'", value
            )
        try:
            datetime.fromisoformat(value)
        except ValueError:
            _fail(
                path, "should be an ISO-8601 time string, e.g. '2025-01-31T12:00:00+00:00'", value
            )
        return
    if kind == "bool":
        if not isinstance(value, bool):
            _fail(path, "should be true or false", value)
        return
    if kind == "transform":
        if isinstance(value, str) and value.strip():
            return
        if isinstance(value, Mapping) and isinstance(value.get("name"), str):
            return
        _fail(path, "should be a transform name or a dict with a 'name'", value)
    if kind in ("int", "number"):
        _check_number(value, spec, path)
        return
    raise RuntimeError(f"unknown schema kind {kind!r} at {path}")  # a bug in the table above


def _check_dict(value: Mapping, spec: _F, path: str) -> None:
    fields = spec.fields or {}
    for key, sub in fields.items():
        child = f"{path}.{key}" if path else key
        item = value.get(key)
        if item is None:
            if sub.required:
                state = "is null" if key in value else "is missing"
                raise ReportSchemaError(child, f"{state}; it is required")
            continue
        _check(item, sub, child)
    for key, item in value.items():
        if key in fields:
            continue
        child = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            _fail(child, "has a non-string key", key)
        if key.startswith("x_"):
            continue
        if spec.values is None:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            did_you_mean = f" Did you mean `{hint[0]}`?" if hint else ""
            allowed = ", ".join(fields)
            raise ReportSchemaError(
                child,
                f"is not a known field.{did_you_mean} Allowed: {allowed} "
                "(or an extension key starting with `x_`)",
            )
        if item is not None:
            _check(item, spec.values, child)


def _check_number(value, spec: _F, path: str) -> None:
    want = "an integer" if spec.kind == "int" else "a number"
    ok_type = numbers.Integral if spec.kind == "int" else numbers.Real
    if isinstance(value, bool) or not isinstance(value, ok_type):
        _fail(path, f"should be {want}", value)
    if not math.isfinite(float(value)):
        _fail(path, "should be a finite number (use null for 'unknown')", value)
    if spec.lo is not None and spec.hi is not None and not spec.lo <= value <= spec.hi:
        _fail(path, f"should be {want} between {spec.lo} and {spec.hi}", value)
    if spec.lo is not None and value < spec.lo:
        _fail(path, f"should be {want} >= {spec.lo}", value)


def _check_path(value, path: str) -> None:
    if not isinstance(value, (str, os.PathLike)) or not str(os.fspath(value)).strip():
        _fail(path, "should be a path string relative to the run directory", value)
    text = os.fspath(value)
    if not isinstance(text, str) or PurePath(text).is_absolute() or text.startswith(("/", "\\")):
        _fail(path, "should be a path relative to the run directory, not absolute", value)


def _check_consistency(report: Mapping) -> None:
    data = report.get("data") or None
    if data is not None and len(data["labels"]) != data["num_classes"]:
        raise ReportSchemaError(
            "data.labels",
            f"should have num_classes={data['num_classes']} names. "
            f"Received: {len(data['labels'])} names",
        )
    evaluation = report.get("evaluation") or None
    if evaluation is not None:
        cm = evaluation["confusion_matrix"]
        k = len(cm)
        for i, row in enumerate(cm):
            if len(row) != k:
                raise ReportSchemaError(
                    f"evaluation.confusion_matrix[{i}]",
                    f"should have {k} columns (the matrix is square). Received: {len(row)}",
                )
        if len(evaluation["per_class"]) != k:
            raise ReportSchemaError(
                "evaluation.per_class",
                f"should have one entry per confusion_matrix row ({k}). "
                f"Received: {len(evaluation['per_class'])} entries",
            )
        if data is not None and k != data["num_classes"]:
            raise ReportSchemaError(
                "evaluation.confusion_matrix",
                f"should be {data['num_classes']}x{data['num_classes']} "
                f"(data.num_classes). Received: {k}x{k}",
            )
    seen: dict[str, int] = {}
    for i, artifact in enumerate(report["artifacts"]):
        name = artifact["name"]
        if name in seen:
            raise ReportSchemaError(
                f"artifacts[{i}].name",
                f"should be unique. Received: {name!r}, already used by artifacts[{seen[name]}]",
            )
        seen[name] = i
        if artifact["status"] == "failed" and not artifact.get("reason"):
            raise ReportSchemaError(
                f"artifacts[{i}].reason", "is required when status is 'failed' (say why)"
            )
        if artifact["status"] == "ok" and artifact.get("path") is None:
            raise ReportSchemaError(f"artifacts[{i}].path", "is required when status is 'ok'")
        latency = artifact.get("latency") or {}
        order = [k for k in ("p50_ms", "p90_ms", "p99_ms") if latency.get(k) is not None]
        for low, high in zip(order, order[1:], strict=False):
            if latency[low] > latency[high]:
                raise ReportSchemaError(
                    f"artifacts[{i}].latency.{high}",
                    f"should be >= {low} ({latency[low]}). Received: {latency[high]}",
                )


def _fail(path: str, what: str, value) -> None:
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    raise ReportSchemaError(path or "<report>", f"{what}. Received: {shown}")
