"""kvision.report: schema validation, report.json/.md/.html writing and rendering."""

import base64
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from kvision.evaluate import classification_metrics, plot_confusion_matrix, plot_training_curves
from kvision.report import (
    REPORT_SCHEMA_VERSION,
    ReportSchemaError,
    render_html,
    render_markdown,
    validate_report,
    write_report,
)
from kvision.report import schema as schema_module
from kvision.report.schema import schema_field_paths

DOCS = Path(__file__).resolve().parents[1] / "docs" / "report_schema.md"
LABELS = ["cat", "dog", "bird"]


def _artifact(name, fmt="tflite", status="ok", acc=0.9, p50=0.3, size=4096, reason=None):
    return {
        "name": name,
        "format": fmt,
        "status": status,
        "reason": reason,
        "path": f"export/{name}.{fmt}" if status == "ok" else None,
        "size_bytes": size if status == "ok" else None,
        "gzip_bytes": size // 2 if status == "ok" else None,
        "metrics": {
            "accuracy": acc if status == "ok" else None,
            "delta_vs_keras": acc - 0.9 if status == "ok" else None,
            "n": 30,
        },
        "latency": {
            "p50_ms": p50,
            "p90_ms": p50 * 1.2,
            "p99_ms": p50 * 1.5,
            "mean_ms": p50,
            "min_ms": p50 * 0.9,
            "runs": 20,
            "warmup": 2,
        }
        if status == "ok"
        else {},
        "checks": {"builtin_ops_only": status == "ok"},
    }


def _report():
    y = np.arange(30) % 3
    pred = y.copy()
    pred[:4] = (pred[:4] + 1) % 3
    metrics = classification_metrics(y, pred, LABELS)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run": {
            "name": "demo",
            "created": "2025-11-22T12:00:00+00:00",
            "kvision_version": "0.1.0",
            "tensorflow_version": "2.21.0",
            "host": {"cpu_count": 2, "platform": "Linux", "python": "3.11.2"},
            "wall_time_s": {
                "train": 10.0,
                "evaluate": 1.0,
                "export": 2.0,
                "benchmark": 3.0,
                "total": 16.0,
            },
        },
        "config": {"name": "demo", "train": {"epochs": 2}},
        "data": {
            "dataset": "npz",
            "source": "/data/x.npz",
            "num_classes": 3,
            "labels": LABELS,
            "splits": {"train": 100, "val": 10, "test": 30},
            "bad_files": 0,
            "bad_files_path": None,
        },
        "augmentation": {
            "enabled": True,
            "transforms": ["flip", {"name": "rotate", "factor": 0.1}],
            "preview_png": None,
        },
        "training": {
            "epochs": 2,
            "epochs_run": 2,
            "resumed_from_epoch": None,
            "best_epoch": 2,
            "best_val_accuracy": 0.8,
            "history_csv": "history.csv",
            "curves_png": "plots/curves.png",
            "checkpoint": "checkpoints/best.keras",
        },
        "evaluation": {
            "split": "test",
            **metrics,
            "confusion_matrix_png": "plots/cm.png",
            "metrics_json": "metrics.json",
        },
        "artifacts": [
            {**_artifact("keras", fmt="keras", acc=0.9, p50=0.8), "reason": ""},
            _artifact("float32", acc=0.9, p50=0.3),
            _artifact(
                "int8 | pruned",
                status="failed",
                reason="accuracy 0.41 below the floor 0.85 | try QAT <b>",
            ),
            _artifact("int8", acc=0.87, p50=0.25, size=1024),
        ],
    }


@pytest.fixture
def run_dir(tmp_path):
    """A run directory holding the files the report points to."""
    (tmp_path / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.6,1.0,0.55,1.1\n1,0.8,0.6,0.8,0.7\n"
    )
    plot_training_curves(tmp_path / "history.csv", tmp_path / "plots" / "curves.png")
    report = _report()
    plot_confusion_matrix(
        report["evaluation"]["confusion_matrix"], LABELS, tmp_path / "plots" / "cm.png"
    )
    return tmp_path


def _embedded_pngs(page: str) -> list[bytes]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [base64.b64decode(b) for b in found]


# ------------------------------------------------------------------------------- validation
MINIMAL = {
    "schema_version": 1,
    "artifacts": [],
    "run": {"name": "r", "created": "2025-01-01T00:00:00", "kvision_version": "0.1"},
}
# every field of MINIMAL is required: without it the report is rejected, naming it
REQUIRED = ["schema_version", "artifacts", "run", "run.name", "run.created", "run.kvision_version"]


