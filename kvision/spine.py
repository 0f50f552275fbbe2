"""The task pipeline: train -> evaluate -> export -> compress -> benchmark -> report for a
registered :class:`~kvision.tasks.Task`, asking the task for everything that differs.

Nothing here branches on a task's name. The task gives the splits, the model (with its contract),
the training pipelines, evaluation batches, the streamed metric, the parity check between Keras
and an artifact (on decoded outputs, with its per-variant tolerance table), the gallery and its
report section; this module owns the run directory, ``fit``, export, PTQ/QAT, verification,
the metric floor, latency and the report frame. Artifacts run through :mod:`kvision.runtime`
(one LiteRT / SavedModel path, outputs by name)::

    from kvision.config import load_config
    from kvision.spine import run_task_pipeline
    report = run_task_pipeline(load_config(overrides=["task=detection", "data.path=data/det"]))

``kvision pipeline task=detection ...`` calls it. Classification still runs through
:mod:`kvision.workflow`'s own stages (its measured main job), which ask the same task object.
Compression here is post-training quantization (``ptq``) and quantization-aware training
(``qat``); other configured techniques are listed in the report as not run, with the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvision.compress.artifacts import EXPORTED_BUT_FAILED
from kvision.config import PipelineConfig
from kvision.errors import InputValueError, ModelFileError
from kvision.io import atomic_write_json

#: compression techniques the task pipeline runs
SPINE_TECHNIQUES = ("ptq", "qat")
_NOT_RUN = (
    "not run by the task pipeline yet: pruning, clustering and distillation fine-tune with "
    "kvision.compress's classification losses"
)


@dataclass
class TaskRun:
    """What training leaves behind: the best model, its contract, the splits and the pipelines.

    ``keras_run`` (the model's one compiled runner) and :meth:`samples` are shared by every
    stage, so the Keras reference outputs are computed once.
    """

    task: object
    model: object
    contract: object
    splits: object
    fit: object
    augment: dict
    train_ds: object
    val_ds: object
    wall_s: float
    epochs: int
    epochs_reason: str | None = None
    _samples: dict = dataclasses.field(default_factory=dict, repr=False)

    @functools.cached_property
    def keras_run(self):
        return keras_runner(self.model)

    def samples(self, n: int):
        """``(inputs, Keras outputs)`` of the first ``n`` validation images (the test split's
        when there is no validation split): what every artifact is compared with."""
        if n not in self._samples:
            split = self.splits.val if self.splits.val is not None else self.splits.test
            x = self.task.sample_inputs(split, self.contract, n)
            self._samples[n] = (x, self.keras_run(x))
        return self._samples[n]


def _runtime(fmt: str) -> str:
    """The kvision.runtime name that runs an artifact of format ``fmt``."""
    return "litert" if fmt == "tflite" else "tf_cpu"


def named(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` with the classification defaults of a task's names replaced: the model by the
    task's ``default_backbone`` (segmentation: ``unet``), the run name by
    ``<task>_<model.name>`` and the artifacts' file prefix by the task's (``detector``)."""
    from kvision.tasks import get_task

    if cfg.task == "classification":
        return cfg
    task = get_task(cfg.task)
    default, prefix = PipelineConfig(), task.artifact_name
    backbone = getattr(task, "default_backbone", None)
    if backbone and cfg.model.name == default.model.name:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=backbone))
    if cfg.name == default.name:
        cfg = dataclasses.replace(cfg, name=f"{cfg.task}_{cfg.model.name}")
    if cfg.export.model_name == default.export.model_name:
        cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, model_name=prefix))
    if cfg.compress.model_name == default.compress.model_name:
        compress = dataclasses.replace(cfg.compress, model_name=prefix)
        cfg = dataclasses.replace(cfg, compress=compress)
    return cfg


def keras_runner(model):
    """``x -> {output name: float32 array}`` of a tf_keras model (compiled once)."""
    import tensorflow as tf

    from kvision.export.saved_model import output_names

    names = output_names(model)

    @tf.function(reduce_retracing=True)
    def fn(x):
        return model(x, training=False)

    def run(x):
        y = fn(tf.convert_to_tensor(x, tf.float32))
        if isinstance(y, dict):
            return {str(k): v.numpy() for k, v in y.items()}
        ys = y if isinstance(y, list | tuple) else [y]
        return {n: v.numpy() for n, v in zip(names, ys, strict=True)}

    return run


def score(task, contract, batches, run) -> dict:
    """Stream ``task.metric`` over ``(inputs, targets)`` batches through ``run``."""
    metric = task.metric(contract)
    for x, targets in batches:
        metric.update(run(x), targets)
    return metric.result()


