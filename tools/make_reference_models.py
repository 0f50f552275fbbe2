#!/usr/bin/env python
"""Regenerate ``tflite_models/``: the default classifier as float32 and int8 TFLite, with
``metadata.json`` (labels, input contract, per-file facts) and golden input/outputs.

The model is kvision's default (``compact_mobilenet``, width 0.25, 28x28x1) trained briefly on
Fashion-MNIST (``--steps`` Adam steps, batch 64, seed 0, one CPU thread) - a small reference,
not a good classifier; its test accuracy is recorded in ``metadata.json``. ``tests/
test_deploy_reference_models.py`` checks that the files load and reproduce the golden outputs,
and measures them on the Fashion-MNIST test split: int8 is smaller on disk and as accurate as
float32, and ``metadata.json`` states the sizes and accuracies measured.

Usage::

    python tools/make_reference_models.py                 # writes tflite_models/
    python tools/make_reference_models.py --steps 600 --out /tmp/ref
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_N = 8
VARIANTS = ("float32", "int8")
# golden check tolerances: |output - golden| per variant (int8: one output quantum = 1/256)
GOLDEN_ATOL = {"float32": 1e-4, "int8": 1.0 / 256 + 1e-6}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="make_reference_models", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "tflite_models"), help="output folder")
    p.add_argument("--steps", type=int, default=300, help="training steps (300)")
    p.add_argument("--data-path", help="Fashion-MNIST IDX folder (default location)")
    p.add_argument("--eval", type=int, default=2000, help="test images for the accuracy (2000)")
    args = p.parse_args(argv)
    meta = make_reference_models(args.out, args.steps, args.data_path, args.eval)
    for name, v in meta["files"].items():
        print(f"{name}: {v['size_bytes'] / 1e3:.1f} KB, test accuracy {v['test_accuracy']:.4f}")
    return 0


def make_reference_models(out_dir, steps: int = 300, data_path=None, n_eval: int = 2000) -> dict:
    import tensorflow as tf

    from deploy.runtimes import open_runtime
    from kvision._keras import keras
    from kvision.config import DataConfig
    from kvision.data import load_dataset, model_inputs
    from kvision.export.converter import convert_tflite
    from kvision.io import atomic_write_json
    from kvision.models import build_model
    from kvision.models.contract import InputContract, attach_contract

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    splits = load_dataset(DataConfig(dataset="fashion_mnist", path=data_path, val_split=0))
    contract = InputContract(28, 28, 1, labels=list(splits.class_names))
    n_train = steps * 64
    x_train = model_inputs(splits.train.images[:n_train], contract)
    y_train = splits.train.labels[:n_train]
    x_test = model_inputs(splits.test.images[:n_eval], contract)
    y_test = splits.test.labels[:n_eval]

    model = build_model("compact_mobilenet", (28, 28, 1), 10, width=0.25)
    attach_contract(model, contract)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=1, steps_per_epoch=steps, verbose=0)
    train_s = time.perf_counter() - start
    keras_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))

    out = Path(out_dir)
    golden_pixels = splits.test.images[:GOLDEN_N]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "golden_input.npy", golden_pixels)
    golden_x = contract.normalize(golden_pixels)
    files = {}
    for variant in VARIANTS:
        path = out / f"classifier_{variant}.tflite"
        rep = x_train[:200] if variant == "int8" else None
        convert_tflite(model, path, variant, representative_data=rep, overwrite=True)
        with open_runtime(path, "litert", threads=1) as rt:
            golden = rt.predict(golden_x)
            acc = float(np.mean(rt.predict(x_test).argmax(-1) == y_test))
            spec = rt.input_spec.to_dict()
            out_spec = rt.output_spec.to_dict()
        np.save(out / f"golden_output_{variant}.npy", golden.astype(np.float32))
        files[path.name] = {
            "variant": variant,
            "size_bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "input": spec,
            "output": out_spec,
            "test_accuracy": acc,
            "golden_output": f"golden_output_{variant}.npy",
            "golden_atol": GOLDEN_ATOL[variant],
        }
    meta = {
        "model": "compact_mobilenet",
        "width": 0.25,
        "labels": list(contract.labels),
        "contract": contract.to_dict(),
        "training": {
            "dataset": "fashion_mnist",
            "steps": steps,
            "batch_size": 64,
            "optimizer": "Adam(3e-3)",
            "seed": 0,
            "train_seconds": round(train_s, 1),
            "note": "a brief training run for reference artifacts, not a tuned classifier",
            "keras_test_accuracy": keras_acc,
            "n_test": int(len(y_test)),
        },
        "golden": {
            "input": "golden_input.npy",
            "input_kind": "uint8 pixels [N, 28, 28, 1]; model input = contract.normalize()",
            "n": GOLDEN_N,
            "runtime": "litert (XNNPACK), 1 thread",
        },
        "files": files,
        "regenerate": "python tools/make_reference_models.py",
    }
    # the contract each file carries beside it is the same as metadata.json's
    atomic_write_json(out / "metadata.json", meta)
    return meta


if __name__ == "__main__":
    sys.exit(main())
