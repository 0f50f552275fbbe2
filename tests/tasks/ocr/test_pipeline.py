"""``kvision pipeline task=ocr`` end to end on tiny rendered lines (kvision.spine), and
``kvision predict`` printing the text."""

from __future__ import annotations

import pytest
from conftest import TINY_SPINE_OVERRIDES, TINY_TEXT_CHARS, write_tiny_text_split

from kvision.config import load_config


@pytest.fixture(scope="module")
def tiny_lines(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_lines")
    for seed, (name, n) in enumerate((("train", 32), ("val", 8), ("test", 8))):
        write_tiny_text_split(root, name, n, seed)
    return root


@pytest.fixture(scope="module")
def report(tiny_lines, tmp_path_factory):
    from kvision.workflow import run_pipeline

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        overrides=[
            "task=ocr",
            f"data.path={tiny_lines}",
            f"runs_dir={runs}",
            *TINY_SPINE_OVERRIDES,
            "model.options={width: 4}",
            "model.head.depth=1",
            "train.epochs=2",
            "compress.techniques=[ptq,qat]",
            "benchmark.runs=3",
        ]
    )
    return run_pipeline(cfg, verbose=0), runs / "ocr_crnn"


def test_pipeline_reports_cer_and_verifies_decoded_text(report):
    rep, run_dir = report
    assert rep["run"]["name"] == "ocr_crnn"
    task = rep["task"]
    assert task["name"] == "ocr" and task["primary_metric"] == "CER"
    assert task["higher_is_better"] is False
    m = task["metrics"]
    assert m["n"] == 8 and m["CER"] is not None and m["CER"] >= 0
    assert sorted(rep["data"]["labels"]) == sorted(TINY_TEXT_CHARS)  # charset from train labels
    rows = {a["name"]: a for a in rep["artifacts"]}
    assert list(rows) == ["keras", "saved_model", "float32", "ptq_int8", "qat_int8"]
    for name in ("saved_model", "float32"):
        assert rows[name]["status"] == "ok", rows[name]["reason"]
        assert rows[name]["checks"]["max_abs_diff"] <= 1e-3
    for name, row in rows.items():
        assert "CER" in row["metrics"], name
        if name != "keras":
            assert "text_agreement" in row["checks"], name
    for name in ("float32", "ptq_int8", "qat_int8"):
        ops = rows[name]["checks"]["ops"]
        assert rows[name]["checks"]["flex_ops"] == [] and not any("CTC" in o for o in ops)
    for file in ("report.md", "predictions.png", "augment_preview.png"):
        assert (run_dir / file).is_file(), file
    assert "CER" in (run_dir / "report.md").read_text()


def test_predict_prints_the_text(report, tiny_lines):
    from kvision.predict import predict_task_files

    rep, run_dir = report
    tflite = run_dir / next(a["path"] for a in rep["artifacts"] if a["name"] == "float32")
    results = predict_task_files(tflite, [tiny_lines / "test" / "images" / "000.png"])
    assert isinstance(results[0]["text"], str)
    assert len(results[0]["confidences"]) == len(results[0]["text"])