# -- stages -------------------------------------------------------------------------------------
def train(task, cfg: PipelineConfig, fresh: bool = False, verbose="auto") -> TaskRun:
    """Prepare the run directory, read the splits, build and fit the model (resumable; a
    finished training of this config is reused) and load its best checkpoint."""
    from kvision._keras import keras
    from kvision.auto import AUTO, choose_epochs
    from kvision.train import fit, training_done
    from kvision.workflow import prepare_run_dir

    t0 = time.perf_counter()
    run_dir = prepare_run_dir(cfg, fresh=fresh)
    keras.utils.set_random_seed(cfg.train.seed)
    splits = task.load_splits(cfg.data, cfg.train.seed)
    if splits.problems:
        splits.write_problems(run_dir / "bad_files.csv")
    model = task.build_model(cfg.model, splits)
    contract = model.kvision_contract
    contract.save(run_dir / "checkpoints")
    train_ds, val_ds, augment = task.datasets(cfg, splits, contract, run_dir)
    train_cfg, reason = cfg.train, None
    if cfg.train.epochs == AUTO:
        n = len(getattr(splits.train, "examples", splits.train))
        choice = choose_epochs(n, cfg.data.batch_size)
        train_cfg, reason = dataclasses.replace(cfg.train, epochs=choice.value), choice.reason
    result = training_done(run_dir)
    reused = result is not None
    if not reused:
        result = fit(model, train_ds, val_ds, train_cfg, run_dir, verbose=verbose, task=task)
    else:
        print(f"Training in {run_dir} already finished; reusing its checkpoint (--fresh: again).")
    checkpoint = Path(result.checkpoint)
    if not checkpoint.is_file():  # never evaluate or export untrained weights as if trained
        why = (
            "the finished training's checkpoint is missing (moved or deleted)"
            if reused
            else f"no epoch improved {result.monitor} (a NaN loss?)"
        )
        raise ModelFileError(
            f"No best checkpoint {checkpoint}: {why}. Rerun with --fresh to train again."
        )
    model.load_weights(str(checkpoint))
    wall = time.perf_counter() - t0
    return TaskRun(task, model, contract, splits, result, augment, train_ds, val_ds, wall,
                   train_cfg.epochs, reason)  # fmt: skip


def evaluate(run: TaskRun, cfg: PipelineConfig) -> dict:
    """The task's metric on the test split (streamed), ``metrics.json``, the prediction gallery
    and the training curves; returns the report's ``task`` section."""
    from kvision.evaluate import plot_training_curves

    task, run_dir = run.task, cfg.run_dir
    split = run.splits.test
    metrics = score(task, run.contract, task.eval_batches(split, run.contract), run.keras_run)
    if metrics.get(task.primary_metric) is None:
        raise InputValueError(
            f"The {run.splits.test_name} split gives no {task.primary_metric} (no ground truth "
            "to score, e.g. no annotated object): compressed artifacts could not be checked "
            "against the float model. Give a split with annotations (data.test_path=...)."
        )
    metrics.update(task.side_metrics(run.keras_run, run.splits, run.contract))
    atomic_write_json(run_dir / "metrics.json", metrics)
    task.write_gallery(run.keras_run, split, run.contract, run_dir / "predictions.png")
    if run.fit.history_csv and Path(run.fit.history_csv).is_file():
        plot_training_curves(run.fit.history_csv, run_dir / "training_curves.png")
    return {
        "name": task.name,
        "primary_metric": task.primary_metric,
        "higher_is_better": task.higher_is_better,
        "split": run.splits.test_name,
        "n": int(metrics.get("n") or 0),
        "metrics": metrics,
        "gallery_png": "predictions.png",
        "metrics_json": "metrics.json",
        "notes": list(run.splits.notes),
    }


