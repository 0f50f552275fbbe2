"""Config-driven stages behind the CLI: train, evaluate, export, compress, benchmark, predict,
pipeline.

Each function takes a :class:`~kvision.config.PipelineConfig` (plus paths) and returns plain
data; ``run_pipeline`` chains them and writes ``report.json`` / ``report.md`` / ``report.html``::

    from kvision.config import load_config
    from kvision.workflow import run_pipeline
    report = run_pipeline(load_config(overrides=["train.epochs=1", "data.limit=2000"]))
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from kvision.config import ConfigError, PipelineConfig, save_config, to_dict
from kvision.io import atomic_write_json
from kvision.predict import predict_files, saved_task  # noqa: F401  (re-exported: kvision predict)

CONFIG_FILE = "config.yaml"


@dataclass
class TrainedRun:
    """What ``train`` leaves behind: the best model, its contract, data and training facts."""

    model: object
    contract: object
    splits: object
    fit: object
    augment: dict
    wall_s: float
    epochs: int | None = None
    epochs_reason: str | None = None


def prepare_run_dir(cfg: PipelineConfig, fresh: bool = False) -> Path:
    """Create the run directory and save the resolved config.

    A run directory holding a different config is never silently reused: it raises a
    ``ConfigError`` telling to pick another ``name`` or pass ``fresh``. With ``fresh`` the old
    training state (backup, checkpoints, logs) and compression results are removed first.
    """
    import shutil

    run_dir = cfg.run_dir
    saved = run_dir / CONFIG_FILE
    if saved.is_file() and not fresh:
        from kvision.config import load_config

        try:
            previous = load_config(saved)
        except ConfigError:
            previous = None
        if previous is None or _training_part(previous) != _training_part(cfg):
            raise ConfigError(
                f"Run directory {run_dir} holds a run with a different data/model/training config. "
                f"Choose another run name (name=...) or pass --fresh to start it again."
            )
    if fresh and run_dir.exists():
        for sub in ("backup", "checkpoints", "logs", "history.csv", "training.json", "compress"):
            p = run_dir / sub
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, saved)
    return run_dir


def _training_part(cfg: PipelineConfig) -> dict:
    d = to_dict(cfg)
    return {k: d.get(k) for k in ("task", "data", "augment", "model", "train")}


def load_data(cfg: PipelineConfig):
    """Load and split the dataset; write the list of bad files into the run directory."""
    from kvision.data import load_dataset

    splits = load_dataset(cfg.data, seed=cfg.train.seed)
    if splits.bad_files:
        from kvision.data.folders import write_bad_files

        write_bad_files(splits.bad_files, cfg.run_dir / "bad_files.csv")
    return splits


def make_model(cfg: PipelineConfig, splits):
    """Build the configured model for the dataset (input size/channels from config or data).

    With ``model.transfer_from`` the named classifier file's head is replaced by a new one for
    this dataset's classes (transfer learning); otherwise ``model.name`` is built from scratch.
    """
    from kvision.models import build_model
    from kvision.models.contract import with_resize

    h, w = cfg.model.input_size or splits.image_size
    c = cfg.model.channels or splits.channels
    shape = (int(h), int(w), int(c))
    if cfg.model.transfer_from:
        from kvision.models.transfer import build_transfer_model

        source = Path(cfg.model.transfer_from)
        if not source.exists():
            raise FileNotFoundError(f"`model.transfer_from` file not found: {source}")
        model = build_transfer_model(
            str(source), splits.num_classes, input_shape=shape, labels=splits.class_names
        )
        return with_resize(model, cfg.model.resize)
    model = build_model(
        cfg.model.name, shape, splits.num_classes, labels=splits.class_names, **cfg.model.options
    )
    if cfg.model.weights:
        path = Path(cfg.model.weights)
        if not path.is_file():
            raise FileNotFoundError(f"`model.weights` file not found: {path}")
        model.load_weights(str(path))
    return with_resize(model, cfg.model.resize)


def _set_precision(cfg: PipelineConfig) -> str:
    """``mixed_float16`` when asked for and a GPU is present; float32 otherwise (said aloud)."""
    import tensorflow as tf

    from kvision._keras import keras

    policy = "float32"
    if cfg.train.mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            policy = "mixed_float16"
        else:
            print("train.mixed_precision ignored: no GPU visible, training in float32.")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _float32_model(model):
    """A float32 copy of a mixed-precision model (what gets evaluated and exported)."""
    from kvision._keras import keras
    from kvision.models import attach_contract

    if model.dtype_policy.name == "float32" and model.layers[-1].dtype_policy.name == "float32":
        return model
    keras.mixed_precision.set_global_policy("float32")

    def as_float32(layer):  # layer configs carry their dtype policy: replace it
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=as_float32)
    clone.set_weights(model.get_weights())
    contract = getattr(model, "kvision_contract", None)
    return attach_contract(clone, contract) if contract is not None else clone


def train(cfg: PipelineConfig, fresh: bool = False, verbose="auto") -> TrainedRun:
    """Train (or resume, or reuse a finished training of this config); load the best model."""
    from kvision._keras import keras, load_model
    from kvision.data import build_dataset
    from kvision.models import InputContract, attach_contract
    from kvision.train import BEST_CHECKPOINT, class_weights_for, fit, training_done

    t0 = time.perf_counter()
    run_dir = prepare_run_dir(cfg, fresh=fresh)
    keras.utils.set_random_seed(cfg.train.seed)
    splits = load_data(cfg)
    _set_precision(cfg)
    model = make_model(cfg, splits)
    contract = InputContract.from_model(model)
    contract.save(run_dir / "checkpoints")
    augmenter, augment_info = augmentation(cfg, splits, contract, run_dir)
    train_cfg, epochs_reason = training_config(cfg, splits)

    transfer = bool(cfg.model.transfer_from)
    train_dir = run_dir / "phase2" if transfer else run_dir
    result = training_done(train_dir)
    if result is None:
        bs, seed = cfg.data.batch_size, cfg.train.seed
        on_device = augmenter is not None and cfg.augment.on == "device"
        train_ds = build_dataset(
            splits.train, contract, bs, training=True, augmenter=None if on_device else augmenter,
            seed=seed, cache=cfg.data.cache, on_error=cfg.data.on_error,
        )  # fmt: skip
        val_ds = None
        if splits.val is not None:
            val_ds = build_dataset(
                splits.val, contract, bs, cache=cfg.data.cache, on_error=cfg.data.on_error
            )
        weights = class_weights_for(
            splits.train.labels, cfg.train.class_weights, splits.num_classes
        )
        expected = max(1, len(splits.train) // bs)  # image folders: unknown dataset length
        if transfer:
            from kvision.train.transfer import fit_transfer

            _, result = fit_transfer(
                model, train_ds, val_ds, train_cfg, run_dir, head_epochs=cfg.train.head_epochs,
                finetune_epochs=train_cfg.epochs, unfreeze_blocks=cfg.train.unfreeze_blocks,
                finetune_lr_factor=cfg.train.finetune_lr_factor, class_weight=weights,
                verbose=verbose, device_augmenter=augmenter if on_device else None,
                expected_steps=expected,
            )  # fmt: skip
        else:
            result = fit(
                model, train_ds, val_ds, train_cfg, run_dir, class_weight=weights,
                verbose=verbose, device_augmenter=augmenter if on_device else None,
                expected_steps=expected,
            )  # fmt: skip
    else:
        print(
            f"Training in {run_dir} already finished (epoch {result.best_epoch} best); "
            "reusing its checkpoint. Pass --fresh to train again."
        )
    best = train_dir / BEST_CHECKPOINT
    if best.is_file():
        model = load_model(best)
    model = _float32_model(attach_contract(model, contract))
    wall = time.perf_counter() - t0
    return TrainedRun(model, contract, splits, result, augment_info, wall, train_cfg.epochs,
                      epochs_reason)  # fmt: skip


def training_config(cfg: PipelineConfig, splits):
    """``cfg.train`` with ``epochs: auto`` resolved from the training split's size
    (:func:`kvision.auto.choose_epochs`). Returns ``(TrainConfig, reason or None)``."""
    import dataclasses

    from kvision.auto import AUTO, choose_epochs

    if cfg.train.epochs != AUTO:
        return cfg.train, None
    choice = choose_epochs(len(splits.train), cfg.data.batch_size)
    return dataclasses.replace(cfg.train, epochs=choice.value), choice.reason


def augmentation(cfg: PipelineConfig, splits, contract, run_dir: Path | None):
    """The configured augmenter (or None) and its report entry; writes the preview grid into
    ``run_dir`` (skipped when ``run_dir`` is None). ``augment.transforms: auto`` is resolved
    from the dataset (:func:`kvision.auto.choose_transforms`); the report says what and why."""
    from kvision.auto import AUTO, choose_transforms, resolve_transforms

    info = {"enabled": cfg.augment.enabled, "transforms": [], "preview_png": None}
    specs = resolve_transforms(cfg.augment.transforms, cfg.data.dataset)
    if cfg.augment.transforms == AUTO:
        info["reason"] = choose_transforms(cfg.data.dataset).reason
    if not (cfg.augment.enabled and specs):
        return None, info
    from kvision.augment import build_augmenter, write_preview

    augmenter = build_augmenter(specs, seed=cfg.train.seed)
    info["transforms"] = augmenter.to_config()
    if cfg.augment.preview and run_dir is not None:
        if splits.train.images is not None:
            sample = splits.train.images[:16]
        else:
            from kvision.data.folders import load_image

            files = splits.train.files[:16]
            size = contract.shape[:2]
            sample = np.stack(
                [load_image(f, contract.channels, size, contract.resize) for f in files]
            )
        write_preview(sample, augmenter, run_dir / "augment_preview.png", seed=cfg.train.seed)
        info["preview_png"] = "augment_preview.png"
    return augmenter, info


def predict_probabilities(model, split, contract, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of a Keras model over a split."""
    from kvision.data import build_dataset

    ds = build_dataset(split, contract, batch_size, training=False, cache=False)
    return model.predict(ds.map(lambda x, y: x), verbose=0)


