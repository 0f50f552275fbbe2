"""``report.md``: the run report as Markdown, made only from the report dict.

Also holds the small number formatters and the summary both Markdown and HTML use::

    text = render_markdown(report)      # results table, failed reasons, links to plots
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from kvision.report.schema import validate_report

__all__ = [
    "render_markdown",
    "summarize",
    "artifact_row",
    "lookup",
    "metric_key",
    "metric_columns",
    "ARTIFACT_COLUMNS",
]

DASH = "—"
ARTIFACT_COLUMNS = (
    "artifact",
    "format",
    "status",
    "size (KB)",
    "gzip (KB)",
    "accuracy",
    "Δ vs Keras",
    "p50 ms",
    "p90 ms",
)


def render_markdown(report: dict) -> str:
    """Render a validated report as Markdown (tables, failed reasons, links to plots).

    Args:
        report: a report dict (validated first; see ``kvision.report.schema``).

    Example:
        >>> md = render_markdown(report)
        >>> md.splitlines()[0]
        '# kvision run `fashion_mnist_compact_mobilenet`'
    """
    validate_report(report)
    run = report["run"]
    out = [f"# kvision run `{_cell(run['name'])}`", "", _run_line(run), ""]
    if run.get("in_progress"):
        out += [f"> **In progress**: {_cell(run['in_progress'])} is still running; this report "
                "is rewritten when it finishes.", ""]  # fmt: skip
    out += _summary_section(report)
    out += _data_section(report.get("data"), report.get("augmentation"))
    out += _training_section(report.get("training"))
    out += _evaluation_section(report.get("evaluation"))
    out += task_section(report.get("task"))
    out += _artifacts_section(report["artifacts"], metric_key(report))
    out += _compression_section(report)
    out += _plots_section(report)
    if report.get("config"):
        out += [
            "## Config",
            "",
            "```json",
            json.dumps(report["config"], indent=2, default=str),
            "```",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def summarize(report: Mapping) -> dict:
    """The headline numbers of a report, shared by the Markdown and HTML renderers.

    Returns:
        ``{"keras_accuracy", "macro_f1", "best": artifact dict or None (highest accuracy among ok
        artifacts, exported ones first on a tie), "smallest": ok artifact with the smallest gzip
        size or None, "n_ok", "n_failed", "wall_total_s"}``.
    """
    artifacts = report.get("artifacts") or []
    key = metric_key(report)
    ok = [a for a in artifacts if a.get("status") == "ok"]
    with_acc = [a for a in ok if lookup(a, "metrics", key) is not None]
    with_gz = [a for a in ok if a.get("gzip_bytes") is not None]
    evaluation = report.get("evaluation") or {}
    keras_value = evaluation.get("accuracy")
    if keras_value is None:
        keras_value = lookup(report, "task", "metrics", key)
    sign = metric_sign(report)

    def best_key(a):  # best metric first; on a tie an exported artifact beats the Keras row
        return sign * a["metrics"][key], a.get("format") != "keras"

    return {
        "metric": key,
        "keras_accuracy": keras_value,
        "macro_f1": evaluation.get("macro_f1"),
        "best": max(with_acc, key=best_key) if with_acc else None,
        "smallest": min(with_gz, key=lambda a: a["gzip_bytes"]) if with_gz else None,
        "n_ok": len(ok),
        "n_failed": sum(1 for a in artifacts if a.get("status") == "failed"),
        "wall_total_s": lookup(report, "run", "wall_time_s", "total"),
    }


def metric_key(report: Mapping) -> str:
    """The metric the artifacts are compared on: the task's primary metric (``accuracy`` for a
    classification report, which has no ``task`` section)."""
    return lookup(report, "task", "primary_metric") or "accuracy"


def metric_sign(report: Mapping) -> float:
    """+1 when the report's metric is higher-is-better (accuracy, mAP), -1 when lower is."""
    return -1.0 if lookup(report, "task", "higher_is_better") is False else 1.0


def metric_columns(columns, metric: str) -> list[str]:
    """Table headers with the ``accuracy`` column named after the report's metric."""
    return [metric if c == "accuracy" else c for c in columns]