def verify(run: TaskRun, path, fmt: str, name: str, variant: str, samples, reference):
    """An :class:`~kvision.export.Artifact` for the file at ``path``: ops (no Flex / custom),
    named I/O and the task's parity with the Keras outputs ``reference`` on ``samples``."""
    from kvision.export.artifact import Artifact, gzip_size, path_size, short_reason
    from kvision.runtime import open_runtime, split_ops, tflite_op_names

    checks = {"variant": variant, "n_samples": int(len(samples))}
    status, reason = "ok", ""
    try:
        if fmt == "tflite":
            ops = tflite_op_names(path)
            flex, custom = split_ops(ops)
            checks.update(ops=ops, flex_ops=flex, custom_ops=custom)
            if flex or custom:
                raise ValueError(f"needs non-builtin ops: {flex + custom}")
        rt = open_runtime(path, _runtime(fmt))
        rt.load()
        checks["inputs"] = [[t.name, str(t.dtype)] for t in rt.inputs]
        checks["outputs"] = [[t.name, str(t.dtype)] for t in rt.outputs]
        checks["input_dtype"] = str(rt.inputs[0].dtype)  # the report's I/O column
        checks["output_dtype"] = str(rt.outputs[0].dtype)
        outputs = rt.run(samples)
        rt.close()
        parity = run.task.parity(reference, outputs, variant, contract=run.contract)
        checks.update(parity.checks)
        if not parity.ok:
            status, reason = "failed", parity.reason
    except Exception as exc:  # an artifact that cannot be checked is a failed row, not a crash
        status, reason = "failed", short_reason(exc)
    checks["exported"] = Path(path).exists()
    return Artifact(name, fmt, str(path), path_size(path), gzip_size(path), status, reason, checks)


def export(run: TaskRun, cfg: PipelineConfig) -> list:
    """SavedModel (TF Serving layout) and float32 ``.tflite`` in ``<run>/export``, each checked
    with the task's parity on validation images."""
    from kvision.export.artifact import Artifact, short_reason
    from kvision.export.converter import convert_tflite
    from kvision.export.saved_model import export_saved_model

    out = cfg.run_dir / "export"
    samples, reference = run.samples(cfg.export.verify_samples)
    artifacts = []
    name = cfg.export.model_name
    if "saved_model" in cfg.export.formats:
        try:
            path = export_saved_model(run.model, out / "saved_model", name, cfg.export.version,
                                      run.contract, overwrite=True)  # fmt: skip
            artifacts.append(
                verify(run, path, "saved_model", "saved_model", "saved_model", samples, reference)
            )
        except Exception as exc:
            artifacts.append(Artifact.failed("saved_model", "saved_model", out, short_reason(exc)))
    if "tflite" in cfg.export.formats:
        path = out / "tflite" / f"{name}_float32.tflite"
        try:
            convert_tflite(run.model, path, "float32", contract=run.contract, overwrite=True)
            artifacts.append(verify(run, path, "tflite", "float32", "float32", samples, reference))
        except Exception as exc:
            artifacts.append(Artifact.failed("float32", "tflite", path, short_reason(exc)))
    return artifacts


