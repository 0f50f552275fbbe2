"""Convert, verify, evaluate and gate one compressed TFLite artifact.

Every compressed model goes through :func:`build_artifact`: conversion (``convert_tflite``, or the
deny-list conversion), ``verify_artifact`` (file loads, builtin ops only, ``images`` ->
``probabilities``, top-1 agreement with the Keras model it came from), the input/output dtype the
variant asked for, test-set accuracy (:func:`evaluate_accuracy`) and the accuracy floor relative to
the float model (:func:`apply_accuracy_floor`). Nothing here raises for a bad artifact: it becomes a
failed :class:`~kvision.export.Artifact` row with the reason, and a converted file whose accuracy
is below the floor is "exported but failed validation" with the remedy to try.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.export.artifact import Artifact, short_reason

EXPECTED_IO = {
    "float32": "float32",
    "float16": "float32",
    "dynamic": "float32",
    "int8": "int8",
    "int8_float_io": "float32",
    "int16x8": "float32",
}
EXPORTED_BUT_FAILED = "exported but failed validation"

# Float Keras model vs artifact, on the same inputs: the one table of parity tolerances (tests use
# it too). ``max_abs_diff`` is on softmax probabilities; ``top1`` is the minimum top-1 agreement.
PARITY_TOLERANCES = {
    "float32": {"max_abs_diff": 1e-4, "top1": 1.0},
    "float16": {"max_abs_diff": 1e-2, "top1": 0.98},
    "dynamic": {"max_abs_diff": 0.1, "top1": 0.95},
    "int8": {"max_abs_diff": 0.15, "top1": 0.9},
    "int8_float_io": {"max_abs_diff": 0.15, "top1": 0.9},
    "int16x8": {"max_abs_diff": 0.05, "top1": 0.95},
}


def build_artifact(
    keras_model,
    path,
    variant: str,
    samples,
    representative_data=None,
    name: str | None = None,
    deny_layers=(),
    min_top1_agreement: float = 0.9,
    max_calibration_samples: int = 500,
) -> Artifact:
    """Convert ``keras_model`` to ``path`` as ``variant`` and verify it; bad files are rows.

    Args:
        keras_model: the tf_keras model to convert (a QAT model for QAT variants).
        path: output ``.tflite`` path (overwritten).
        variant: a key of ``kvision.export.converter.VARIANTS``.
        samples: float32 validation images to compare with Keras.
        representative_data: calibration images (int8 / int8_float_io / int16x8).
        name: artifact name (default: the file stem).
        deny_layers: Keras layer names kept in float (int8 variants only).
        min_top1_agreement: required top-1 agreement with ``keras_model`` (quantized variants;
            ``float32`` requires 1.0 and ``max|diff| <= 1e-4``).
        max_calibration_samples: calibration cap.

    Returns:
        An :class:`Artifact` (``checks["variant"]``, ``checks["denied_nodes"]`` added).

    Example:
        >>> a = build_artifact(qat_model, "out/m_qat_int8.tflite", "int8", x_val, x_train[:300])
        >>> a.status, a.checks["input_dtype"]
        ('ok', 'int8')
    """
    from kvision.export.converter import convert_tflite, denied_tensors
    from kvision.export.verify import empty_checks, verify_artifact

    path = Path(path)
    name = name or path.stem
    denied: list[str] = []
    try:
        convert_tflite(
            keras_model,
            path,
            variant,
            representative_data=representative_data,
            overwrite=True,
            max_calibration_samples=max_calibration_samples,
            deny_layers=deny_layers,
        )
        if deny_layers:
            layer_names = [layer.name for layer in keras_model.layers]
            denied = denied_tensors(path, list(deny_layers), layer_names)
    except Exception as exc:  # a variant that cannot be produced is a failed row, not a crash
        checks = empty_checks()
        checks.update(variant=variant, n_samples=int(len(samples)))
        return Artifact.failed(name, "tflite", path, short_reason(exc), checks)
    exact = variant == "float32"
    artifact = verify_artifact(
        path,
        "tflite",
        keras_model,
        samples,
        atol=1e-4 if exact else None,
        name=name,
        min_top1_agreement=1.0 if exact else min_top1_agreement,
    )
    artifact.checks["variant"] = variant
    artifact.checks["denied_nodes"] = denied
    want = EXPECTED_IO[variant]
    got = (artifact.checks.get("input_dtype"), artifact.checks.get("output_dtype"))
    if artifact.ok and got != (want, want):
        artifact.status = "failed"
        artifact.reason = f"input/output dtypes {got[0]}/{got[1]}, requested {want}/{want}"
    return artifact


def evaluate_accuracy(artifact: Artifact, x_test, y_test) -> Artifact:
    """Fill ``artifact.metrics["accuracy"]`` (and ``n_test``) by running the file on the test set.

    A failed artifact whose file exists is still evaluated (its number helps the diagnosis); a
    missing or unreadable file leaves ``accuracy`` ``None``.
    """
    from kvision.export.litert import predict_sharded

    artifact.metrics["n_test"] = int(len(y_test))
    try:
        probs = predict_sharded(artifact.path, np.asarray(x_test, dtype=np.float32))
    except Exception as exc:  # unreadable file: no accuracy, and never "ok"
        artifact.metrics["accuracy"] = None
        if artifact.ok:
            artifact.status, artifact.reason = "failed", short_reason(exc)
        return artifact
    artifact.metrics["accuracy"] = float(np.mean(probs.argmax(-1) == np.asarray(y_test)))
    return artifact


def apply_accuracy_floor(
    artifact: Artifact, float_accuracy: float, floor_points: float = 1.0, head: str | None = None
) -> Artifact:
    """Mark ``artifact`` failed when its accuracy is more than ``floor_points`` below float.

    Args:
        artifact: an evaluated artifact (``metrics["accuracy"]`` set).
        float_accuracy: the float Keras model's test accuracy (0..1).
        floor_points: allowed drop in percentage points (default 1.0).
        head: name of the classifier layer, for the "keep the head in float" remedy.

    Returns:
        The same artifact; ``metrics`` gain ``float_accuracy`` and ``accuracy_drop_points``.

    Example:
        >>> apply_accuracy_floor(a, float_accuracy=0.91, floor_points=1.0).reason
        'exported but failed validation: accuracy 85.00% is 6.00 points below float ...'
    """
    accuracy = artifact.metrics.get("accuracy")
    artifact.metrics["float_accuracy"] = float(float_accuracy)
    if accuracy is None:
        return artifact
    drop = (float_accuracy - accuracy) * 100.0
    artifact.metrics["accuracy_drop_points"] = round(float(drop), 4)
    artifact.checks["accuracy_floor_points"] = float(floor_points)
    if drop <= floor_points + 1e-9:
        return artifact
    message = (
        f"{EXPORTED_BUT_FAILED}: accuracy {accuracy:.2%} is {drop:.2f} points below float "
        f"{float_accuracy:.2%} (floor {floor_points:g}). Try: {remedy(artifact, head)}"
    )
    artifact.reason = f"{message}; {artifact.reason}" if artifact.reason else message
    artifact.checks["exported"] = Path(artifact.path).is_file()
    artifact.status = "failed"
    return artifact


def remedy(artifact: Artifact, head: str | None = None) -> str:
    """What to try when a compressed artifact misses the accuracy floor, by how it was made.

    Example:
        >>> remedy(Artifact("pqat_int8", "tflite", "m.tflite", 1, 1, "ok"), "probabilities")
        'prune longer or less (compress.prune.epochs, compress.prune.target_sparsity); a lon...'
    """
    name, variant = artifact.name, artifact.checks.get("variant", "")
    tips = []
    if name.startswith(("pruned", "pqat")):
        tips.append("prune longer or less (compress.prune.epochs, compress.prune.target_sparsity)")
    if name.startswith(("cluster", "cqat")):
        tips.append("more clusters or a longer fine-tune (compress.cluster.clusters, .epochs)")
    if name.startswith("cluster"):
        tips.append("cluster-preserving QAT (techniques: cqat)")
    if name.startswith("distill"):
        tips.append("a larger student or more epochs (compress.distill.student_options, .epochs)")
    if name.startswith(("qat", "pqat", "cqat")):
        tips.append("a longer QAT fine-tune (compress.qat.epochs)")
    if name.startswith("ptq") or not tips:
        if variant not in ("", "float32", "float16"):
            tips.append("quantization-aware training (techniques: qat)")
        if variant != "int16x8":
            tips.append("int16x8 activations (ptq.variants: int16x8)")
        tips.append(f"keep the head in float (ptq.deny_layers=[{head or '<head layer>'}])")
    return "; ".join(tips) + "."