def artifact_row(artifact: Mapping, metric: str = "accuracy") -> list[str]:
    """One artifact's formatted cells, in :data:`ARTIFACT_COLUMNS` order (the accuracy column
    holds ``metric``)."""
    latency = artifact.get("latency") or {}
    return [
        str(artifact["name"]),
        str(artifact["format"]),
        str(artifact["status"]),
        fmt_kb(artifact.get("size_bytes")),
        fmt_kb(artifact.get("gzip_bytes")),
        fmt_ratio(lookup(artifact, "metrics", metric)),
        fmt_delta(lookup(artifact, "metrics", "delta_vs_keras")),
        fmt_ms(latency.get("p50_ms")),
        fmt_ms(latency.get("p90_ms")),
    ]


def fmt_kb(n) -> str:
    """Bytes as KB with one decimal (``"141.7"``), or a dash."""
    return DASH if n is None else f"{n / 1024:,.1f}"


def fmt_ratio(v) -> str:
    """An accuracy-like value with 4 decimals, or a dash."""
    return DASH if v is None else f"{v:.4f}"


def fmt_delta(v) -> str:
    """A signed difference with 4 decimals (``"+0.0012"``), or a dash."""
    return DASH if v is None else f"{v:+.4f}"


def fmt_ms(v) -> str:
    """Milliseconds with 3 significant-ish digits, or a dash."""
    if v is None:
        return DASH
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:,.1f}"