def test_a_full_report_and_a_minimal_report_are_valid():
    report = _report()
    snapshot = copy.deepcopy(report)
    assert validate_report(report) is None
    assert report == snapshot  # validation never rewrites the report
    assert validate_report({**MINIMAL, "data": None, "training": None}) is None


@pytest.mark.parametrize("field", REQUIRED)
def test_the_minimal_report_has_only_required_fields(field):
    report = copy.deepcopy(MINIMAL)
    _set(report, field, ...)
    with pytest.raises(ReportSchemaError) as info:
        validate_report(report)
    assert info.value.field == field and "is missing" in str(info.value)


@pytest.mark.parametrize("section", ["data", "augmentation", "training", "evaluation"])
def test_optional_sections_may_be_null_but_are_checked_when_present(section):
    validate_report({**MINIMAL, section: None})
    with pytest.raises(ReportSchemaError) as info:
        validate_report({**MINIMAL, section: {}})  # present: its required fields are checked
    assert info.value.field.startswith(f"{section}.") and "is missing" in str(info.value)


def test_numpy_scalars_paths_and_extension_keys_are_accepted():
    report = _report()
    report["artifacts"][1]["size_bytes"] = np.int64(4096)
    report["artifacts"][1]["metrics"]["accuracy"] = np.float32(0.5)
    report["training"]["checkpoint"] = Path("checkpoints/best.keras")
    report["x_compress"] = {"anything": [1, 2]}
    report["artifacts"][0]["x_note"] = "free"
    assert validate_report(report) is None
    # accepted because they are valid, not because NumPy scalars, paths or x_ keys go unchecked
    for where, value, message in [
        ("artifacts[1].size_bytes", np.int64(-1), ">= 0"),
        ("artifacts[1].size_bytes", np.float64(4096.0), "should be an integer"),
        ("artifacts[1].metrics.accuracy", np.float32(1.5), "between 0 and 1"),
        ("training.checkpoint", Path("/abs/best.keras"), "not absolute"),
        ("artifacts[0].note", "free", "is not a known field"),
    ]:
        bad = copy.deepcopy(report)
        _set(bad, where, value)
        with pytest.raises(ReportSchemaError, match=message) as info:
            validate_report(bad)
        assert info.value.field == where


def _set(report, path, value):
    """Set (or delete, for value=...) the field at a dotted/indexed path."""
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    obj = report
    for k in keys[:-1]:
        obj = obj[k]
    if value is ...:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value


BAD_FIELDS = [
    ("schema_version", 2, "schema_version", "should be 1"),
    ("run.name", ..., "run.name", "is missing"),
    ("run.created", "yesterday", "run.created", "ISO-8601"),
    ("run.host.cpu_count", 0, "run.host.cpu_count", ">= 1"),
    ("run.wall_time_s.total", ..., "run.wall_time_s.total", "is missing"),
    ("run.wall_time_s.train", -1.0, "run.wall_time_s.train", ">= 0"),
    ("data.num_classes", 4, "data.labels", "num_classes=4"),
    ("data.splits.test", "30", "data.splits.test", "should be an integer"),
    ("augmentation.enabled", "yes", "augmentation.enabled", "true or false"),
    ("augmentation.transforms", [3], "augmentation.transforms[0]", "transform name"),
    ("training.epochs", True, "training.epochs", "should be an integer"),
    ("training.best_val_accuracy", 1.5, "training.best_val_accuracy", "between 0 and 1"),
    ("training.curves_png", "/abs/curves.png", "training.curves_png", "not absolute"),
    ("evaluation.accuracy", None, "evaluation.accuracy", "is null; it is required"),
    ("evaluation.per_class[1].support", 2.5, "evaluation.per_class[1].support", "integer"),
    ("evaluation.confusion_matrix[1]", [1, 2], "evaluation.confusion_matrix[1]", "3 columns"),
    ("artifacts", ..., "artifacts", "is missing"),
    ("artifacts[2].status", "done", "artifacts[2].status", "one of 'ok', 'failed'"),
    ("artifacts[2].reason", None, "artifacts[2].reason", "required when status is 'failed'"),
    ("artifacts[1].path", None, "artifacts[1].path", "required when status is 'ok'"),
    ("artifacts[1].size_bytes", -5, "artifacts[1].size_bytes", ">= 0"),
    ("artifacts[1].metrics.accuracy", float("nan"), "artifacts[1].metrics.accuracy", "finite"),
    ("artifacts[3].metrics.accuracy", 1.2, "artifacts[3].metrics.accuracy", "between 0 and 1"),
    ("artifacts[1].latency.p90_ms", 0.1, "artifacts[1].latency.p90_ms", "should be >= p50_ms"),
    ("artifacts[1].latency.runs", 0, "artifacts[1].latency.runs", ">= 1"),
    ("artifacts[1].gzip_size", 10, "artifacts[1].gzip_size", "Did you mean `gzip_bytes`?"),
    ("artifacts[3].name", "float32", "artifacts[3].name", "already used by artifacts[1]"),
    ("artifacts[0].checks", [1], "artifacts[0].checks", "should be a dict"),
    ("trainnig", {}, "trainnig", "Did you mean `training`?"),
]