def compress(
    run: TaskRun, cfg: PipelineConfig, keras_value: float, verbose="auto", float32_gzip=None
):
    """PTQ variants and QAT of the trained model into ``<run>/compress``, each verified with the
    task's parity against the Keras model it was converted from (the float model for PTQ, the
    fine-tuned QAT model for QAT), scored with its metric on the test split and gated by the
    metric floor
    (``compress.accuracy_floor`` points of the primary metric); a miss names the remedy.

    ``float32_gzip`` (bytes of the exported float32 ``.tflite`` after gzip) gives each row its
    ``gzip_ratio``.

    Returns:
        ``(artifacts, section)``: the compressed artifacts and the report's ``compression``
        section (per-layer QAT report, times, techniques not run and why).
    """
    from kvision._keras import fit_verbosity
    from kvision.export.artifact import Artifact, short_reason
    from kvision.export.converter import VARIANTS, convert_tflite

    c, task = cfg.compress, run.task
    out = cfg.run_dir / "compress" / "tflite"
    samples, reference = run.samples(c.verify_samples)
    n_calib = max(c.ptq.calibration_samples, c.qat.calibration_samples)
    calibration = task.sample_inputs(run.splits.train, run.contract, n_calib)
    section = {"primary_metric": task.primary_metric, "float_metric": keras_value,
               "accuracy_floor": c.accuracy_floor, "layer_reports": [], "wall_time_s": {},
               "errors": {}}  # fmt: skip
    for technique in c.techniques:
        if technique not in SPINE_TECHNIQUES:
            section["errors"][technique] = _NOT_RUN
    artifacts = []

    def convert(model, name, variant, technique, n_samples, deny=()):
        path = out / f"{c.model_name}_{name}.tflite"
        calib = calibration[:n_samples] if VARIANTS[variant].needs_representative_data else None
        deny = list(deny) if variant in ("int8", "int8_float_io") else []
        try:
            convert_tflite(model, path, variant, representative_data=calib, contract=run.contract,
                           overwrite=True, max_calibration_samples=n_samples,
                           deny_layers=deny)  # fmt: skip
            # checked against its own source: the float model, or the fine-tuned QAT model
            source = reference if model is run.model else keras_runner(model)(samples)
            art = verify(run, path, "tflite", name, variant, samples, source)
        except Exception as exc:
            art = Artifact.failed(name, "tflite", path, short_reason(exc), {"variant": variant})
        art.compression = {"technique": technique, "variant": variant}
        artifacts.append(art)

    if "ptq" in c.techniques:
        t = time.perf_counter()
        for variant in c.ptq.variants:
            if variant in task.unsupported_variants:
                section["errors"][f"ptq_{variant}"] = task.unsupported_variants[variant]
                continue
            convert(run.model, f"ptq_{variant}", variant, "ptq", c.ptq.calibration_samples,
                    c.ptq.deny_layers)  # fmt: skip
        section["wall_time_s"]["ptq"] = round(time.perf_counter() - t, 1)
    if "qat" in c.techniques:
        from kvision.compress.qat import quantize_model
        from kvision.models.contract import attach_contract
        from kvision.train.fit import compile_model

        t = time.perf_counter()
        try:
            qat, report = quantize_model(run.model, skip_layers=c.qat.skip_layers)
            attach_contract(qat, run.contract)
            section["layer_reports"].append(
                {"technique": report.technique, "message": report.message,
                 "summary": report.summary()}
            )  # fmt: skip
            # the training settings (class weights, label smoothing, optimizer), QAT's schedule
            qcfg = dataclasses.replace(
                cfg.train, epochs=c.qat.epochs, learning_rate=c.qat.learning_rate,
                warmup_epochs=0.0, seed=c.seed, loss=task.fine_tune_loss(cfg.train),
            )  # fmt: skip
            steps = c.steps_per_epoch or max(1, int(run.train_ds.cardinality()))
            compile_model(qat, qcfg, steps, task)
            train_ds = task.fine_tune_targets(run.train_ds, qcfg, qat, run.model)
            if c.steps_per_epoch:
                train_ds = train_ds.repeat()
            qat.fit(train_ds, epochs=c.qat.epochs, steps_per_epoch=c.steps_per_epoch,
                    verbose=fit_verbosity(verbose))  # fmt: skip
        except Exception as exc:  # a model tfmot cannot quantize: failed rows, the run goes on
            reason = f"QAT could not run: {short_reason(exc)}"
            for variant in c.qat.outputs:
                path = out / f"{c.model_name}_qat_{variant}.tflite"
                artifacts.append(Artifact.failed(f"qat_{variant}", "tflite", path, reason))
            section["errors"]["qat"] = reason
        else:
            for variant in c.qat.outputs:
                convert(qat, f"qat_{variant}", variant, "qat", c.qat.calibration_samples)
        section["wall_time_s"]["qat"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    for art in artifacts:
        if float32_gzip and art.gzip_bytes:
            art.compression["gzip_ratio"] = round(float32_gzip / art.gzip_bytes, 2)
        if Path(art.path).is_file():
            _score_artifact(run, art, keras_value, c.accuracy_floor)
    section["wall_time_s"]["evaluate"] = round(time.perf_counter() - t, 1)
    atomic_write_json(cfg.run_dir / "compress" / "compress_report.json",
                      {**section, "artifacts": [a.to_dict() for a in artifacts]})  # fmt: skip
    return artifacts, section


def _score_artifact(run: TaskRun, art, keras_value: float, floor_points: float) -> None:
    """The primary metric of an artifact on the test split, and the floor: more than
    ``floor_points`` points (x100) worse than the float model fails the row and names a remedy.
    """
    from kvision.export.artifact import short_reason
    from kvision.runtime import open_runtime

    task, key = run.task, run.task.primary_metric
    try:
        rt = open_runtime(art.path, _runtime(art.format))
        rt.load()
        batches = task.eval_batches(run.splits.test, run.contract)
        metrics = score(task, run.contract, batches, rt.run)
        rt.close()
    except Exception as exc:
        if art.ok:
            art.status, art.reason = "failed", f"scoring failed: {short_reason(exc)}"
        return
    value = metrics.get(key)
    art.metrics.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    if value is None:  # the float model had one on the same split: this artifact broke it
        if art.ok:
            art.status, art.reason = "failed", f"{key} could not be computed from its outputs"
        return
    art.metrics["delta_vs_keras"] = value - keras_value
    drop = 100.0 * task.drop(keras_value, value)
    art.checks["metric_drop_points"] = round(drop, 3)
    art.metrics["accuracy_drop_points"] = round(drop, 4)  # the CLI lists floor misses by it
    if drop > floor_points and art.ok:
        art.status = "failed"
        art.reason = (
            f"{EXPORTED_BUT_FAILED}: {key} {value:.4f} is {drop:.2f} points below the float "
            f"model's {keras_value:.4f} (floor {floor_points:g}); remedy: {task.remedy(art.name)}"
        )


def benchmark(run: TaskRun, artifacts, cfg: PipelineConfig, keras_value: float) -> list[dict]:
    """Batch-1 latency of the Keras model and of every artifact that exported; the float
    exports are scored here (compressed ones were scored by :func:`compress`). Returns rows."""
    from kvision.evaluate import measure_latency
    from kvision.export.artifact import gzip_size, short_reason
    from kvision.runtime import open_runtime

    b, key = cfg.benchmark, run.task.primary_metric
    one = np.zeros((1, *run.contract.shape), np.float32)
    for art in artifacts:
        if not Path(art.path).exists():
            continue
        if key not in art.metrics:
            _score_artifact(run, art, keras_value, float("inf"))
        try:
            runtime = _runtime(art.format)
            rt = open_runtime(art.path, runtime, threads=b.threads if runtime == "litert" else None)
            rt.load()
            art.latency = measure_latency(lambda v, r=rt: r.run(v), one, warmup=b.warmup,
                                          runs=b.runs)  # fmt: skip
            art.latency.update(runtime=runtime)
            if runtime == "litert":
                art.latency["threads"] = b.threads
            rt.close()
        except Exception as exc:
            art.status, art.reason = "failed", f"benchmark failed: {short_reason(exc)}"
    checkpoint = Path(run.fit.checkpoint)
    size = checkpoint.stat().st_size if checkpoint.is_file() else 0
    keras_row = {
        "name": "keras", "format": "keras", "path": str(checkpoint), "size_bytes": size,
        "gzip_bytes": gzip_size(checkpoint) if size else 0, "status": "ok", "reason": "",
        "metrics": {key: keras_value, "delta_vs_keras": 0.0},
        "latency": measure_latency(run.keras_run, one, warmup=b.warmup, runs=b.runs),
        "checks": {},
    }  # fmt: skip
    return [keras_row, *(a.to_dict() for a in artifacts)]


def run_task_pipeline(cfg: PipelineConfig, fresh: bool = False, verbose="auto") -> dict:
    """train -> evaluate -> export -> compress -> benchmark -> report for ``cfg.task``.

    The report (``report.json`` / ``.md`` / ``.html``) is written after export and after every
    later stage (``run.in_progress`` names the stage still running). Returns the report dict.
    """
    from kvision.report import write_report
    from kvision.tasks import get_task

    task = get_task(cfg.task)
    cfg = named(cfg)
    t_start = time.perf_counter()
    walls = {}
    run = train(task, cfg, fresh=fresh, verbose=verbose)
    walls["train"] = run.wall_s
    t = time.perf_counter()
    evaluation = evaluate(run, cfg)
    walls["evaluate"] = time.perf_counter() - t
    keras_value = evaluation["metrics"][task.primary_metric]
    t = time.perf_counter()
    artifacts = export(run, cfg)
    walls["export"] = time.perf_counter() - t

    def write(stage, rows, compression=None):
        walls["total"] = time.perf_counter() - t_start
        report = _report(cfg, run, evaluation, walls, rows, compression, stage)
        write_report(report, cfg.run_dir)
        return report

    compression = None
    if cfg.compress.enabled and cfg.compress.techniques:
        write("compress", [a.to_dict() for a in artifacts])
        t = time.perf_counter()
        float32 = next((a for a in artifacts if a.name == "float32" and a.ok), None)
        compressed, compression = compress(
            run, cfg, keras_value, verbose=verbose,
            float32_gzip=float32.gzip_bytes if float32 else None,
        )  # fmt: skip
        artifacts = [*artifacts, *compressed]
        walls["compress"] = time.perf_counter() - t
    rows = [a.to_dict() for a in artifacts]
    if cfg.benchmark.enabled:
        write("benchmark", rows, compression)
        t = time.perf_counter()
        rows = benchmark(run, artifacts, cfg, keras_value)
        walls["benchmark"] = time.perf_counter() - t
    return write(None, rows, compression)


def _report(cfg, run: TaskRun, evaluation, walls, rows, compression, in_progress) -> dict:
    from kvision.workflow import report_frame

    bad_files = bool(run.splits.problems)
    return report_frame(cfg, run, run.epochs, bad_files, walls, rows, compression, in_progress,
                        {"task": evaluation})  # fmt: skip
