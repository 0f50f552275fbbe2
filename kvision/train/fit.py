"""Keras ``fit`` with the callbacks every run needs, resumable after a crash.

``fit`` compiles the model with a warm-up + cosine learning-rate schedule and trains it with:
best-checkpoint saving (``checkpoints/best.keras``), a backup of the last finished epoch
(``backup/``, so a killed run restarted with the same command continues from there), a CSV log
(``history.csv``), TensorBoard logs (``logs/``), optional early stopping and class weights::

    result = fit(model, train_ds, val_ds, TrainConfig(epochs=3), run_dir="runs/demo")
    result.best_val_accuracy, result.checkpoint
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kvision import _env
from kvision._keras import fit_verbosity, keras, require_tf_keras_model
from kvision.config import ConfigError, TrainConfig
from kvision.errors import InputValueError
from kvision.io import atomic_write_json

BEST_CHECKPOINT = "checkpoints/best.keras"
HISTORY_CSV = "history.csv"
DONE_FILE = "training.json"


@dataclass
class FitResult:
    """What ``fit`` did.

    Args:
        history: metric name -> per-epoch values over the whole run (resumed epochs included).
        epochs_run: epochs trained in this call.
        resumed_from_epoch: epochs already done when this call started (``None`` for a fresh run).
        best_epoch: 1-based epoch with the best value of the task's checkpoint monitor.
        best_val_accuracy: the validation accuracy of that epoch (classification; ``None`` for a
            task that monitors something else).
        checkpoint: path of the best checkpoint.
        history_csv: path of the CSV log.
        monitor: the Keras log key that chose the best epoch (``val_accuracy``, ``val_loss``).
        best_value: its value at the best epoch.
    """

    history: dict = field(default_factory=dict)
    epochs_run: int = 0
    resumed_from_epoch: int | None = None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    checkpoint: str = ""
    history_csv: str = ""
    monitor: str = "val_accuracy"
    best_value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int):
    """Optimizer with linear warm-up then cosine decay over ``cfg.epochs`` epochs."""
    total = max(1, int(cfg.epochs * steps_per_epoch))
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.learning_rate,
        decay_steps=max(1, total - warmup),
        alpha=0.0,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(schedule)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    raise ConfigError(
        f"`train.optimizer` should be one of adam, adamw, sgd. Received: {cfg.optimizer!r}"
    )


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int, task=None):
    """Compile ``model`` with ``cfg``'s optimizer and the task's loss and metrics (default: the
    task of the model's contract, classification when it has none)."""
    inner = getattr(model, "inner", model)  # a _DeviceAugmentTrainer wraps the real model
    task = task or task_of(inner)
    outputs = inner.output if isinstance(inner.output, dict) else {"": inner.output}
    num_classes = int(next(iter(outputs.values())).shape[-1]) if len(outputs) == 1 else 0
    args = task.compile_args(cfg, num_classes)
    model.compile(optimizer=build_optimizer(cfg, steps_per_epoch), **args)
    return model


def task_of(model):
    """The :class:`~kvision.tasks.Task` named by ``model``'s contract (classification if none)."""
    from kvision.tasks import get_task

    contract = getattr(model, "kvision_contract", None)
    return get_task(getattr(contract, "task", None) or "classification")


def class_weights_for(labels, setting, num_classes: int) -> dict | None:
    """Resolve ``TrainConfig.class_weights`` to Keras' ``class_weight`` dict (every class).

    Args:
        labels: integer class ids of the training split (used by ``"balanced"``).
        setting: ``None`` (no weighting), ``"balanced"`` (``n_samples / (num_classes *
            count)``) or a mapping ``{class_index: weight}``. A mapping may name only some
            classes: the classes it does not name weigh 1.0.
        num_classes: number of classes.

    Returns:
        ``None`` or ``{class_index: float weight}`` for every class ``0..num_classes-1``.

    Raises:
        kvision.config.ConfigError: (a ``ValueError``) naming ``train.class_weights`` and the
            value: a class index outside ``0..num_classes-1`` or not an integer, a weight that
            is negative, not a number or not finite, all weights zero, ``"balanced"`` with a
            class that has no training samples, or any other setting.

    Example:
        >>> class_weights_for([0, 1, 2, 3], {0: 5.0}, 4)
        {0: 5.0, 1: 1.0, 2: 1.0, 3: 1.0}
    """
    field_ = "train.class_weights"
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
        if (counts == 0).any():
            missing = [int(i) for i in np.flatnonzero(counts == 0)]
            raise ConfigError(
                f"`{field_}`=balanced needs every class in the training data; "
                f"classes {missing} have no samples. Give explicit weights instead."
            )
        weights = counts.sum() / (num_classes * counts)
        return {i: float(w) for i, w in enumerate(weights)}
    if not isinstance(setting, dict):
        raise ConfigError(
            f"`{field_}` should be null, 'balanced' or a mapping {{class_index: weight}}. "
            f"Received: {setting!r}"
        )
    out = {i: 1.0 for i in range(num_classes)}  # classes not named weigh 1.0
    for key, value in setting.items():
        index = _class_index(key)
        if index is None or not 0 <= index < num_classes:
            raise ConfigError(
                f"`{field_}` names class {key!r}; class indices are integers 0..{num_classes - 1} "
                f"({num_classes} classes). Received: {setting!r}"
            )
        weight = _weight(value)
        if weight is None or weight < 0:
            raise ConfigError(
                f"`{field_}[{index}]` should be a finite number >= 0. Received: {value!r}"
            )
        out[index] = weight
    if not any(out.values()):
        raise ConfigError(f"`{field_}` weighs every class 0: nothing would be learned.")
    return out


def _class_index(key) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int | np.integer):
        return int(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    return None


def _weight(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number | str):
        return None
    try:
        weight = float(value)
    except ValueError:
        return None
    return weight if math.isfinite(weight) else None


def fit(
    model,
    train_ds,
    val_ds,
    cfg: TrainConfig,
    run_dir,
    steps_per_epoch: int | None = None,
    class_weight: dict | None = None,
    callbacks=(),
    verbose: int | str = "auto",
    device_augmenter=None,
    expected_steps: int | None = None,
    task=None,
) -> FitResult:
    """Train ``model`` with Keras ``fit``; resumable, checkpointed and logged under ``run_dir``.

    Args:
        model: a tf_keras model (a Keras 3 model raises a ``TypeError`` that explains why).
            When TensorFlow's oneDNN ops are on in this process (TensorFlow's default on x86)
            and the model has a 1x1 strided convolution whose oneDNN gradient corrupts memory,
            ``kvision.errors.UnsafeTrainingError`` is raised before training (see
            ``kvision._env``; the ``kvision`` command then restarts with oneDNN off).
        train_ds: ``tf.data.Dataset`` of ``(images, labels)`` batches (integer labels).
        val_ds: validation dataset of the same form (or ``None``).
        cfg: training settings (epochs, learning rate, schedule, optimizer ...).
        run_dir: the run directory; created if needed.
        steps_per_epoch: steps per epoch; default: the dataset's cardinality (or
            ``cfg.steps_per_epoch`` when set).
        class_weight: Keras class weights (see :func:`class_weights_for`).
        callbacks: extra Keras callbacks.
        verbose: Keras verbosity; ``"auto"`` shows the progress bar on a terminal and one line per
            epoch otherwise.
        device_augmenter: an augmenter (``kvision.augment.build_augmenter``) applied inside the
            train step, on the device that trains (the GPU when there is one), instead of in
            ``tf.data``. ``model`` itself never contains it: it is what gets checkpointed.
        expected_steps: batches per epoch to size the learning-rate schedule when the dataset's
            length is unknown (image folders, whose bad files are filtered out while decoding);
            each epoch still runs until the dataset is exhausted.
        task: the :class:`~kvision.tasks.Task` that gives the loss, the training metrics, the
            target mapping and the checkpoint monitor (default: the task of the model's
            contract; classification when it has none).

    Returns:
        A :class:`FitResult`. The model holds the weights of the last epoch; the best ones are in
        ``result.checkpoint``.

    Example:
        >>> result = fit(model, train_ds, val_ds, TrainConfig(epochs=2), "runs/demo")
    """
    require_tf_keras_model(model)
    _env.check_trainable(model)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = _steps_per_epoch(train_ds, steps_per_epoch or cfg.steps_per_epoch, expected_steps)
    if cfg.epochs == "auto":  # kvision.workflow resolves it from the split; here from the steps
        import dataclasses

        from kvision.auto import epochs_for_steps

        cfg = dataclasses.replace(cfg, epochs=epochs_for_steps(steps))
    task = task or task_of(model)
    train_ds = task.training_targets(train_ds, cfg, model)
    val_ds = task.training_targets(val_ds, cfg, model) if val_ds is not None else None
    trainer = task.trainer(model, cfg)  # checkpoints save `model` (_BestCheckpoint)
    if device_augmenter is not None:
        contract = getattr(model, "kvision_contract", None)
        trainer = _DeviceAugmentTrainer(model, device_augmenter, contract)
    compile_model(trainer, cfg, steps, task)

    history_csv = run_dir / HISTORY_CSV
    done_before = _read_history(history_csv)
    backup_dir = run_dir / "backup"
    resumed_from = (
        len(done_before.get("epoch", [])) if has_backup(run_dir) and done_before else None
    )
    if not has_backup(run_dir) and history_csv.exists():
        history_csv.unlink()  # a fresh run: the old log belongs to a finished or abandoned run
        done_before = {}

    monitor, mode = task.monitor(val_ds is not None)
    pick = max if mode == "max" else min
    best_so_far = pick(done_before.get(monitor, []), default=None)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    cbs = [
        keras.callbacks.BackupAndRestore(
            str(backup_dir), save_freq="epoch", delete_checkpoint=True
        ),
        _LearningRateLogger(),
        _BestCheckpoint(model, run_dir / BEST_CHECKPOINT, monitor, best_so_far, mode),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
    ]
    if cfg.early_stopping:
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=cfg.early_stopping, restore_best_weights=False
            )
        )
    cbs.extend(callbacks)
    verbose = fit_verbosity(verbose)

    keras_history = trainer.fit(
        train_ds.repeat() if cfg.steps_per_epoch or steps_per_epoch else train_ds,
        validation_data=val_ds,
        epochs=cfg.epochs,
        steps_per_epoch=steps if (cfg.steps_per_epoch or steps_per_epoch) else None,
        class_weight=class_weight,
        callbacks=cbs,
        verbose=verbose,
    )
    if backup_dir.is_dir() and not any(backup_dir.iterdir()):
        backup_dir.rmdir()  # Keras empties it on success but leaves the folder
    history = _read_history(history_csv)
    values = history.get(monitor, [])
    best = (np.argmax(values) if mode == "max" else np.argmin(values)) if values else None
    accuracy_key = "val_accuracy" if val_ds is not None else "accuracy"
    accuracies = history.get(accuracy_key, [])
    result = FitResult(
        history=history,
        epochs_run=len(keras_history.epoch),
        resumed_from_epoch=resumed_from,
        best_epoch=int(best) + 1 if values else None,
        best_val_accuracy=float(accuracies[best]) if values and len(accuracies) > best else None,
        checkpoint=str(run_dir / BEST_CHECKPOINT),
        history_csv=str(history_csv),
        monitor=monitor,
        best_value=float(values[best]) if values else None,
    )
    atomic_write_json(run_dir / DONE_FILE, result.to_dict())
    return result


