"""``compress``: trained float model -> compressed, verified TFLite artifacts and a report.

``compress(model, train_ds, val_ds, cfg, run_dir, test=(x, y))`` runs the techniques of
``cfg.techniques`` and writes, under ``run_dir``::

    tflite/<model_name>_<artifact>.tflite (+ .contract.json)   one per artifact
    compress_report.json                                       CompressionResult.to_dict()
    compress_report.md                                         the table + per-layer reports

Artifact names: ``float32`` (baseline), ``ptq_<variant>``, ``qat_int8``, ``qat_int8_float_io``,
``pruned_float32``, ``pqat_int8``, ``cluster_int8``, ``cqat_int8``, ``distill_int8``. A technique
that cannot run becomes a failed artifact row with the reason (and ``result.errors``), never a
crash of the whole run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kvision.compress.config import CompressConfig
from kvision.compress.result import REPORT_FILE, CompressionResult
from kvision.errors import InputTypeError, InputValueError, ModelFileError, UnsafeTrainingError

# techniques that fine-tune (train) the float model: oneDNN's unsafe layers must be refused first
FINE_TUNED = frozenset({"qat", "prune", "pqat", "cluster", "cqat"})


def compress(
    model,
    train_ds,
    val_ds,
    cfg: CompressConfig | None = None,
    run_dir="compress",
    test=None,
    verbose: int = 0,
    resume: bool = True,
):
    """Compress ``model`` with the techniques in ``cfg``; verify and gate every artifact.

    Each technique's outcome is recorded in ``run_dir/state`` when it finishes
    (:mod:`kvision.compress.resume`); a later call with the same model, data and settings reuses
    a finished technique after checking that its files still have the recorded bytes, so a
    killed run resumes at the technique it was in. A model holding nested models is flattened
    first (:func:`kvision.compress.flatten.flatten_model`).

    Args:
        model: trained tf_keras classifier without augmentation layers (augmentation stays in
            ``train_ds``). A Keras 3 model raises a ``TypeError`` explaining why tf_keras is needed.
        train_ds: the training ``tf.data`` pipeline (``(images, integer labels)`` batches) used to
            fine-tune and to draw calibration images.
        val_ds: validation batches (verification samples; fine-tuning validation). May be None.
        cfg: :class:`CompressConfig` (default: its defaults).
        run_dir: output folder.
        test: ``(x, y)`` float32 model inputs and integer labels, or a batched dataset; the
            accuracy of every artifact and of the float model is measured on it (default:
            ``val_ds``).
        verbose: Keras verbosity of the fine-tuning runs; ``"auto"`` is a progress bar on a
            terminal and one line per epoch in logs (default 0: quiet).
        resume: reuse the verified results of techniques finished by an earlier call in the
            same ``run_dir`` (default True; False redoes every technique, and still records
            each one for a later resume).

    Returns:
        A :class:`CompressionResult`.

    Example:
        >>> cfg = CompressConfig(techniques=["ptq", "pqat"], steps_per_epoch=50)
        >>> result = compress(model, train_ds, val_ds, cfg, "runs/x/compress", test=(x_te, y_te))
        >>> print(result.to_markdown())
    """
    from kvision._keras import fit_verbosity
    from kvision.compress import _tfmot
    from kvision.compress._models import contract_of
    from kvision.compress.artifacts import apply_accuracy_floor, build_artifact, evaluate_accuracy
    from kvision.compress.finetune import with_known_length
    from kvision.compress.flatten import flatten_model
    from kvision.compress.ptq import representative_images
    from kvision.compress.resume import data_key, technique_store
    from kvision.io import atomic_write_json, atomic_write_text

    verbose = fit_verbosity(verbose)
    cfg = cfg or CompressConfig()
    if not isinstance(cfg, CompressConfig):
        raise InputTypeError(
            f"`cfg` should be a CompressConfig. Received: cfg={type(cfg).__name__}"
        )
    _tfmot.check_model(model)
    if set(cfg.techniques) & FINE_TUNED:
        from kvision._env import check_trainable

        check_trainable(model, "fine-tuning for compression")
    run_dir = Path(run_dir)
    train_ds = with_known_length(train_ds, cfg.steps_per_epoch, verbose)
    x_test, y_test = _arrays(test if test is not None else val_ds, "test")
    samples = _arrays(val_ds if val_ds is not None else train_ds, "val_ds")[0][: cfg.verify_samples]
    calibration = representative_images(
        train_ds, max(cfg.ptq.calibration_samples, cfg.qat.calibration_samples), cfg.seed
    )
    # a resumed technique must come from the same model *and* the same data
    key = data_key(x_test, y_test, contract_of(model))
    store = technique_store(model, run_dir, train_ds, key)
    # nested models are inlined once: every technique (and the float32 baseline) sees the same
    # leaf layers, so pruning, QAT and clustering reach the layers of a nested backbone too
    origins: dict = {}
    model = flatten_model(model, origins=origins)
    result = CompressionResult()
    result.float_accuracy = _keras_accuracy(model, x_test, y_test)
    ctx = _Context(model, train_ds, val_ds, cfg, run_dir / "tflite", samples, calibration, verbose)
    ctx.contract = contract_of(model)
    ctx.test = (x_test, y_test)

    ctx.add(result, build_artifact(model, ctx.path("float32"), "float32", samples, name="float32"))
    done = set()
    for technique in cfg.techniques:
        runner = _RUNNERS[technique]
        if runner in done:
            continue  # prune+pqat and cluster+cqat share one fine-tuning run
        done.add(runner)
        _run_technique(ctx, result, technique, runner, store, origins, resume)

    started = time.perf_counter()
    head = model.layers[-1].name
    for artifact in result.artifacts:
        if Path(artifact.path).is_file():
            evaluate_accuracy(artifact, x_test, y_test)
            apply_accuracy_floor(artifact, result.float_accuracy, cfg.accuracy_floor, head)
    result.wall_time_s["evaluate"] = round(time.perf_counter() - started, 1)
    _describe(result)
    # the settings are saved with the result: a pipeline re-run reuses a finished compression
    atomic_write_json(run_dir / REPORT_FILE, {**result.to_dict(), "config": cfg.to_dict()})
    atomic_write_text(run_dir / "compress_report.md", result.to_markdown())
    return result


_RUNNERS = {  # technique -> the runner (state name) that produces it
    "ptq": "ptq",
    "qat": "qat",
    "prune": "prune",
    "pqat": "prune",
    "cluster": "cluster",
    "cqat": "cluster",
    "distill": "distill",
}


def _run_technique(ctx, result, technique, runner, store, origins, resume: bool) -> None:
    """Run one technique (or, with ``resume``, reuse its verified state from ``store``) and
    record what it added in ``store``."""
    from kvision.compress.resume import restore, technique_settings

    settings = technique_settings(ctx.cfg, runner)
    state = store.load(runner, settings) if resume else None
    if state is not None:
        restore(result, state["payload"])
        result.wall_time_s[technique] = state["payload"]["wall_time_s"]  # of the original run
        result.resumed.append(technique)
        if ctx.verbose:
            print(
                f"compress: {technique} resumed: its finished artifacts were verified "
                f"(same bytes as recorded in {store.path(runner)})",
                flush=True,
            )
        return
    if ctx.verbose:
        why = f" (state not reused: {store.last_reason})" if resume and store.last_reason else ""
        print(
            f"compress: {technique} ({len(result.artifacts)} artifact(s) so far){why}", flush=True
        )
    n_artifacts, n_reports = len(result.artifacts), len(result.reports)
    weights_before = set(result.weights)
    started = time.perf_counter()
    try:
        _STEPS[runner](ctx, result)
    except UnsafeTrainingError:
        raise  # not a row: the whole run must start again with oneDNN off (the CLI does that)
    except Exception as exc:  # a technique that cannot run is a row with a reason
        from kvision.export.artifact import Artifact, short_reason

        reason = short_reason(exc)
        result.errors[technique] = reason
        result.artifacts.append(Artifact.failed(technique, "tflite", ctx.path(technique), reason))
        result.wall_time_s[technique] = round(time.perf_counter() - started, 1)
        return  # not recorded: a failed technique runs again next time
    result.wall_time_s[technique] = round(time.perf_counter() - started, 1)
    for report in result.reports[n_reports:]:
        _mark_nested(report, origins)
    payload = {
        "technique": technique,
        "artifacts": [a.to_dict() for a in result.artifacts[n_artifacts:]],
        "reports": [r.to_dict() for r in result.reports[n_reports:]],
        "weights": {k: v for k, v in result.weights.items() if k not in weights_before},
        "schedule": result.schedule if runner == "prune" else None,
        "distill": result.distill if runner == "distill" else None,
        "wall_time_s": result.wall_time_s[technique],
    }
    store.save(runner, settings, payload)


def _mark_nested(report, origins: dict) -> None:
    """Say, per row, which nested model a layer came from (the model was flattened)."""
    for row in report.rows:
        if row.layer in origins:
            row.detail["nested_in"] = origins[row.layer]
            row.reason += f" [layer of nested model {origins[row.layer]}]"


def load_model_for_compression(path):
    """Load a user's tf_keras model file (``.keras``, ``.h5``, SavedModel) for :func:`compress`.

    The input contract saved beside the file (``contract.json``) is attached when present,
    otherwise derived from the model's input shape (scale 1/255).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a loadable tf_keras model; a Keras 3 file gets a message
            explaining that tfmot needs tf_keras and how to re-save it.

    Example:
        >>> model = load_model_for_compression("my_model.keras")
    """
    from kvision._keras import load_model
    from kvision.compress._tfmot import unsafe_clone_scope
    from kvision.models.contract import InputContract, attach_contract

    try:
        model = load_model(path)
    except ValueError as exc:
        text = str(exc)
        if "Keras 3" in text or "keras_version" in text or "keras.src" in text:
            raise ModelFileError(
                f"{text} kvision compress uses tensorflow-model-optimization, which only works "
                "with tf_keras (Keras 2) models: rebuild the model with `import tf_keras as "
                "keras`, load the weights and save it again."
            ) from exc
        if "Lambda" in text and "safe_mode" in text:
            with unsafe_clone_scope():
                model = load_model(path)
        else:
            raise
    return attach_contract(model, InputContract.for_model_file(path, model))


def compress_file(
    path,
    train_ds,
    val_ds,
    cfg: CompressConfig | None = None,
    run_dir="compress",
    test=None,
    verbose: int = 0,
    resume: bool = True,
):
    """:func:`compress` a model file (``kvision compress --model PATH``).

    Example:
        >>> result = compress_file("my_model.keras", train_ds, val_ds, cfg, "runs/c")
    """
    model = load_model_for_compression(path)
    return compress(
        model, train_ds, val_ds, cfg, run_dir, test=test, verbose=verbose, resume=resume
    )


# -- techniques --------------------------------------------------------------------------------
class _Context:
    def __init__(self, model, train_ds, val_ds, cfg, out_dir, samples, calibration, verbose):
        self.model, self.train_ds, self.val_ds, self.cfg = model, train_ds, val_ds, cfg
        self.out_dir, self.samples, self.calibration = Path(out_dir), samples, calibration
        self.verbose = verbose
        self.contract = None
        self.test = None

    def path(self, name: str) -> Path:
        return self.out_dir / f"{self.cfg.model_name}_{name}.tflite"

    def add(self, result, artifact):
        result.artifacts.append(artifact)
        return artifact

    def convert(self, result, keras_model, name, variant):
        from kvision.compress.artifacts import build_artifact

        calib = self.calibration if variant in ("int8", "int8_float_io", "int16x8") else None
        return self.add(
            result,
            build_artifact(
                keras_model,
                self.path(name),
                variant,
                self.samples,
                representative_data=calib,
                name=name,
                min_top1_agreement=self.cfg.min_top1_agreement,
            ),
        )

    def finetune(self, model, epochs, learning_rate, callbacks=(), from_teacher=True):
        """Fine-tune ``model``; with ``cfg.self_distill`` the float model is its teacher."""
        from kvision.compress.finetune import finetune

        distill = self.cfg.self_distill and from_teacher
        return finetune(
            model,
            self.train_ds,
            self.val_ds,
            epochs=epochs,
            learning_rate=learning_rate,
            steps_per_epoch=self.cfg.steps_per_epoch,
            callbacks=callbacks,
            verbose=self.verbose,
            teacher=self.model if distill else None,
            temperature=self.cfg.distill.temperature,
            alpha=self.cfg.distill.alpha,
        )

    def total_steps(self, epochs):
        from kvision.compress.finetune import count_steps

        return count_steps(self.train_ds, self.cfg.steps_per_epoch) * epochs


def _run_ptq(ctx: _Context, result):
    from kvision.compress.ptq import ptq_artifacts

    result.artifacts.extend(
        ptq_artifacts(
            ctx.model,
            ctx.out_dir,
            ctx.cfg.ptq,
            ctx.calibration,
            ctx.samples,
            ctx.cfg.model_name,
            ctx.cfg.min_top1_agreement,
        )
    )


def _run_qat(ctx: _Context, result):
    from kvision.compress.qat import quantize_model

    cfg = ctx.cfg.qat
    qat, report = quantize_model(ctx.model, skip_layers=cfg.skip_layers)
    result.reports.append(report)
    ctx.finetune(qat, cfg.epochs, cfg.learning_rate)
    for variant in cfg.outputs:
        ctx.convert(result, qat, f"qat_{variant}", variant)


def _run_prune(ctx: _Context, result):
    from kvision.compress import prune
    from kvision.compress.qat import quantize_model
    from kvision.compress.sparsity import keras_weight_stats, overall_sparsity, tflite_weight_stats

    cfg = ctx.cfg.prune
    pruned, report, schedule = prune.prune_model(ctx.model, cfg, ctx.total_steps(cfg.epochs))
    result.reports.append(report)
    result.schedule = schedule.to_dict()
    ctx.finetune(pruned, cfg.epochs, cfg.learning_rate, callbacks=prune.pruning_callbacks())
    stripped = prune.strip(pruned)
    names = report.names("pruned")
    keras_stats = keras_weight_stats(stripped)
    for row in report.rows:
        if row.layer in keras_stats:
            row.detail["sparsity"] = round(keras_stats[row.layer]["zero_fraction"], 4)
    layer_names = [layer.name for layer in stripped.layers]

    def measure(artifact):
        entry = {
            "target_sparsity": cfg.effective_sparsity,
            "keras_sparsity": overall_sparsity(keras_stats, names),
            "tflite_sparsity": None,
            "layers": [],
        }
        if artifact.ok or Path(artifact.path).is_file():
            stats = tflite_weight_stats(artifact.path, layer_names)
            entry["tflite_sparsity"] = overall_sparsity(stats, names)
            entry["layers"] = stats
        result.weights[artifact.name] = entry

    if "prune" in ctx.cfg.techniques:
        measure(ctx.convert(result, stripped, "pruned_float32", "float32"))
    if "pqat" in ctx.cfg.techniques:
        pqat, qreport = quantize_model(
            stripped, scheme="prune_preserve", skip_layers=ctx.cfg.qat.skip_layers
        )
        result.reports.append(qreport)
        ctx.finetune(pqat, ctx.cfg.qat.epochs, ctx.cfg.qat.learning_rate)
        moved = prune.keep_zeros(pqat, stripped, names)
        if moved:
            qreport.message += (
                f" {moved} pruned weight(s) that tfmot left unmasked (layers whose weights the "
                "converter quantizes) had drifted during QAT and were set back to zero."
            )
        measure(ctx.convert(result, pqat, "pqat_int8", "int8"))


def _run_cluster(ctx: _Context, result):
    from kvision.compress import cluster
    from kvision.compress.qat import quantize_model
    from kvision.compress.sparsity import keras_weight_stats, tflite_weight_stats

    cfg = ctx.cfg.cluster
    clustered, report = cluster.cluster_model(ctx.model, cfg)
    result.reports.append(report)
    ctx.finetune(clustered, cfg.epochs, cfg.learning_rate)
    stripped = cluster.strip(clustered)
    names = report.names("clustered")
    keras_stats = keras_weight_stats(stripped)
    for row in report.rows:
        if row.layer in keras_stats:
            row.detail["unique_values"] = keras_stats[row.layer]["unique_values"]
    layer_names = [layer.name for layer in stripped.layers]

    def measure(artifact):
        entry = {"clusters": cfg.clusters, "max_unique_per_channel": None, "layers": []}
        entry["keras_max_unique"] = max((keras_stats[n]["unique_values"] for n in names), default=0)
        if Path(artifact.path).is_file():
            stats = [
                s for s in tflite_weight_stats(artifact.path, layer_names) if s["layer"] in names
            ]
            entry["layers"] = stats
            entry["max_unique_per_channel"] = max(
                (s["max_unique_per_channel"] for s in stats), default=None
            )
        result.weights[artifact.name] = entry

    if "cluster" in ctx.cfg.techniques:
        measure(ctx.convert(result, stripped, "cluster_int8", "int8"))
    if "cqat" in ctx.cfg.techniques:
        cqat, qreport = quantize_model(
            stripped, scheme="cluster_preserve", skip_layers=ctx.cfg.qat.skip_layers
        )
        result.reports.append(qreport)
        ctx.finetune(cqat, ctx.cfg.qat.epochs, ctx.cfg.qat.learning_rate)
        measure(ctx.convert(result, cqat, "cqat_int8", "int8"))


def _run_distill(ctx: _Context, result):
    from kvision._keras import keras
    from kvision.compress.distill import Distiller
    from kvision.compress.finetune import count_steps
    from kvision.models import build_model

    cfg = ctx.cfg.distill
    c = ctx.contract
    classes = int(ctx.model.output_shape[-1])

    def student():
        keras.utils.set_random_seed(ctx.cfg.seed)
        return build_model(
            cfg.student, c.shape, classes, labels=c.labels or None, **cfg.student_options
        )

    steps = count_steps(ctx.train_ds, ctx.cfg.steps_per_epoch)
    s = student()
    from kvision._env import check_trainable

    check_trainable(s, "training the distillation student")
    init = None
    if cfg.init == "teacher":
        from kvision.compress.student import init_from_teacher

        init = init_from_teacher(s, ctx.model)
    distiller = Distiller(s, ctx.model, cfg.temperature, cfg.alpha)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps * cfg.epochs, 0.05)
    distiller.compile(optimizer=keras.optimizers.Adam(schedule))
    repeat = bool(ctx.cfg.steps_per_epoch)
    distiller.fit(
        ctx.train_ds.repeat() if repeat else ctx.train_ds,
        epochs=cfg.epochs,
        steps_per_epoch=steps if repeat else None,
        verbose=ctx.verbose,
    )
    x_test, y_test = ctx.test
    result.distill = {
        "student": cfg.student,
        "student_options": dict(cfg.student_options),
        "student_params": int(s.count_params()),
        "init": "teacher" if init else "random",
        "init_detail": init,
        "teacher_params": int(ctx.model.count_params()),
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "epochs": cfg.epochs,
        "teacher_accuracy": _keras_accuracy(ctx.model, x_test, y_test),
        "student_accuracy": _keras_accuracy(s, x_test, y_test),
        "scratch_accuracy": None,
    }
    if cfg.scratch_baseline:
        scratch = student()
        ctx.finetune(scratch, cfg.epochs, cfg.learning_rate, from_teacher=False)
        result.distill["scratch_accuracy"] = _keras_accuracy(scratch, x_test, y_test)
    ctx.convert(result, s, "distill_int8", "int8")


_STEPS = {
    "ptq": _run_ptq,
    "qat": _run_qat,
    "prune": _run_prune,
    "cluster": _run_cluster,
    "distill": _run_distill,
}
_TECHNIQUE_OF = {"pruned": "prune"}  # artifact name prefix -> technique, where they differ


def _describe(result: CompressionResult) -> None:
    """Fill each compressed artifact's ``compression`` dict: its technique, its gzip ratio vs
    the float32 TFLite and the weight statistics measured in its file."""
    base = next((a for a in result.artifacts if a.name == "float32"), None)
    for a in result.artifacts:
        if a.name == "float32":
            continue
        prefix = a.name.split("_")[0]
        info = {"technique": _TECHNIQUE_OF.get(prefix, prefix)}
        if base is not None and base.gzip_bytes and a.gzip_bytes:
            info["gzip_ratio"] = round(base.gzip_bytes / a.gzip_bytes, 2)
        measured = result.weights.get(a.name, {})
        info.update({k: v for k, v in measured.items() if k != "layers" and v is not None})
        a.compression = info


def _keras_accuracy(model, x, y) -> float:
    probs = model.predict(x, batch_size=128, verbose=0)
    return float(np.mean(probs.argmax(-1) == y))


def _arrays(data, argument: str):
    """``(x, y)`` NumPy arrays from a tuple or a batched dataset of ``(images, labels)``."""
    if data is None:
        raise InputValueError(f"`{argument}` is required (a dataset or an (x, y) tuple).")
    if isinstance(data, tuple | list) and len(data) == 2:
        return np.asarray(data[0], dtype=np.float32), np.asarray(data[1]).astype(np.int64)
    xs, ys = [], []
    for batch in data:
        xs.append(np.asarray(batch[0], dtype=np.float32))
        ys.append(np.asarray(batch[1]).astype(np.int64))
    if not xs:
        raise InputValueError(f"`{argument}` yielded no batches.")
    return np.concatenate(xs), np.concatenate(ys)