def evaluate(model, splits, contract, run_dir: Path, history_csv: str | None = None) -> dict:
    """Test-set metrics, confusion matrix (PNG + JSON) and training curves (PNG)."""
    from kvision.evaluate import (
        classification_metrics,
        plot_confusion_matrix,
        plot_training_curves,
    )

    split = splits.test if splits.test is not None else splits.val
    name = "test" if splits.test is not None else "val"
    probs = predict_probabilities(model, split, contract)
    metrics = classification_metrics(split.labels, probs, contract.labels)
    atomic_write_json(run_dir / "metrics.json", metrics)
    plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]), contract.labels, run_dir / "confusion_matrix.png"
    )
    out = {
        "split": name,
        **metrics,
        "confusion_matrix_png": "confusion_matrix.png",
        "metrics_json": "metrics.json",
    }
    if history_csv and Path(history_csv).is_file():
        plot_training_curves(history_csv, run_dir / "training_curves.png")
    return out


def export(model, splits, contract, cfg: PipelineConfig):
    """Export SavedModel + float32 TFLite into ``<run>/export`` and verify each artifact."""
    from kvision.data import build_dataset
    from kvision.export import export as export_artifacts

    split = splits.val if splits.val is not None else splits.train
    n = min(cfg.export.verify_samples, len(split))
    ds = build_dataset(split.subset(np.arange(n)), contract, n, training=False, cache=False)
    samples = next(iter(ds))[0].numpy()
    return export_artifacts(
        model,
        cfg.run_dir / "export",
        samples,
        formats=cfg.export.formats,
        model_name=cfg.export.model_name,
        version=cfg.export.version,
        atol=cfg.export.atol,
        contract=contract,
        overwrite=True,
    )


