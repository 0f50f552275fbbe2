#!/usr/bin/env python3
"""Detection benchmark run: train a detector, then float32 / PTQ int8 / QAT int8 TFLite, each
verified against Keras on decoded detections and scored with COCO mAP on the test split.

It drives the detection task's pieces directly (``kvision.tasks.detection``: readers, box-aware
augmentation, anchors, ``build_detector``, ``fit`` asking the task, the streamed COCO metric,
parity on decoded detections, ``kvision.runtime`` for the ``.tflite`` files) until
``kvision pipeline task=detection`` runs the same stages. Times are wall seconds of this run; the
table is written as JSON and Markdown::

    python tools/bench_detection.py --data data/det --out runs/bench_detection --epochs 30
    # generates the dataset first (tools/make_detection_data.py, seed 0) when --data is missing

Numbers go in the issue's closing note; no test asserts a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = ("float32", "int8_float_io", "int8")
SPLITS = ("train", "val", "test")


def _ensure_data(path: Path, seed: int) -> None:
    if (path / "test" / "annotations.json").is_file():
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_detection_data import generate

    print(f"generating the detection dataset in {path} (seed {seed})", flush=True)
    generate(path, seed=seed)


def _score(task, contract, test, run) -> dict:
    from kvision.tasks.detection.data import eval_batches

    metric = task.metric(contract)
    t0, n = time.perf_counter(), 0
    for x, examples in eval_batches(test, contract):
        metric.update(run(x), examples)
        n += len(examples)
    result = metric.result()
    keys = ("mAP@[.5:.95]", "mAP@.5", "mAP@.75", "AP_small", "AP_medium", "per_class_AP")
    speed = n / (time.perf_counter() - t0)
    return {k: result[k] for k in keys} | {"images_per_s_with_decoding": speed}


def _artifact_row(task, model, contract, path, variant, sample, reference, test, calib) -> dict:
    from kvision.export.converter import convert_tflite
    from kvision.runtime import open_runtime, split_ops, tflite_op_names

    t0 = time.perf_counter()
    convert_tflite(model, path, variant, representative_data=calib, overwrite=True)
    row = {"variant": variant, "convert_s": time.perf_counter() - t0}
    flex, custom = split_ops(tflite_op_names(path))
    row.update(size_kb=path.stat().st_size / 1024, flex_ops=flex, custom_ops=custom)
    rt = open_runtime(path, "litert", threads=2)
    rt.load()
    row["io"] = {
        "inputs": [(t.name, t.dtype) for t in rt.inputs],
        "outputs": [(t.name, t.dtype) for t in rt.outputs],
    }
    parity = task.parity(reference, rt.run(sample), variant, contract)
    row.update(parity_ok=parity.ok, parity_reason=parity.reason, parity=parity.checks)
    row.update(_score(task, contract, test, rt.run))
    rt.close()
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/det"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_detection"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--backbone", default="compact_mobilenet")
    ap.add_argument("--width", type=float, default=1.0, help="compact_mobilenet width")
    ap.add_argument("--channels", type=int, default=64, help="pyramid and head width")
    ap.add_argument("--qat-epochs", type=int, default=2, help="0 skips QAT")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from kvision._keras import keras
    from kvision.config import TrainConfig
    from kvision.tasks import get_task
    from kvision.tasks.detection.augment import build_detection_augmenter
    from kvision.tasks.detection.data import detection_dataset, eval_batches
    from kvision.tasks.detection.formats import read_coco
    from kvision.tasks.detection.model import build_detector
    from kvision.tasks.detection.task import contract_anchors
    from kvision.train.fit import fit

    _ensure_data(args.data, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    train, val, test = (read_coco(args.data / s / "annotations.json") for s in SPLITS)
    options = {"width": args.width} if args.backbone == "compact_mobilenet" else {}
    size = (train.examples[0].height, train.examples[0].width, 3)
    model = build_detector(size, train.labels, args.backbone, options, channels=args.channels)
    contract = model.kvision_contract
    anchors = contract_anchors(contract)
    task = get_task("detection")
    aug = build_detection_augmenter("auto", seed=args.seed)
    train_ds = detection_dataset(
        train, contract, anchors, batch_size=args.batch_size, shuffle=True, augmenter=aug,
        seed=args.seed,
    )  # fmt: skip
    val_ds = detection_dataset(val, contract, anchors, batch_size=args.batch_size)
    cfg = TrainConfig(epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed)
    t0 = time.perf_counter()
    result = fit(model, train_ds, val_ds, cfg, args.out / "train", verbose=2)
    report = {
        "data": str(args.data),
        "images": {s: len(d.examples) for s, d in zip(SPLITS, (train, val, test), strict=True)},
        "model": {"backbone": args.backbone, "width": args.width, "channels": args.channels,
                  "parameters": int(model.count_params()), "anchors": int(len(anchors))},
        "train": {"epochs": args.epochs, "seconds": time.perf_counter() - t0,
                  "best_epoch": result.best_epoch, "best_val_loss": result.best_value},
    }  # fmt: skip
    model.load_weights(result.checkpoint)

    def keras_run(x):
        return {k: v.numpy() for k, v in model(x, training=False).items()}

    report["keras"] = _score(task, contract, test, keras_run)
    print(json.dumps({"keras": report["keras"]}), flush=True)
    calib = np.concatenate([x for x, _ in eval_batches(val, contract)])[:300]
    sample = calib[:64]
    reference = keras_run(sample)
    rows = []
    for variant in VARIANTS:
        path = args.out / f"detector_{variant}.tflite"
        row = _artifact_row(task, model, contract, path, variant, sample, reference, test, calib)
        rows.append(row)
        print(json.dumps(rows[-1], default=str)[:600], flush=True)
    if args.qat_epochs:
        from kvision.compress.qat import quantize_model
        from kvision.train.fit import compile_model

        t0 = time.perf_counter()
        qat, layer_report = quantize_model(model)
        qat.kvision_contract = contract
        qcfg = TrainConfig(epochs=args.qat_epochs, learning_rate=args.learning_rate / 10,
                           warmup_epochs=0.0, seed=args.seed)  # fmt: skip
        compile_model(qat, qcfg, len(train.examples) // args.batch_size + 1, task)
        qat.fit(train_ds, epochs=args.qat_epochs, verbose=2)
        qat_s = time.perf_counter() - t0
        path = args.out / "detector_qat_int8.tflite"
        row = _artifact_row(task, qat, contract, path, "int8", sample, reference, test, calib)
        row.update(variant="qat_int8", qat_seconds=qat_s, qat_layers=layer_report.summary())
        rows.append(row)
        print(json.dumps(row, default=str)[:600], flush=True)
    report["artifacts"] = rows
    (args.out / "bench_detection.json").write_text(json.dumps(report, indent=1, default=str))
    k = report["keras"]
    lines = [
        "| model | status | size KB | mAP@[.5:.95] | mAP@.5 | agreement vs Keras | img/s (+NMS) |",
        "|---|---|--:|--:|--:|--:|--:|",
        f"| keras | ok | - | {k['mAP@[.5:.95]']:.4f} | {k['mAP@.5']:.4f} | 1.0 | "
        f"{k['images_per_s_with_decoding']:.0f} |",
    ]
    for r in rows:
        status = "ok" if r["parity_ok"] else f"failed: {r['parity_reason']}"
        lines.append(
            f"| {r['variant']} | {status} | {r['size_kb']:.0f} | {r['mAP@[.5:.95]']:.4f} | "
            f"{r['mAP@.5']:.4f} | {r['parity']['detection_agreement']:.3f} | "
            f"{r['images_per_s_with_decoding']:.0f} |"
        )
    (args.out / "bench_detection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