def fmt_seconds(v) -> str:
    """A duration: ``"42.0 s"``, ``"7 min 05 s"``, ``"2 h 03 min"``, or a dash."""
    if v is None:
        return DASH
    if v < 60:
        return f"{v:.1f} s"
    minutes, seconds = divmod(int(round(v)), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def fmt_transform(t) -> str:
    """``{"name": "rotate", "factor": 0.05}`` -> ``"rotate(factor=0.05)"``."""
    if isinstance(t, Mapping):
        opts = ", ".join(f"{k}={v}" for k, v in t.items() if k != "name")
        return f"{t['name']}({opts})" if opts else str(t["name"])
    return str(t)


# ----------------------------------------------------------------------------------------------
def _run_line(run: Mapping) -> str:
    parts = [f"created {run['created']}", f"kvision {run['kvision_version']}"]
    if run.get("tensorflow_version"):
        parts.append(f"TensorFlow {run['tensorflow_version']}")
    host = run.get("host") or {}
    if host:
        bits = [
            f"{host['cpu_count']} CPUs" if host.get("cpu_count") else None,
            host.get("platform"),
            f"Python {host['python']}" if host.get("python") else None,
        ]
        parts.append("host: " + ", ".join(b for b in bits if b))
    return " · ".join(_cell(p) for p in parts)


def _summary_section(report: Mapping) -> list[str]:
    s = summarize(report)
    lines = ["## Summary", ""]
    if s["keras_accuracy"] is not None and report.get("evaluation"):
        evaluation = report["evaluation"]
        n = f" on {evaluation['n']:,} {evaluation['split']} images" if evaluation.get("n") else ""
        lines.append(
            f"- Keras {evaluation['split']} accuracy: **{fmt_ratio(s['keras_accuracy'])}**"
            f" (macro F1 {fmt_ratio(s['macro_f1'])}){n}"
        )
    elif s["keras_accuracy"] is not None:
        task = report["task"]
        lines.append(
            f"- Keras {task.get('split', 'test')} {s['metric']}: "
            f"**{fmt_ratio(s['keras_accuracy'])}** on {task.get('n', 0):,} images"
        )
    if s["best"] is not None:
        best = s["best"]
        lines.append(
            f"- Best artifact: **{_cell(best['name'])}** {s['metric']} "
            f"{fmt_ratio(best['metrics'][s['metric']])}"
        )
    if s["smallest"] is not None:
        small = s["smallest"]
        lines.append(
            f"- Smallest artifact: **{_cell(small['name'])}** {fmt_kb(small['gzip_bytes'])} KB gzip"
        )
    lines.append(f"- Artifacts: {s['n_ok']} ok, {s['n_failed']} failed")
    wall = lookup(report, "run", "wall_time_s") or {}
    if wall:
        stages = ", ".join(
            f"{k} {fmt_seconds(v)}" for k, v in wall.items() if k != "total" and v is not None
        )
        lines.append(
            f"- Wall time: {fmt_seconds(wall.get('total'))}" + (f" ({stages})" if stages else "")
        )
    return lines + [""]


def _data_section(data, augmentation) -> list[str]:
    lines: list[str] = []
    if data:
        splits = data.get("splits") or {}
        bad = DASH if data.get("bad_files") is None else f"{data['bad_files']:,}"
        if data.get("bad_files_path"):
            bad += f" ([list]({_link(data['bad_files_path'])}))"
        headers = ["dataset", "source", "classes", *splits, "bad files"]
        row = [
            data["dataset"],
            data.get("source") or DASH,
            data["num_classes"],
            *(DASH if v is None else f"{v:,}" for v in splits.values()),
            bad,
        ]
        lines += ["## Data", "", *_table(headers, [row], right=range(2, len(headers))), ""]
        lines += ["Labels: " + ", ".join(f"`{_cell(x)}`" for x in data["labels"]), ""]
    if augmentation:
        transforms = augmentation.get("transforms") or []
        state = "on" if augmentation["enabled"] else "off"
        listed = ", ".join(fmt_transform(t) for t in transforms) if transforms else "none"
        lines += ["## Augmentation", "", f"Augmentation {state}: {_cell(listed)}", ""]
        if augmentation.get("reason"):
            lines += [f"Chosen: {_cell(augmentation['reason'])}", ""]
        if augmentation.get("preview_png"):
            lines += [f"![augmentation preview]({_link(augmentation['preview_png'])})", ""]
    return lines


def _training_section(training) -> list[str]:
    if not training:
        return []
    resumed = training.get("resumed_from_epoch")
    rows = [
        (
            "epochs",
            f"{training['epochs_run']} run of {training['epochs']}"
            + (f" (resumed from epoch {resumed})" if resumed is not None else ""),
        ),
        *(
            [("epochs chosen", _cell(training["epochs_reason"]))]
            if training.get("epochs_reason")
            else []
        ),  # fmt: skip
        ("best epoch", str(training.get("best_epoch") or DASH)),
        best_row(training),
        ("checkpoint", f"`{training['checkpoint']}`" if training.get("checkpoint") else DASH),
        (
            "history",
            f"[{training['history_csv']}]({_link(training['history_csv'])})"
            if training.get("history_csv")
            else DASH,
        ),
    ]
    lines = ["## Training", "", *_table(["", ""], rows)]
    lines.append("")
    if training.get("curves_png"):
        lines += [f"![training curves]({_link(training['curves_png'])})", ""]
    return lines


def task_section(section) -> list[str]:
    """The evaluation section of a task other than classification: the task's own lines
    (``Task.report_lines``), then its prediction gallery and notes."""
    if not section:
        return []
    from kvision.tasks import get_task

    lines = [f"## Evaluation ({_cell(section.get('split', 'test'))})", ""]
    lines += get_task(section["name"]).report_lines(section)
    if section.get("gallery_png"):
        lines += [f"![predictions]({_link(section['gallery_png'])})", ""]
    lines += [f"- {_cell(n)}" for n in section.get("notes") or []]
    if section.get("metrics_json"):
        lines += [f"Metrics: [{section['metrics_json']}]({_link(section['metrics_json'])})", ""]
    return lines


def best_row(training: Mapping) -> tuple[str, str]:
    """``("best val accuracy", "0.9225")``, or the monitored value (``best val_loss``) when
    the task's checkpoint monitor is not an accuracy."""
    monitor = training.get("monitor")
    if training.get("best_val_accuracy") is None and monitor and "accuracy" not in monitor:
        value = training.get("best_monitor_value")
        return f"best {monitor}", DASH if value is None else f"{value:.4g}"
    return "best val accuracy", fmt_ratio(training.get("best_val_accuracy"))


def _evaluation_section(evaluation) -> list[str]:
    if not evaluation:
        return []
    lines = [
        f"## Evaluation ({_cell(evaluation['split'])})",
        "",
        f"Accuracy **{fmt_ratio(evaluation['accuracy'])}**, macro F1 "
        f"**{fmt_ratio(evaluation['macro_f1'])}**"
        + (f" on {evaluation['n']:,} images" if evaluation.get("n") else "")
        + ".",
        "",
        *_table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [
                    r["label"],
                    f"{r['precision']:.4f}",
                    f"{r['recall']:.4f}",
                    f"{r['f1']:.4f}",
                    f"{r['support']:,}",
                ]
                for r in evaluation["per_class"]
            ],
            right=range(1, 5),
        ),
    ]
    lines.append("")
    if evaluation.get("confusion_matrix_png"):
        lines += [f"![confusion matrix]({_link(evaluation['confusion_matrix_png'])})", ""]
    if evaluation.get("metrics_json"):
        lines += [
            f"Metrics: [{evaluation['metrics_json']}]({_link(evaluation['metrics_json'])})",
            "",
        ]
    return lines


