"""One conformance test over every registered task, through the task-agnostic pipeline
(``kvision.spine``): tiny data -> a few training steps -> float32 and int8 export -> parity ->
metric -> benchmark row -> REST round trip (``:predict`` raw outputs, ``:decode``).

A new task must add its tiny data to ``TINY_DATA``: the test fails for a registered task without.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TINY_SPINE_OVERRIDES,
    write_bars_npz,
    write_tiny_detection_split,
    write_tiny_segmentation_split,
    write_tiny_text_split,
)

from kvision.config import load_config
from kvision.tasks import get_task, list_tasks


def _classification_data(root: Path, classes: int = 3) -> list[str]:
    root.mkdir(parents=True)
    path = write_bars_npz(root / "tiny.npz", classes)
    return ["data.dataset=npz", f"data.path={path}", "data.val_split=0.25"]


def _embedding_data(root: Path) -> list[str]:
    # five classes (bars in five row bands): three seen in training, two unseen, retrieved
    return [*_classification_data(root, classes=5), "data.unseen_classes=[3, 4]",
            "model.head.dim=8"]  # fmt: skip


def _detection_data(root: Path) -> list[str]:
    for seed, (name, n) in enumerate((("train", 16), ("val", 8), ("test", 8))):
        write_tiny_detection_split(root, name, n, seed)
    return [f"data.path={root}", "model.head.channels=16", "model.head.depth=1"]


def _segmentation_data(root: Path) -> list[str]:
    for seed, (name, n) in enumerate((("train", 16), ("val", 8), ("test", 8))):
        write_tiny_segmentation_split(root, name, n, seed)
    return [f"data.path={root}", "model.options={width: 4, depth: 2}"]


def _ocr_data(root: Path) -> list[str]:
    for seed, (name, n) in enumerate((("train", 24), ("val", 8), ("test", 8))):
        write_tiny_text_split(root, name, n, seed)
    return [f"data.path={root}", "model.options={width: 4}", "model.head.depth=1"]


TINY_DATA = {
    "classification": _classification_data,
    "detection": _detection_data,
    "embedding": _embedding_data,
    "segmentation": _segmentation_data,
    "ocr": _ocr_data,
}


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_runs_the_whole_spine(name, tmp_path):
    from starlette.testclient import TestClient

    from deploy.server.app import create_app
    from deploy.server.store import ModelStore
    from kvision.spine import run_task_pipeline

    assert name in TINY_DATA, f"task {name!r} has no tiny dataset in the conformance test"
    task = get_task(name)
    data = TINY_DATA[name](tmp_path / "data")
    cfg = load_config(
        overrides=[
            f"task={name}",
            f"runs_dir={tmp_path / 'runs'}",
            f"name={name}",
            *TINY_SPINE_OVERRIDES,
            *data,  # after the shared settings: a task's data may need other model options
            "train.epochs=1",
            "compress.techniques=[ptq,qat]",
            "benchmark.runs=2",
        ]
    )
    report = run_task_pipeline(cfg, verbose=0)
    assert report["task"]["name"] == name
    key = task.primary_metric
    assert key in report["task"]["metrics"]
    rows = {a["name"]: a for a in report["artifacts"]}
    assert list(rows) == ["keras", "saved_model", "float32", "ptq_int8", "qat_int8"]
    for row_name in ("saved_model", "float32"):  # float exports pass the task's parity
        assert rows[row_name]["status"] == "ok", rows[row_name]["reason"]
    for row_name, row in rows.items():
        assert key in row["metrics"], row_name  # every row scored with the task's metric
        assert row["latency"]["p50_ms"] > 0, row_name  # and benchmarked
        if row_name != "keras":  # and checked against Keras with the task's parity
            assert any("agreement" in k for k in row["checks"]), row_name
    for row_name in ("float32", "ptq_int8", "qat_int8"):
        checks = rows[row_name]["checks"]
        assert checks["flex_ops"] == [] and checks["custom_ops"] == [], row_name
        assert [o[0] for o in checks["outputs"]] and checks["n_samples"] == 8
    assert rows["ptq_int8"]["checks"]["inputs"][0][1] == "int8"

    run_dir = tmp_path / "runs" / name
    store = ModelStore()
    store.add("m", run_dir / rows["float32"]["path"])
    http = TestClient(create_app(store))
    split = task.load_splits(cfg.data).test
    x = task.sample_inputs(split, store.resolve("m").contract, 2)
    raw = http.post("/v1/models/m:predict", json={"inputs": x.tolist()}).json()["outputs"]
    # TF Serving answers a one-output model with the bare tensor, several with a dict by name
    outputs = raw if isinstance(raw, dict) else {task.output_names[0]: raw}
    assert set(outputs) == set(task.output_names)
    for value in outputs.values():
        assert np.asarray(value).shape[0] == 2
    decoded = http.post("/v1/models/m:decode", json={"instances": x.tolist()})
    assert decoded.status_code == 200, decoded.text
    assert len(decoded.json()["predictions"]) == 2
