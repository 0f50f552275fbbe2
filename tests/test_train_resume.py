"""Training: a killed run restarted with the same command resumes from its last epoch."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kvision.config import TrainConfig
from kvision.data import Split, build_dataset
from kvision.models import build_model
from kvision.train import class_weights_for, fit, training_done
from kvision.train.fit import has_backup


def _cli(tmp_path, tiny_npz, epochs):
    return [
        sys.executable,
        "-m",
        "kvision.cli",
        "train",
        f"data.path={tiny_npz}",
        "data.dataset=npz",
        "data.batch_size=8",
        "data.val_split=0.25",
        f"runs_dir={tmp_path / 'runs'}",
        "name=resume",
        "model.name=compact_mobilenet",
        "model.options.width=0.25",
        f"train.epochs={epochs}",
        "augment.enabled=false",
    ]


def _epochs_logged(path):
    if not path.is_file():
        return []
    with path.open() as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


def test_killed_training_resumes_from_last_epoch(tmp_path, tiny_npz):
    epochs = 15
    cmd = _cli(tmp_path, tiny_npz, epochs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run_dir = tmp_path / "runs" / "resume"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and len(_epochs_logged(run_dir / "history.csv")) < 2:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _epochs_logged(run_dir / "history.csv")
    assert 2 <= len(done_before) < epochs, done_before
    assert any((run_dir / "backup").iterdir()), "no backup left behind for resuming"
    assert training_done(run_dir) is None

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    logged = _epochs_logged(run_dir / "history.csv")
    assert logged == list(range(epochs)), "every epoch exactly once, in order"
    result = training_done(run_dir)
    assert result is not None and not has_backup(run_dir)
    assert result.resumed_from_epoch >= 2
    assert result.epochs_run == epochs - result.resumed_from_epoch
    assert (run_dir / "checkpoints" / "best.keras").is_file()
    assert result.best_val_accuracy == max(result.history["val_accuracy"])


def test_fit_reports_history_and_best(tmp_path, tiny_images):
    images, labels = tiny_images
    model = build_model("compact_mobilenet", (28, 28, 1), 4, width=0.25)
    contract = model.kvision_contract
    split = Split(labels, images=images)
    train = build_dataset(split, contract, 16, training=True)
    val = build_dataset(split, contract, 16)
    cfg = TrainConfig(epochs=2, learning_rate=1e-2, warmup_epochs=0.5)
    result = fit(model, train, val, cfg, tmp_path / "run", verbose=0)
    assert result.epochs_run == 2 and result.resumed_from_epoch is None
    assert len(result.history["val_accuracy"]) == 2
    assert "learning_rate" in result.history
    # warm-up then cosine: the lr at the end of epoch 2 is lower than at the end of epoch 1
    assert result.history["learning_rate"][1] < result.history["learning_rate"][0]
    assert (tmp_path / "run" / "history.csv").is_file()
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))


def test_class_weights():
    w = class_weights_for(np.array([0, 0, 0, 1]), "balanced", 2)
    assert w[1] == pytest.approx(3 * w[0])
    assert class_weights_for([0, 1], None, 2) is None
    assert class_weights_for([0, 1], {"1": 2}, 2) == {1: 2.0}
    with pytest.raises(ValueError, match="classes \\[2\\] have no samples"):
        class_weights_for([0, 1], "balanced", 3)
    with pytest.raises(ValueError, match="outside 0..1"):
        class_weights_for([0, 1], {5: 1.0}, 2)


def test_keras3_model_is_rejected(tmp_path, tiny_images):
    keras3 = pytest.importorskip("keras")
    if keras3.__version__.startswith("2."):
        pytest.skip("the keras package here is Keras 2")
    m = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="Keras 3 object.*tf_keras"):
        fit(m, None, None, TrainConfig(epochs=1), tmp_path)


def test_device_augmentation_runs_in_the_train_step_only(tmp_path, tiny_images):
    import tensorflow as tf

    from kvision._keras import load_model

    images, labels = tiny_images
    model = build_model("lenet", (28, 28, 1), 4)
    split = Split(labels, images=images)
    train = build_dataset(split, model.kvision_contract, 16, training=True)  # 4 steps
    val = build_dataset(split, model.kvision_contract, 16)
    calls = tf.Variable(0, dtype=tf.int64)
    seen_max = tf.Variable(0.0)

    def augmenter(x, y):
        calls.assign_add(1)
        seen_max.assign(tf.maximum(seen_max, tf.reduce_max(x)))
        return 1.0 - x, y

    result = fit(
        model,
        train,
        val,
        TrainConfig(epochs=2),
        tmp_path / "run",
        verbose=0,
        device_augmenter=augmenter,
    )
    assert int(calls.numpy()) == 2 * 4  # every train step, never for validation
    assert float(seen_max.numpy()) <= 1.0  # the augmenter sees [0, 1] images
    saved = load_model(result.checkpoint)
    assert [layer.name for layer in saved.layers] == [layer.name for layer in model.layers]