def _artifacts_section(artifacts, metric: str = "accuracy") -> list[str]:
    lines = ["## Artifacts", ""]
    if not artifacts:
        return lines + ["No artifacts.", ""]
    rows = []
    for a in artifacts:
        cells = artifact_row(a, metric)
        if a["status"] == "failed":
            cells[2] = "**failed**"
        rows.append(cells)
    columns = metric_columns(ARTIFACT_COLUMNS, metric)
    lines += [*_table(columns, rows, right=range(3, len(ARTIFACT_COLUMNS))), ""]
    failed = [a for a in artifacts if a["status"] == "failed"]
    if failed:
        lines += ["Failed artifacts:", ""]
        lines += [
            f"- **{_cell(a['name'])}** ({_cell(a['format'])}): {_cell(a['reason'])}" for a in failed
        ]
        lines.append("")
    return lines


COMPRESSION_COLUMNS = (
    "artifact",
    "technique",
    "gzip (KB)",
    "x smaller (gzip)",
    "accuracy",
    "drop (points)",
    "I/O",
    "measured in the file",
)


def compression_rows(report: Mapping) -> list[list[str]]:
    """Formatted cells (:data:`COMPRESSION_COLUMNS` order) of each compressed artifact: its
    size ratio vs the float32 TFLite, accuracy drop vs the float model and what was measured in
    its weights (int8 sparsity, unique values per channel)."""
    section = report.get("compression") or {}
    key = metric_key(report)
    float_acc = section.get("float_accuracy", section.get("float_metric"))
    sign = metric_sign(report)
    rows = []
    for a in report.get("artifacts") or []:
        info = a.get("compression") or {}
        if not info:
            continue
        acc = lookup(a, "metrics", key)
        drop = None if acc is None or float_acc is None else sign * 100 * (float_acc - acc)
        checks = a.get("checks") or {}
        io = f"{checks['input_dtype']}/{checks['output_dtype']}" if "input_dtype" in checks else ""
        measured = []
        if info.get("tflite_sparsity") is not None:
            measured.append(
                f"int8 weight sparsity {info['tflite_sparsity']:.1%}"
                + (f" (target {info['target_sparsity']:.0%})" if "target_sparsity" in info else "")
            )
        if info.get("max_unique_per_channel") is not None:
            measured.append(
                f"<= {info['max_unique_per_channel']} unique values per channel "
                f"({info.get('clusters')} clusters)"
            )
        rows.append(
            [
                str(a["name"]),
                str(info.get("technique", "")),
                fmt_kb(a.get("gzip_bytes")),
                DASH if info.get("gzip_ratio") is None else f"{info['gzip_ratio']:.1f}",
                fmt_ratio(acc),
                DASH if drop is None else f"{drop:.2f}",
                io,
                "; ".join(measured),
            ]
        )
    return rows