def compression_data(cfg: PipelineConfig, splits, contract):
    """What compression fine-tunes, verifies and evaluates on.

    Image folders: the file pipeline may drop a file that fails to decode, so ``tf.data`` cannot
    know its length; the scan already decoded every listed file, so the number of batches is
    derived from the file list and asserted (``tf.data.experimental.assert_cardinality``). The
    fine-tuning schedules (pruning steps, learning-rate decay) need it.

    Returns:
        ``(train_ds, val_ds, test)``: the training pipeline with the run's augmentation, validation
        batches (the training split when there is none), and the test split as ``(x, y)`` arrays
        (a batched dataset for image folders).
    """
    import tensorflow as tf

    from kvision.data import build_dataset, model_inputs

    def known_length(ds, split, drop_remainder: bool):
        if split.files is None:
            return ds  # in-memory arrays: tf.data knows the length
        n = len(split) // bs if drop_remainder else -(-len(split) // bs)
        return ds.apply(tf.data.experimental.assert_cardinality(n))

    augmenter, _ = augmentation(cfg, splits, contract, None)
    bs, on_error = cfg.data.batch_size, cfg.data.on_error
    drop = len(splits.train) >= bs  # build_dataset's default, explicit so the count above holds
    train_ds = build_dataset(
        splits.train, contract, bs, training=True, augmenter=augmenter, seed=cfg.train.seed,
        on_error=on_error, drop_remainder=drop,
    )  # fmt: skip
    train_ds = known_length(train_ds, splits.train, drop)
    val_split = splits.val if splits.val is not None else splits.train
    val_ds = build_dataset(val_split, contract, bs, on_error=on_error, drop_remainder=False)
    val_ds = known_length(val_ds, val_split, False)
    test_split = splits.test if splits.test is not None else val_split
    if test_split.images is not None:
        test = (model_inputs(test_split.images, contract), test_split.labels)
    else:
        test = build_dataset(test_split, contract, bs, on_error=on_error)
    return train_ds, val_ds, test