@pytest.mark.parametrize("where, value, field, message", BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_validate_report_names_the_bad_field(where, value, field, message):
    report = _report()
    _set(report, where, value)
    with pytest.raises(ValueError) as info:
        validate_report(report)
    assert isinstance(info.value, ReportSchemaError)
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)
    assert message in str(info.value)


def test_a_space_is_a_label_but_an_empty_string_is_not():
    # An OCR charset's labels include " " (the space symbol); "" names nothing.
    report = copy.deepcopy(_report())
    report["data"]["labels"] = [" ", *report["data"]["labels"][1:]]
    report["evaluation"]["labels"] = list(report["data"]["labels"])
    assert validate_report(report) is None
    for where in ("data.labels[0]", "evaluation.labels[0]"):
        bad = copy.deepcopy(report)
        _set(bad, where, "")
        with pytest.raises(ReportSchemaError, match="non-empty string") as info:
            validate_report(bad)
        assert info.value.field == where
    bad = copy.deepcopy(report)
    _set(bad, "run.name", "  ")  # other strings still need a visible value
    with pytest.raises(ReportSchemaError, match="non-empty string"):
        validate_report(bad)


def test_validate_report_rejects_a_non_dict():
    with pytest.raises(ReportSchemaError, match="should be a dict. Received: list"):
        validate_report([])


def test_every_schema_field_is_documented():
    docs = DOCS.read_text(encoding="utf-8")
    undocumented = [p for p in schema_field_paths() if f"`{p}`" not in docs]
    assert undocumented == []
    names = {re.split(r"[.\[]", p.replace("[]", ""))[-1] for p in schema_field_paths()}
    assert [n for n in sorted(names) if n not in schema_module.__doc__] == []