def distill_line(distill: Mapping | None) -> str | None:
    """One sentence comparing the distilled student with its teacher and the scratch student."""
    if not distill:
        return None
    options = ", ".join(f"{k}={v}" for k, v in (distill.get("student_options") or {}).items())
    scratch = distill.get("scratch_accuracy")
    text = (
        f"Distillation: student {distill['student']}({options}), "
        f"{distill.get('student_params', 0):,} parameters vs the teacher's "
        f"{distill.get('teacher_params', 0):,}"
        + (
            " (started from the teacher's most important channels)"
            if distill.get("init") == "teacher"
            else ""
        )
        + f"; {distill['epochs']} epochs at T="
        f"{distill['temperature']}, alpha={distill['alpha']}. Test accuracy: distilled "
        f"{fmt_ratio(distill.get('student_accuracy'))}"
    )
    if scratch is not None:
        text += f", same student from scratch {fmt_ratio(scratch)}"
    return text + f", teacher {fmt_ratio(distill.get('teacher_accuracy'))}."


def compression_notes(section: Mapping) -> list[str]:
    """One line per technique's layer report (counts by action, then its message), the time by
    technique, and each technique that could not run."""
    notes = []
    for r in section.get("layer_reports") or []:
        counts = ", ".join(f"{n} {action}" for action, n in (r.get("summary") or {}).items())
        notes.append(f"{r['technique']}: {counts}. {r.get('message', '')}")
    times = wall_time_line(section.get("wall_time_s"), section.get("resumed") or ())
    if times:
        notes.append(times)
    notes += [f"{t} could not run: {e}" for t, e in (section.get("errors") or {}).items()]
    return notes


def wall_time_line(times: Mapping | None, resumed=()) -> str | None:
    """``"Time by technique: ptq 41.0 s (resumed), qat 1 min 05 s, ..."`` or ``None``;
    ``resumed`` names the techniques whose results were reused from an interrupted run."""
    if not times:
        return None
    return "Time by technique: " + ", ".join(
        f"{k} {fmt_seconds(v)}" + (" (resumed)" if k in resumed else "") for k, v in times.items()
    )


def _compression_section(report: Mapping) -> list[str]:
    section = report.get("compression")
    rows = compression_rows(report)
    if not section and not rows:
        return []
    section = section or {}
    lines = ["## Compression", ""]
    key = metric_key(report)
    reference = section.get("float_accuracy", section.get("float_metric"))
    if reference is not None:
        lines += [
            f"Drops are against the float model's test {key} "
            f"{fmt_ratio(reference)}; sizes against the float32 .tflite.",
            "",
        ]
    if rows:
        columns = metric_columns(COMPRESSION_COLUMNS, key)
        lines += [*_table(columns, rows, right=range(2, 6)), ""]
    distill = distill_line(section.get("distill"))
    if distill:
        lines += [distill, ""]
    lines += [f"- {_cell(note)}" for note in compression_notes(section)]
    path = section.get("report_md")
    if path:
        lines.append(f"- Per-layer reports: [{path}]({_link(path)})")
    return lines + [""]


def _plots_section(report: Mapping) -> list[str]:
    links = [
        ("training curves", lookup(report, "training", "curves_png")),
        ("confusion matrix", lookup(report, "evaluation", "confusion_matrix_png")),
        ("predictions", lookup(report, "task", "gallery_png")),
        ("augmentation preview", lookup(report, "augmentation", "preview_png")),
        ("training history (CSV)", lookup(report, "training", "history_csv")),
        ("bad files", lookup(report, "data", "bad_files_path")),
    ]
    links = [(name, path) for name, path in links if path]
    lines = ["## Files", ""]
    lines += [f"- [{name}]({_link(path)})" for name, path in links]
    lines.append("- [report.json](report.json) · [report.html](report.html)")
    return lines + [""]


def lookup(obj, *keys):
    """``obj[k1][k2]...`` or ``None`` when a level is missing or the value is a non-finite float."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _table(headers, rows, right=()) -> list[str]:
    """A Markdown table; columns whose index is in ``right`` are right-aligned."""
    right = set(right)
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "|".join("--:" if i in right else "---" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _cell(value) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _link(path) -> str:
    """A relative path usable as a Markdown link target (forward slashes, spaces encoded)."""
    return str(path).replace("\\", "/").replace(" ", "%20").replace("(", "%28").replace(")", "%29")