def compress(run: TrainedRun, cfg: PipelineConfig, verbose="auto"):
    """Run ``cfg.compress`` on the trained model into ``<run>/compress``.

    A finished compression of the same checkpoint with the same settings is reused (its report and
    files are read back), so re-running a pipeline only redoes what changed.

    Returns:
        ``(artifacts, section)``: the compressed artifacts (the float32 baseline is left out: the
        export stage has it) and the report's ``compression`` section.
    """
    from kvision.compress import compress as compress_model
    from kvision.compress.result import CompressionResult

    out = cfg.run_dir / "compress"
    result = CompressionResult.load_finished(out, cfg.compress, run.fit.checkpoint)
    if result is None:
        train_ds, val_ds, test = compression_data(cfg, run.splits, run.contract)
        result = compress_model(
            run.model, train_ds, val_ds, cfg.compress, out, test=test, verbose=verbose
        )
    else:
        print(f"Compression in {out} already finished for this checkpoint; reusing it.")
    artifacts = [a for a in result.artifacts if a.name != "float32"]
    return artifacts, result.report_section(Path(out.name) / "compress_report.md")


def benchmark(artifacts, model, splits, contract, cfg: PipelineConfig, keras_accuracy: float):
    """Accuracy on the test set and batch-1 latency of every artifact (and the Keras model).

    ``keras_accuracy`` is the Keras model's accuracy on the whole test split. With
    ``benchmark.eval_limit`` the artifacts are scored on the first N test images only, and so is
    the Keras model, so that ``delta_vs_keras`` compares the same images.

    Returns:
        ``(artifacts, keras_accuracy)``: the artifacts with ``metrics`` and ``latency`` filled in,
        and the Keras accuracy on the images they were scored on.
    """
    from kvision.data import build_dataset
    from kvision.evaluate import measure_latency

    split = splits.test if splits.test is not None else splits.val
    if cfg.benchmark.eval_limit and cfg.benchmark.eval_limit < len(split):
        split = split.subset(np.arange(cfg.benchmark.eval_limit))
        ds = build_dataset(split, contract, 256, training=False, cache=False)
        probs = model.predict(ds.map(lambda v, _: v), verbose=0)
        keras_accuracy = float(np.mean(np.argmax(probs, -1) == split.labels))
    ds = build_dataset(split, contract, 256, training=False, cache=False)
    x = np.concatenate([b.numpy() for b, _ in ds])
    one = x[:1]
    b = cfg.benchmark
    for art in artifacts:
        # an artifact that exported but missed its accuracy floor is still measured: its row
        # shows what the size saving costs
        if art.status != "ok" and not art.checks.get("exported"):
            continue
        try:
            fn = _runner(art, b.threads)
            acc = art.metrics.get("accuracy")
            if acc is None or art.metrics.get("n_test") != len(x):  # not measured on this split
                probs = fn(x)
                acc = float(np.mean(np.argmax(probs, -1) == split.labels))
            art.metrics.update(accuracy=acc, delta_vs_keras=acc - keras_accuracy, n=len(x))
            art.latency = measure_latency(lambda v, f=fn: f(v), one, warmup=b.warmup, runs=b.runs)
            art.latency["threads"] = b.threads
        except Exception as exc:  # a broken artifact is a row with a reason
            art.status, art.reason = "failed", f"benchmark failed: {exc}"
    return artifacts, keras_accuracy