def training_done(run_dir) -> FitResult | None:
    """The saved :class:`FitResult` of a finished training in ``run_dir``, else ``None``."""
    p = Path(run_dir) / DONE_FILE
    if not p.is_file() or has_backup(run_dir):
        return None
    return FitResult(**json.loads(p.read_text()))


def has_backup(run_dir) -> bool:
    """True when ``run_dir`` holds the backup of an interrupted training."""
    backup = Path(run_dir) / "backup"
    return backup.is_dir() and any(backup.iterdir())


class _BestCheckpoint(keras.callbacks.Callback):
    """Saves ``model`` (not the object being fit) atomically when ``monitor`` improves
    (``mode`` ``"max"``: grows; ``"min"``: shrinks)."""

    def __init__(self, model, path: Path, monitor: str, best: float | None = None, mode="max"):
        super().__init__()
        self.target, self.path, self.monitor = model, Path(path), monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -math.inf if best is None else self.sign * best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self.sign * value > self.best:
            return
        value = self.sign * value
        self.best = float(value)
        tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.target.save(tmp)
        tmp.replace(self.path)


class _DeviceAugmentTrainer(keras.Model):
    """Wraps a model so that augmentation runs in its train step (on the training device).

    The augmenter works on images in [0, 1]; inputs normalized per the model's contract are
    mapped back and forth around it.
    """

    def __init__(self, inner, augmenter, contract=None):
        super().__init__(name=f"{inner.name}_device_augment")
        self.inner, self.augmenter = inner, augmenter
        scale = 255.0 * contract.scale if contract is not None else 1.0
        self._scale, self._offset = scale, contract.offset if contract is not None else 0.0

    def call(self, inputs, training=False):
        return self.inner(inputs, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        unit = (x - self._offset) / self._scale
        unit, y = self.augmenter(unit, y)
        x = unit * self._scale + self._offset
        return super().train_step((x, y, *data[2:]))


class _LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate at the end of each epoch to the logs (so CSV and curves show it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        logs["learning_rate"] = float(keras.backend.get_value(lr))


def _steps_per_epoch(ds, requested: int | None, expected: int | None = None) -> int:
    if requested:
        if requested < 1:
            raise InputValueError(
                f"`steps_per_epoch` (train.steps_per_epoch) should be >= 1. Received: {requested}"
            )
        return int(requested)
    n = int(ds.cardinality())
    if n < 0 and expected:
        return max(1, int(expected))
    if n < 0:
        raise InputValueError(
            "The training dataset has unknown length: pass `steps_per_epoch` "
            "(or set train.steps_per_epoch) or `expected_steps`."
        )
    if n == 0:
        raise InputValueError("The training dataset is empty.")
    return n


def _read_history(path: Path) -> dict:
    """Per-epoch history from the CSV log; a repeated epoch (crash mid-write) keeps the last."""
    if not path.is_file():
        return {}
    rows: dict[int, dict] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                rows[int(row["epoch"])] = row
            except (KeyError, ValueError):
                continue
    history: dict[str, list] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            try:
                history.setdefault(key, []).append(float(value) if key != "epoch" else int(value))
            except (TypeError, ValueError):
                history.setdefault(key, []).append(math.nan)
    return history
