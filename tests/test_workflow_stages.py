"""The pipeline writes its report after every stage, and compares artifacts with Keras on the
same images when the benchmark is limited to a subset."""

import json

import numpy as np

from kvision import workflow
from kvision.config import load_config


def _cfg(tmp_path, npz, *extra):
    return load_config(overrides=[
        "data.dataset=npz", f"data.path={npz}", "data.batch_size=16", "data.val_split=0.25",
        f"runs_dir={tmp_path / 'runs'}", "augment.preview=false", "train.epochs=1",
        "model.name=lenet", "benchmark.runs=3", "benchmark.warmup=1", *extra,
    ])  # fmt: skip


def test_report_is_readable_while_compression_runs(tmp_path, tiny_npz, monkeypatch):
    cfg = _cfg(tmp_path, tiny_npz, "name=stages", "compress.techniques=[ptq]")
    seen = {}

    def compress_reading_the_report(run, cfg, verbose="auto"):
        report = json.loads((cfg.run_dir / "report.json").read_text())
        seen["json"] = report
        seen["md"] = (cfg.run_dir / "report.md").read_text()
        return [], None

    monkeypatch.setattr(workflow, "compress", compress_reading_the_report)
    final = workflow.run_pipeline(cfg, verbose=0)

    during = seen["json"]
    assert during["run"]["in_progress"] == "compress"
    assert during["evaluation"]["accuracy"] == final["evaluation"]["accuracy"]
    assert {a["name"] for a in during["artifacts"]} == {"saved_model", "float32"}
    assert all(a["status"] == "ok" for a in during["artifacts"])
    assert "In progress" in seen["md"] and "compress" in seen["md"]
    # the finished report says nothing is running and has the benchmark rows
    assert "in_progress" not in final["run"]
    on_disk = json.loads((cfg.run_dir / "report.json").read_text())
    assert "in_progress" not in on_disk["run"]
    assert "In progress" not in (cfg.run_dir / "report.md").read_text()
    assert any(a["name"] == "keras" for a in on_disk["artifacts"])


def test_eval_limit_compares_artifacts_with_keras_on_the_same_images(tmp_path, tiny_npz):
    # 16 test images; the subset is the first 5. A float32 export agrees with Keras on every
    # image, so its delta must be 0 on the subset whatever the accuracy of the whole split is.
    cfg = _cfg(tmp_path, tiny_npz, "name=limit", "compress.enabled=false",
               "benchmark.eval_limit=5")  # fmt: skip
    report = workflow.run_pipeline(cfg, verbose=0)
    rows = {a["name"]: a for a in report["artifacts"]}
    keras = rows["keras"]["metrics"]["accuracy"]
    x = np.load(tiny_npz)
    assert len(x["y_test"]) == 16
    for name in ("float32", "saved_model"):
        row = rows[name]
        assert row["metrics"]["n"] == 5
        assert row["metrics"]["accuracy"] == keras, (row["name"], row["metrics"], keras)
        assert row["metrics"]["delta_vs_keras"] == 0.0