def _runner(art, threads: int):
    """``x -> outputs`` of an artifact through kvision's one runtime layer (the classifier's
    single output; ``kvision.runtime`` quantizes inputs in the artifact's own domain)."""
    from kvision.runtime import open_runtime

    if art.format == "tflite":
        rt = open_runtime(art.path, "litert", threads=threads)
    else:
        rt = open_runtime(art.path, "tf_cpu")
    rt.load()
    return lambda x: rt.predict(x, batch_size=512)


def keras_row(model, accuracy: float, cfg: PipelineConfig, sample, checkpoint) -> dict:
    """The reference row for the Keras model itself (``checkpoint``: its best-model file)."""
    import tensorflow as tf

    from kvision.evaluate import measure_latency
    from kvision.export import gzip_size

    path = Path(checkpoint)
    size = path.stat().st_size if path.is_file() else 0
    fn = tf.function(lambda v: model(v, training=False))
    latency = measure_latency(
        lambda v: fn(v).numpy(), sample, warmup=cfg.benchmark.warmup, runs=cfg.benchmark.runs
    )
    return {
        "name": "keras",
        "format": "keras",
        "path": _relative(str(path), cfg.run_dir),
        "size_bytes": size,
        "gzip_bytes": gzip_size(path) if size else 0,
        "status": "ok",
        "reason": "",
        "metrics": {"accuracy": accuracy, "delta_vs_keras": 0.0, "n": None},
        "latency": latency,
        "checks": {},
    }


