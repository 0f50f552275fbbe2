#!/usr/bin/env python3
"""kvision's defaults on a digit folder it does not know, side by side with plain Keras.

A user's own small image folder is where defaults go wrong (a horizontal flip turns a 2 into
something else; 200 k parameters overfit 4,000 images). This benchmark makes OpenCV's 5,000
handwritten digits into a folder (``tools/make_digits_folder.py``, stratified 4,000 / 1,000 split)
and trains, on the same split, in the same run:

- ``kvision``: ``kvision train`` + ``kvision evaluate`` with no settings but the data paths
  (a subprocess, as a user runs it);
- ``keras_convnet``: the Keras "simple MNIST convnet" example as written (two 3x3 convolutions
  with max-pooling, dropout 0.5, Adam, batch 128, 15 epochs, 10 % validation split), in a
  subprocess too.

It prints test accuracy and wall time of both::

    python tools/bench_digits.py --out runs/bench_digits          # ~10 min on 2 cores
    python tools/bench_digits.py --out runs/bench_digits -- train.epochs=5   # extra overrides
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KERAS_RECIPE = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
import tf_keras as keras

def load(folder):
    xs, ys = [], []
    for label_dir in sorted(Path(folder).iterdir()):
        for f in sorted(label_dir.glob("*.png")):
            xs.append(np.asarray(Image.open(f).convert("L")))
            ys.append(int(label_dir.name))
    return np.stack(xs)[..., None].astype("float32") / 255.0, np.asarray(ys)

t0 = time.perf_counter()
x_train, y_train = load(sys.argv[1])
x_test, y_test = load(sys.argv[2])
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input(shape=x_train.shape[1:]),
    keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
    keras.layers.MaxPooling2D(pool_size=(2, 2)),
    keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
    keras.layers.MaxPooling2D(pool_size=(2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dropout(0.5),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x_train, keras.utils.to_categorical(y_train, 10), batch_size=128, epochs=15,
          validation_split=0.1, verbose=0)
acc = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
print(json.dumps({"test_accuracy": acc, "wall_s": time.perf_counter() - t0,
                  "params": int(model.count_params())}))
"""


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def run_keras(train: Path, test: Path) -> dict:
    """The Keras convnet recipe in a subprocess; ``{"test_accuracy", "wall_s", "params"}``."""
    out = subprocess.run(
        [sys.executable, "-c", KERAS_RECIPE, str(train), str(test)],
        capture_output=True, text=True, env=_env(), check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_kvision(train: Path, test: Path, runs_dir: Path, name: str, overrides) -> dict:
    """``kvision train`` then ``kvision evaluate`` with defaults (plus ``overrides``)."""
    kvision = [sys.executable, "-m", "deploy.cli"]
    args = [
        "data.dataset=folder", f"data.path={train}", f"data.test_path={test}",
        f"runs_dir={runs_dir}", f"name={name}", *overrides,
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run([*kvision, "train", *args], check=True, env=_env(), cwd=ROOT)
    train_s = time.perf_counter() - t0
    run_dir = runs_dir / name
    checkpoint = run_dir / "checkpoints" / "best.keras"
    subprocess.run([*kvision, "evaluate", *args, "--model", str(checkpoint)], check=True,
                   env=_env(), cwd=ROOT)  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = (run_dir / "config.yaml").read_text()
    training = json.loads((run_dir / "training.json").read_text())
    return {
        "test_accuracy": metrics["accuracy"],
        "train_wall_s": train_s,
        "wall_s": time.perf_counter() - t0,
        "epochs_run": training["epochs_run"],
        "best_val_accuracy": training["best_val_accuracy"],
        "config_yaml": config,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_digits"))
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("overrides", nargs="*", help="extra kvision key=value overrides")
    args = p.parse_args(argv)
    data = args.out / "digits"
    if not (data / "test").is_dir():
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_digits_folder.py"),
                        "--out", str(data)], check=True)  # fmt: skip
    train, test = (data / "train").resolve(), (data / "test").resolve()
    name = f"digits_{time.strftime('%Y%m%d_%H%M%S')}"
    kv = run_kvision(train, test, args.out.resolve(), name, args.overrides)
    ke = run_keras(train, test)
    rows = [
        ("kvision defaults", kv["test_accuracy"], kv["wall_s"]),
        ("Keras simple convnet, 15 epochs", ke["test_accuracy"], ke["wall_s"]),
    ]
    print(f"\nOpenCV digits, 4,000 train / 1,000 test, {os.cpu_count()} CPUs")
    print(f"{'recipe':34s} {'test acc':>9s} {'wall s':>8s}")
    for label, acc, wall in rows:
        print(f"{label:34s} {acc:9.4f} {wall:8.1f}")
    if args.json:
        from kvision.io import atomic_write_json

        atomic_write_json(args.json, {"kvision": kv, "keras_convnet": ke})
    return 0


if __name__ == "__main__":
    sys.exit(main())
