"""Training: a killed run restarted with the same command resumes from its last epoch."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kvision._keras import keras
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
    _check_best(run_dir, result)


def _check_best(run_dir, result):
    """The reported best epoch and value are the log's, and the checkpoint on disk scores it."""
    from kvision._keras import load_model
    from kvision.config import load_config
    from kvision.data import load_dataset, model_inputs
    from kvision.models import InputContract

    with (run_dir / "history.csv").open() as fh:
        val = [float(r["val_accuracy"]) for r in csv.DictReader(fh)]
    best = result.best_val_accuracy
    assert 1 <= result.best_epoch <= len(val) and val[result.best_epoch - 1] == best
    assert all(v < best for v in val[: result.best_epoch - 1])  # the first epoch to reach it
    assert all(v <= best for v in val)
    # the saved model scores the best value on the validation split it was chosen on
    cfg = load_config(run_dir / "config.yaml")
    split = load_dataset(cfg.data, seed=cfg.train.seed).val
    model = load_model(run_dir / "checkpoints" / "best.keras")
    x = model_inputs(split.images, InputContract.load(run_dir / "checkpoints"))
    predicted = model.predict(x, batch_size=cfg.data.batch_size, verbose=0).argmax(-1)
    assert np.mean(predicted == split.labels) == pytest.approx(best, abs=1e-6)


class _Crash(keras.callbacks.Callback):
    """Stops training with an exception at the end of epoch ``epoch`` (0-based), after the
    backup, the best checkpoint and the CSV row of that epoch are written."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"crash after epoch {epoch}")


def test_resumed_fit_keeps_the_best_of_the_epochs_before_the_crash(tmp_path, tiny_images):
    images, labels = tiny_images
    split = Split(labels, images=images)
    run_dir = tmp_path / "run"
    cfg = TrainConfig(epochs=4, learning_rate=1e-2, warmup_epochs=0.0)

    def datasets(model):
        contract = model.kvision_contract
        return build_dataset(split, contract, 16, training=True), build_dataset(split, contract, 32)

    keras.utils.set_random_seed(0)
    model = build_model("lenet", (28, 28, 1), 4, filters=(4, 8), dense_units=16)
    with pytest.raises(KeyboardInterrupt):
        fit(model, *datasets(model), cfg, run_dir, callbacks=[_Crash(1)], verbose=0)
    assert has_backup(run_dir) and training_done(run_dir) is None
    # Make the interrupted run's best its last epoch, at a value no later epoch can beat: a
    # resumed run that forgot it (or took an earlier epoch's) would overwrite the checkpoint.
    history = run_dir / "history.csv"
    with history.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    rows[0]["val_accuracy"], rows[1]["val_accuracy"] = "0.0", "1.0"
    with history.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    best = run_dir / "checkpoints" / "best.keras"
    saved = best.read_bytes()

    model = build_model("lenet", (28, 28, 1), 4, filters=(4, 8), dense_units=16)
    result = fit(model, *datasets(model), cfg, run_dir, verbose=0)
    assert result.resumed_from_epoch == 2 and result.epochs_run == 2
    assert result.history["epoch"] == [0, 1, 2, 3] and not has_backup(run_dir)
    assert (result.best_epoch, result.best_val_accuracy) == (2, 1.0)
    assert best.read_bytes() == saved  # no resumed epoch beat it: the checkpoint was kept


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
    assert class_weights_for([0, 1], {"1": 2}, 2) == {0: 1.0, 1: 2.0}  # unlisted: 1.0
    with pytest.raises(ValueError, match="classes \\[2\\] have no samples"):
        class_weights_for([0, 1], "balanced", 3)
    with pytest.raises(ValueError, match="class indices are integers 0..1"):
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