def run_pipeline(cfg: PipelineConfig, fresh: bool = False, verbose="auto") -> dict:
    """train -> evaluate -> export -> compress -> benchmark -> report. Returns the report dict.

    The compress stage runs when ``compress.enabled`` (the default) with ``compress.techniques``.
    The report (``report.json``/``.md``/``.html``) is written after every stage from export on,
    with ``run.in_progress`` naming the stage still running, so the float results can be read
    while compression runs; the last write is the finished report.
    """
    from kvision.report import write_report

    if cfg.task != "classification":  # the task pipeline asks the task for every stage
        from kvision.spine import run_task_pipeline

        return run_task_pipeline(cfg, fresh=fresh, verbose=verbose)
    t_start = time.perf_counter()
    walls = {}
    run = train(cfg, fresh=fresh, verbose=verbose)
    walls["train"] = run.wall_s
    run_dir = cfg.run_dir

    t = time.perf_counter()
    evaluation = evaluate(run.model, run.splits, run.contract, run_dir, run.fit.history_csv)
    walls["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    artifacts = export(run.model, run.splits, run.contract, cfg)
    walls["export"] = time.perf_counter() - t

    def write(stage_running, rows, compression=None):
        walls["total"] = time.perf_counter() - t_start
        report = _report(cfg, run, evaluation, walls, rows, compression, stage_running)
        write_report(report, run_dir)
        return report

    compression = None
    compressing = cfg.compress.enabled and cfg.compress.techniques
    if compressing:
        write("compress", [a.to_dict() for a in artifacts])
        t = time.perf_counter()
        compressed, compression = compress(run, cfg, verbose=verbose)
        artifacts = [*artifacts, *compressed]
        walls["compress"] = time.perf_counter() - t

    rows = []
    if cfg.benchmark.enabled:
        write("benchmark", [a.to_dict() for a in artifacts], compression)
        t = time.perf_counter()
        artifacts, keras_accuracy = benchmark(
            artifacts, run.model, run.splits, run.contract, cfg, evaluation["accuracy"]
        )
        sample = np.zeros((1, *run.contract.shape), np.float32)
        rows.append(keras_row(run.model, keras_accuracy, cfg, sample, run.fit.checkpoint))
        walls["benchmark"] = time.perf_counter() - t
    return write(None, [*rows, *(a.to_dict() for a in artifacts)], compression)


def _report(cfg, run, evaluation, walls, rows, compression, in_progress) -> dict:
    """The report dict of a pipeline run (``in_progress``: the stage still running, or None)."""
    epochs = run.epochs if run.epochs is not None else cfg.train.epochs
    bad_files = bool(run.splits.bad_files)
    return report_frame(cfg, run, epochs, bad_files, walls, rows, compression, in_progress,
                        {"evaluation": evaluation})  # fmt: skip


def report_frame(
    cfg, run, epochs, bad_files: bool, walls, rows, compression, in_progress, sections: dict
) -> dict:
    """The report dict every pipeline writes: run, config, data, augmentation, training,
    then ``sections`` (the task's evaluation), compression and the artifact rows (whose paths
    become relative to the run directory). ``run`` has ``splits``, ``augment``,
    ``epochs_reason`` and ``fit``."""
    run_dir = cfg.run_dir
    for row in rows:
        row["path"] = _relative(row["path"], run_dir)
    data = run.splits.summary()
    data["bad_files_path"] = "bad_files.csv" if bad_files else None
    return {
        "schema_version": 1,
        "run": run_info(cfg, walls, in_progress),
        "config": to_dict(cfg),
        "data": data,
        "augmentation": run.augment,
        "training": training_section(run.fit, epochs, run.epochs_reason, run_dir),
        **sections,
        "compression": compression,
        "artifacts": rows,
    }


def training_section(fit, epochs, epochs_reason, run_dir: Path) -> dict:
    """The report's ``training`` section from a :class:`~kvision.train.FitResult`."""
    return {
        "epochs": epochs,
        "epochs_reason": epochs_reason,
        "epochs_run": fit.epochs_run,
        "resumed_from_epoch": fit.resumed_from_epoch,
        "best_epoch": fit.best_epoch,
        "best_val_accuracy": fit.best_val_accuracy,
        "monitor": fit.monitor,
        "best_monitor_value": fit.best_value,
        "history_csv": _relative(fit.history_csv, run_dir),
        "curves_png": "training_curves.png",
        "checkpoint": _relative(fit.checkpoint, run_dir),
    }


def run_info(cfg: PipelineConfig, walls: dict, in_progress: str | None) -> dict:
    """The report's ``run`` section: name, time, versions, host and stage wall times."""
    import tensorflow as tf

    import kvision

    info = {
        "name": cfg.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "kvision_version": kvision.__version__,
        "tensorflow_version": tf.__version__,
        "host": {
            "cpu_count": _cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "wall_time_s": dict(walls),
    }
    if in_progress:
        info["in_progress"] = in_progress
    return info


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_report(run_dir) -> dict:
    p = Path(run_dir) / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"No report.json in {run_dir}")
    return json.loads(p.read_text())
