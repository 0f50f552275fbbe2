"""``kvision pipeline task=detection`` end to end on a tiny COCO set (kvision.spine), the metric
floor and ``kvision predict`` on a detector.

The dataset is ``tiny_coco`` (``tests/conftest.py``: coloured squares and discs on noise, 64x64,
written as COCO JSON by kvision's own writer): neither Fashion-MNIST nor the generator's
photographs are needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SPINE_OVERRIDES
from PIL import Image

from kvision.config import load_config

LABELS = ["square", "disc"]
SIZE = 64


@pytest.fixture(scope="module")
def data_root(tiny_coco):
    return tiny_coco


@pytest.fixture(scope="module")
def report(data_root, tmp_path_factory):
    from kvision.workflow import run_pipeline

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        overrides=[
            "task=detection",
            f"data.path={data_root}",
            f"runs_dir={runs}",
            *TINY_SPINE_OVERRIDES,
            "model.head.channels=16",
            "model.head.depth=1",
            "train.epochs=2",
            "compress.techniques=[ptq,qat,pqat]",
            "benchmark.runs=3",
        ]
    )
    return run_pipeline(cfg, verbose=0), runs / "detection_compact_mobilenet"


def test_pipeline_runs_every_stage_and_reports_map(report):
    rep, run_dir = report
    assert rep["run"]["name"] == "detection_compact_mobilenet"
    assert "in_progress" not in rep["run"]
    task = rep["task"]
    assert task["name"] == "detection" and task["primary_metric"] == "mAP@[.5:.95]"
    assert task["split"] == "test" and task["n"] == 8
    assert 0.0 <= task["metrics"]["mAP@[.5:.95]"] <= 1.0
    assert set(task["metrics"]["per_class_AP"]) == set(LABELS)
    assert rep["data"]["splits"] == {"train": 24, "val": 8, "test": 8}
    assert rep["data"]["dataset"] == "coco"  # the layout the reader detected
    assert rep["training"]["monitor"] == "val_loss" and rep["training"]["epochs_run"] == 2
    for name in ("report.json", "report.md", "report.html", "predictions.png", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "augment_preview.png").is_file()
    markdown = (run_dir / "report.md").read_text()
    assert "mAP@[.5:.95]" in markdown and "![predictions](predictions.png)" in markdown


def test_pipeline_artifacts_are_verified_scored_and_builtin_only(report):
    rep, run_dir = report
    rows = {a["name"]: a for a in rep["artifacts"]}
    assert list(rows) == ["keras", "saved_model", "float32", "ptq_int8", "qat_int8"]
    for name in ("saved_model", "float32"):  # raw outputs within 1e-3 of Keras, both heads
        assert rows[name]["status"] == "ok", rows[name]["reason"]
        assert rows[name]["checks"]["class_logits_max_abs_diff"] <= 1e-3
        assert rows[name]["checks"]["box_deltas_max_abs_diff"] <= 1e-3
    for name, row in rows.items():
        assert "mAP@[.5:.95]" in row["metrics"], name
        assert row["latency"]["p50_ms"] > 0, name
        if name != "keras":
            assert (run_dir / row["path"]).exists(), name
    for name in ("ptq_int8", "qat_int8"):  # judged on decoded detections only: never vacuous
        row = rows[name]
        assert "detection_agreement" in row["checks"], name
        if row["checks"]["keras_detections"] == 0:
            assert row["status"] == "failed" and row["reason"].startswith("not verified"), name
    for name in ("float32", "ptq_int8", "qat_int8"):
        checks = rows[name]["checks"]
        assert checks["flex_ops"] == [] and checks["custom_ops"] == [], name
        assert {o[0] for o in checks["outputs"]} == {"class_logits", "box_deltas"}, name
    assert rows["ptq_int8"]["checks"]["inputs"][0][1] == "int8"
    compression = rep["compression"]
    assert "pqat" in compression["errors"]  # asked for, not run by the task pipeline: said so
    assert compression["layer_reports"][0]["technique"] == "qat"


def test_rerun_reuses_the_finished_training(report, capsys):
    from kvision.config import PipelineConfig, from_dict
    from kvision.spine import named, train
    from kvision.tasks import get_task

    rep, run_dir = report
    from kvision._keras import load_model

    cfg = named(from_dict(PipelineConfig, rep["config"]))
    run = train(get_task("detection"), cfg, verbose=0)
    assert "already finished" in capsys.readouterr().out
    assert run.fit.epochs_run == 2
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    best = load_model(run_dir / "checkpoints" / "best.keras")
    for k, v in best(x, training=False).items():  # the reused model holds the best weights
        np.testing.assert_allclose(run.model(x, training=False)[k].numpy(), v.numpy(), atol=1e-6)
    (run_dir / "checkpoints" / "best.keras").rename(run_dir / "moved.keras")
    try:
        with pytest.raises(Exception, match="checkpoint is missing"):
            train(get_task("detection"), cfg, verbose=0)
    finally:
        (run_dir / "moved.keras").rename(run_dir / "checkpoints" / "best.keras")


def test_predict_draws_boxes_and_writes_json(report, data_root, tmp_path):
    from kvision.predict import predict_files

    rep, run_dir = report
    tflite = run_dir / next(a["path"] for a in rep["artifacts"] if a["name"] == "float32")
    image = data_root / "test" / "images" / "000.png"
    results = predict_files(tflite, [image])  # the contract's task picks detection decoding
    assert results[0]["file"] == str(image) and "detections" in results[0]
    from kvision.predict import predict_task_files

    out = tmp_path / "pred"
    again = predict_task_files(tflite, [image], out_dir=out)
    assert again == results
    drawn = np.asarray(Image.open(out / "000.png"))
    assert drawn.shape == (SIZE, SIZE, 3)
    assert json.loads((out / "000.json").read_text()) == results[0]
    for d in results[0]["detections"]:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= SIZE and 0 <= y0 <= y1 <= SIZE
        assert d["label"] in LABELS


def test_metric_floor_fails_a_collapsed_artifact_and_names_the_remedy(monkeypatch):
    """An artifact more than ``accuracy_floor`` points of mAP below float is a failed row whose
    reason names the drop and the remedy (QAT for a PTQ file)."""
    from types import SimpleNamespace

    from kvision import spine
    from kvision.export.artifact import Artifact
    from kvision.tasks import get_task

    class FakeRuntime:
        def load(self):
            pass

        def close(self):
            pass

        run = None

    monkeypatch.setattr("kvision.runtime.open_runtime", lambda *a, **k: FakeRuntime())
    values = iter([0.12, 0.495])
    monkeypatch.setattr(spine, "score", lambda *a, **k: {"mAP@[.5:.95]": next(values), "n": 8})
    task = get_task("detection")
    run = SimpleNamespace(task=task, contract=None, splits=SimpleNamespace(test=None))
    monkeypatch.setattr(task, "eval_batches", lambda *a, **k: [])
    collapsed = Artifact("ptq_int8", "tflite", "x.tflite", 1, 1, "ok")
    spine._score_artifact(run, collapsed, keras_value=0.5, floor_points=1.0)
    assert collapsed.status == "failed"
    assert "38.00 points below" in collapsed.reason and "QAT" in collapsed.reason
    assert collapsed.metrics["delta_vs_keras"] == pytest.approx(-0.38)
    close = Artifact("qat_int8", "tflite", "y.tflite", 1, 1, "ok")
    spine._score_artifact(run, close, keras_value=0.5, floor_points=1.0)
    assert close.status == "ok" and close.checks["metric_drop_points"] == pytest.approx(0.5)


def test_detection_needs_a_dataset_path_and_says_how_to_make_one():
    from kvision.errors import InputValueError
    from kvision.tasks import get_task

    cfg = load_config(overrides=["task=detection"])
    with pytest.raises(InputValueError, match="make_detection_data.py"):
        get_task("detection").load_splits(cfg.data)
    cfg = load_config(overrides=["task=detection", "data.dataset=mnist", "data.path=x"])
    with pytest.raises(InputValueError, match="classification dataset"):
        get_task("detection").load_splits(cfg.data)
    cfg = load_config(overrides=["task=detection", "data.path=/no/such/dir"])
    with pytest.raises(FileNotFoundError, match="make_detection_data.py --out /no/such/dir"):
        get_task("detection").load_splits(cfg.data)


def test_serve_answers_raw_outputs_and_decoded_detections(report, data_root):
    """``:predict`` gives both named raw outputs as TF Serving does; ``:decode`` and the Python
    client give the detections ``kvision predict`` gives (the test images are input-sized)."""
    import sys

    from starlette.testclient import TestClient

    from deploy.server.app import create_app
    from deploy.server.store import ModelStore
    from deploy.serving import ServingClient
    from kvision.models import InputContract
    from kvision.predict import predict_task_files
    from kvision.preprocess import load_pixels

    rep, run_dir = report
    tflite = run_dir / next(a["path"] for a in rep["artifacts"] if a["name"] == "float32")
    contract = InputContract.find(tflite)
    images = [data_root / "test" / "images" / f"00{i}.png" for i in range(2)]
    x = contract.normalize(np.stack([load_pixels(p, 3) for p in images]))
    store = ModelStore()
    store.add("det", tflite)
    http = TestClient(create_app(store))
    raw = http.post("/v1/models/det:predict", json={"inputs": x.tolist()}).json()["outputs"]
    assert np.asarray(raw["class_logits"]).shape[:2] == np.asarray(raw["box_deltas"]).shape[:2]
    rows = http.post("/v1/models/det:predict", json={"instances": x.tolist()}).json()
    assert set(rows["predictions"][0]) == {"class_logits", "box_deltas"}
    decoded = http.post("/v1/models/det:decode", json={"instances": x.tolist()}).json()
    expected = predict_task_files(tflite, images)
    for got, want in zip(decoded["predictions"], expected, strict=True):
        assert len(got["detections"]) == len(want["detections"])
        for a, b in zip(got["detections"], want["detections"], strict=True):
            assert a["label"] == b["label"]
            np.testing.assert_allclose(a["box"], b["box"], atol=1e-3)

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
    from load_test import _free_port, start_server

    port = _free_port()
    server, thread = start_server(create_app(store), port)
    try:
        client = ServingClient("127.0.0.1", rest_port=port)
        dets = client.decode("det", x)  # the contract comes from the server's /metadata
        for d, want in zip(dets, expected, strict=True):
            assert len(d.boxes) == len(want["detections"])
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_decode_refuses_a_model_without_a_task_contract(tmp_path):
    from deploy.server.codec import BadRequest, decode_outputs

    with pytest.raises(BadRequest, match="use :predict"):
        decode_outputs({"y": np.zeros((1, 2))}, None)
