"""``kvision pipeline task=segmentation`` end to end on a tiny mask-folder set (kvision.spine),
``kvision predict --out`` on a segmenter (overlay, class-mask PNG, JSON with RLE), serving.

The dataset is ``tiny_masks`` (``tests/conftest.py``: gray squares and discs on noise, 32x32,
with instance ids), so no package data is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_SEGMENTATION_LABELS, TINY_SPINE_OVERRIDES
from PIL import Image

from kvision.config import load_config

SIZE = 32


@pytest.fixture(scope="module")
def report(tiny_masks, tmp_path_factory):
    from kvision.workflow import run_pipeline

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        overrides=[
            "task=segmentation",
            f"data.path={tiny_masks}",
            f"runs_dir={runs}",
            *TINY_SPINE_OVERRIDES,
            "model.options={width: 4, depth: 2}",
            "model.head.channels=4",
            "train.epochs=3",
            "compress.techniques=[ptq,qat]",
            "augment.transforms=[{name: flip, mode: both}, rot90]",
            "benchmark.runs=3",
        ]
    )
    return run_pipeline(cfg, verbose=0), runs / "segmentation_unet"


def test_pipeline_runs_every_stage_and_reports_miou(report):
    rep, run_dir = report
    assert rep["run"]["name"] == "segmentation_unet"  # the task's default backbone
    task = rep["task"]
    assert task["name"] == "segmentation" and task["primary_metric"] == "mIoU"
    m = task["metrics"]
    assert task["n"] == 8 and m["n"] == 8
    assert 0.0 <= m["mIoU"] <= 1.0 and 0.0 <= m["foreground_Dice"] <= 1.0
    assert set(m["per_class_IoU"]) == set(TINY_SEGMENTATION_LABELS)
    assert m["labelled_pixels"] == 8 * SIZE * SIZE
    assert "instance_F1@0.5" in m  # the split has instance ids: the nuclei rule is on
    assert rep["data"]["splits"] == {"train": 24, "val": 8, "test": 8}
    assert rep["data"]["dataset"] == "masks"
    for name in ("report.md", "report.html", "predictions.png", "metrics.json",
                 "augment_preview.png", "training_curves.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    markdown = (run_dir / "report.md").read_text()
    assert "mIoU" in markdown and "| boundary |" not in markdown  # the tiny labels, not nuclei
    assert "| square |" in markdown and "lowest mIoU" in markdown


def test_artifacts_verified_on_decoded_masks_and_scored(report):
    rep, _ = report
    rows = {a["name"]: a for a in rep["artifacts"]}
    assert list(rows) == ["keras", "saved_model", "float32", "ptq_int8", "qat_int8"]
    for name in ("saved_model", "float32"):
        assert rows[name]["status"] == "ok", rows[name]["reason"]
        assert rows[name]["checks"]["max_abs_diff"] <= 1e-3
        assert rows[name]["checks"]["mask_IoU_agreement"] >= 0.99
    for name, row in rows.items():
        assert "mIoU" in row["metrics"], name
        assert row["latency"]["p50_ms"] > 0, name
    for name in ("float32", "ptq_int8", "qat_int8"):
        checks = rows[name]["checks"]
        assert checks["flex_ops"] == [] and checks["custom_ops"] == [], name
        assert checks["outputs"][0][0] == "mask_logits"


def test_predict_writes_overlay_class_mask_and_rle_json(report, tiny_masks, tmp_path):
    from pycocotools import mask as mask_utils

    from kvision.predict import predict_task_files

    rep, run_dir = report
    tflite = run_dir / next(a["path"] for a in rep["artifacts"] if a["name"] == "float32")
    image = tiny_masks / "test" / "images" / "000.png"
    out = tmp_path / "pred"
    results = predict_task_files(tflite, [image], out_dir=out)
    seg = results[0]["segmentation"]
    assert seg["size"] == [SIZE, SIZE]
    mask = np.asarray(Image.open(out / "000_mask.png"))
    assert Image.open(out / "000_mask.png").mode == "P" and mask.shape == (SIZE, SIZE)
    for entry in seg["classes"]:  # each class's RLE is exactly its pixels in the mask PNG
        decoded = mask_utils.decode({**entry["rle"], "counts": entry["rle"]["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask == entry["class_index"])
        assert entry["pixels"] == int((mask == entry["class_index"]).sum())
        assert entry["label"] == TINY_SEGMENTATION_LABELS[entry["class_index"]]
    assert np.asarray(Image.open(out / "000.png")).shape == (SIZE, SIZE, 3)
    assert json.loads((out / "000.json").read_text()) == results[0]
    assert "instances" in seg and seg["instances"]["count"] >= 0

    cli = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "predict", "--model", str(tflite), str(image)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "32x32 mask" in cli.stdout


def test_segmentation_needs_a_dataset_path_and_says_how_to_make_one():
    from kvision.errors import InputValueError
    from kvision.tasks import get_task

    cfg = load_config(overrides=["task=segmentation"])
    with pytest.raises(InputValueError, match="make_segmentation_data.py"):
        get_task("segmentation").load_splits(cfg.data)
    cfg = load_config(overrides=["task=segmentation", "data.dataset=voc", "data.path=x"])
    with pytest.raises(InputValueError, match="not a segmentation dataset"):
        get_task("segmentation").load_splits(cfg.data)