# ---------------------------------------------------------------------------------- writing
def test_write_report_writes_three_consistent_files(run_dir):
    report = _report()
    paths = write_report(report, run_dir)
    assert {k: p.name for k, p in paths.items()} == {
        "json": "report.json",
        "markdown": "report.md",
        "html": "report.html",
    }
    assert json.loads(paths["json"].read_text()) == report
    assert not list(run_dir.glob(".*.tmp"))

    md = paths["markdown"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    for art in report["artifacts"]:
        name = art["name"].replace("|", "\\|")
        row = next(r for r in rows if r.startswith(f"| {name} |"))
        assert len(re.split(r"(?<!\\)\|", row)) == 11  # 9 cells, pipes in names escaped
    assert "| int8 | tflite | ok | 1.0 | 0.5 | 0.8700 | -0.0300 | 0.250 | 0.300 |" in md
    assert "accuracy 0.41 below the floor 0.85 \\| try QAT <b>" in md
    assert "- Best artifact: **float32** accuracy 0.9000" in md  # beats the tied Keras row
    assert "![training curves](plots/curves.png)" in md
    assert "![confusion matrix](plots/cm.png)" in md

    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    pngs = _embedded_pngs(page)
    # curves + confusion matrix (from files) + sizes, latency, accuracy-vs-latency (drawn)
    assert len(pngs) == 5 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert (run_dir / "plots" / "cm.png").read_bytes() in pngs
    assert "try QAT &lt;b&gt;" in page and "try QAT <b>" not in page
    assert page.count('class="pill ok"') == 3 and page.count('class="pill failed"') == 1
    assert page.count('<tr class="reason">') == 1
    for art in report["artifacts"]:
        assert f'<div class="name">{art["name"]}</div>' in page


def test_invalid_report_writes_nothing(tmp_path):
    report = _report()
    report["artifacts"][0]["status"] = "maybe"
    with pytest.raises(ReportSchemaError, match=r"artifacts\[0\].status"):
        write_report(report, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_html_redraws_missing_plots_from_the_data(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,1.0,1.2\n1,0.5,0.7\n")
    page = render_html(_report(), tmp_path)  # the PNG files do not exist
    assert len(_embedded_pngs(page)) == 5


def test_html_never_embeds_files_outside_the_run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], tmp_path / "outside.png")
    report = _report()
    report["training"]["curves_png"] = "../outside.png"
    report["training"]["history_csv"] = None
    page = render_html(report, run)
    assert (tmp_path / "outside.png").read_bytes() not in _embedded_pngs(page)
    assert "is not in the run directory" in page


def test_evaluate_only_report_renders(tmp_path):
    report = _report()
    for section in ("training", "data", "augmentation", "config"):
        report[section] = None
    report["run"].pop("wall_time_s")
    report["artifacts"] = [_artifact("float32")]
    md = render_markdown(report)
    assert "## Training" not in md and "| float32 | tflite | ok |" in md
    page = render_html(report, tmp_path)
    assert ">Training<" not in page and "float32" in page
    assert len(_embedded_pngs(page)) == 4  # confusion matrix + three artifact charts


def test_markdown_of_a_report_without_artifacts():
    report = _report()
    report["artifacts"] = []
    md = render_markdown(report)
    assert "No artifacts." in md and "Artifacts: 0 ok, 0 failed" in md


def test_render_validates_first():
    report = copy.deepcopy(_report())
    report["run"]["created"] = 5
    with pytest.raises(ReportSchemaError, match="run.created"):
        render_markdown(report)


def _compressed_report():
    report = _report()
    pqat = _artifact("pqat_int8", acc=0.85, p50=0.2, size=512)
    pqat["checks"].update(input_dtype="int8", output_dtype="int8")
    pqat["compression"] = {
        "technique": "pqat",
        "gzip_ratio": 8.0,
        "target_sparsity": 0.8,
        "tflite_sparsity": 0.7969,
    }
    failed = _artifact("distill_int8", status="failed", reason="exported but failed validation")
    failed.update(path="compress/distill.tflite", gzip_bytes=300, compression={"technique": "x"})
    failed["metrics"]["accuracy"] = 0.5
    report["artifacts"] += [pqat, failed]
    report["config"]["compress"] = {"accuracy_floor": 1.0}
    report["compression"] = {
        "float_accuracy": 0.9,
        "distill": {
            "student": "compact_mobilenet",
            "student_options": {"width": 0.5},
            "student_params": 75082,
            "teacher_params": 213898,
            "temperature": 4.0,
            "alpha": 0.1,
            "epochs": 3,
            "teacher_accuracy": 0.9,
            "student_accuracy": 0.88,
            "scratch_accuracy": 0.86,
        },
        "layer_reports": [
            {"technique": "prune", "message": "18 pruned", "summary": {"pruned": 18}}
        ],
        "errors": {"cqat": "ValueError: no"},
        "wall_time_s": {"ptq": 41.0, "qat": 65.0},
        "report_md": "compress/compress_report.md",
    }
    return report


def test_compression_section_in_markdown_and_html(run_dir):
    paths = write_report(_compressed_report(), run_dir)
    md = paths["markdown"].read_text()
    section = md.split("## Compression", 1)[1]
    # drop = 100 * (0.90 - 0.85); int8 I/O and the sparsity measured in the file
    assert (
        "| pqat_int8 | pqat | 0.2 | 8.0 | 0.8500 | 5.00 | int8/int8 | "
        "int8 weight sparsity 79.7% (target 80%) |"
    ) in section
    assert "| distill_int8 | x | 0.3 | — | 0.5000 | 40.00 |" in section
    assert "distilled 0.8800, same student from scratch 0.8600, teacher 0.9000" in section
    assert "- prune: 18 pruned. 18 pruned" in section
    assert "- cqat could not run: ValueError: no" in section
    assert "- Time by technique: ptq 41.0 s, qat 1 min 05 s" in section
    assert "[compress/compress_report.md](compress/compress_report.md)" in section

    page = paths["html"].read_text()
    assert "<h2>Compression</h2>" in page and "Compression trade-off" in page
    # the five plots of the plain report, plus the accuracy-vs-size chart
    assert len(_embedded_pngs(page)) == 6
    assert "int8 weight sparsity 79.7% (target 80%)" in page


def test_report_without_compression_has_no_section(run_dir):
    paths = write_report(_report(), run_dir)
    assert "## Compression" not in paths["markdown"].read_text()
    assert "<h2>Compression</h2>" not in paths["html"].read_text()
