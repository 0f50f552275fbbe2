"""Verify an exported artifact against the Keras model it came from.

:func:`verify_artifact` reloads the file exactly as a deployment would (``tf.saved_model.load`` +
the ``serving_default`` signature; the LiteRT interpreter for ``.tflite``), runs it on sample
inputs and compares with Keras. It never raises for a bad artifact: a missing, empty, unreadable
or wrong file, a Flex/custom op, a wrong signature or a numeric mismatch is an ``Artifact`` with
``status="failed"`` and the reason.

``checks`` schema (always these keys; ``None`` / ``[]`` when not measured)::

    max_abs_diff, mean_abs_diff   float, |artifact - keras| over all outputs
    top1_agreement                float in [0, 1], raw argmax agreement with Keras
    top1_near_ties                int, disagreements where Keras' own margin between the two
                                  classes is <= tie_tol (no defined top-1; not counted as errors)
    n_samples                     int
    ops, flex_ops, custom_ops     sorted op names (TFLite only; [] for a SavedModel)
    input_dtype, output_dtype     e.g. "float32", "int8"
    input_shape                   e.g. [None, 28, 28, 1]
    signature                     {"key": "serving_default", "inputs": [...], "outputs": [...]}
    contract                      bool, the input contract file exists beside the artifact

Samples are checked against the artifact's own input domain first: its contract must agree
with its input tensor and the samples must fit the contract (whole pixel values for a raw
``uint8`` input), else the artifact fails; a raw integer input is never fed rounded floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.export.artifact import Artifact, contract_path, gzip_size, path_size, short_reason
from kvision.tasks.classification.task import top1_agreement

_BATCH = 64


def empty_checks() -> dict:
    """The ``checks`` dict with every key present and nothing measured."""
    return {
        "max_abs_diff": None,
        "mean_abs_diff": None,
        "top1_agreement": None,
        "top1_near_ties": None,
        "n_samples": 0,
        "ops": [],
        "flex_ops": [],
        "custom_ops": [],
        "input_dtype": None,
        "output_dtype": None,
        "input_shape": None,
        "signature": None,
        "contract": False,
    }


def verify_artifact(
    artifact_path,
    fmt: str,
    keras_model,
    samples,
    atol: float = 1e-4,
    name: str | None = None,
    reference=None,
    min_top1_agreement: float = 1.0,
    tie_tol: float = 1e-5,
) -> Artifact:
    """Reload ``artifact_path``, run it on ``samples`` and compare with ``keras_model``.

    Passes when the file loads, uses only builtin ops (TFLite), exposes ``images`` ->
    ``probabilities`` under ``serving_default``, ``max|artifact - keras| <= atol`` and top-1
    agreement (near-ties excused) is at least ``min_top1_agreement``.

    Args:
        artifact_path: ``.tflite`` file or SavedModel version folder.
        fmt: ``"tflite"`` or ``"saved_model"``.
        keras_model: the source tf_keras model (``None`` if ``reference`` is given).
        samples: float32 model inputs ``[N, H, W, C]`` (e.g. 256 normalized validation images).
        atol: largest allowed absolute difference (default 1e-4; ``None`` skips the check, e.g.
            for quantized variants judged by top-1 only).
        name: artifact name (default: ``"saved_model"`` or the file's stem).
        reference: precomputed ``keras_model.predict(samples)`` to avoid recomputing it.
        min_top1_agreement: required top-1 agreement (default 1.0: float artifacts must agree).
        tie_tol: Keras probability margin under which a disagreement is a near-tie (default 1e-5).

    Returns:
        An :class:`Artifact` with ``status`` ``"ok"`` or ``"failed"`` and ``checks`` filled.

    Example:
        >>> a = verify_artifact("out/tflite/classifier_float32.tflite", "tflite", model, x_val)
        >>> a.status, a.checks["max_abs_diff"] <= 1e-4
        ('ok', True)
    """
    if fmt not in ("tflite", "saved_model"):
        raise ValueError(f"`fmt` should be 'tflite' or 'saved_model'. Received: fmt={fmt!r}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(
            f"`samples` should be float32 images [N, H, W, C] with N >= 1. "
            f"Received: shape={x.shape}"
        )
    path = Path(artifact_path)
    name = name or ("saved_model" if fmt == "saved_model" else path.stem)
    checks = empty_checks()
    checks["n_samples"] = int(len(x))

    def failed(reason):
        return Artifact(
            name,
            fmt,
            str(path),
            path_size(path),
            gzip_size(path),
            "failed",
            reason=reason,
            checks=checks,
        )

    runner = _run_tflite if fmt == "tflite" else _run_saved_model
    try:
        outputs, problem = runner(path, x, checks)
    except Exception as exc:  # any failure to load/run the artifact is a failed row
        return failed(short_reason(exc))
    if problem:
        return failed(problem)

    if reference is None:
        if keras_model is None:
            raise ValueError("Pass `keras_model` or `reference` (Keras outputs on `samples`).")
        reference = keras_model.predict(x, batch_size=_BATCH, verbose=0)
    reference = np.asarray(reference, dtype=np.float32)
    if reference.shape != outputs.shape:
        return failed(
            f"output shape {list(outputs.shape)} differs from Keras {list(reference.shape)}"
        )
    diff = np.abs(outputs - reference)
    checks["max_abs_diff"] = float(diff.max())
    checks["mean_abs_diff"] = float(diff.mean())
    agree, ties = top1_agreement(reference, outputs, tie_tol)
    checks["top1_agreement"] = agree
    checks["top1_near_ties"] = ties
    reasons = []
    if not np.all(np.isfinite(outputs)):
        reasons.append("outputs contain NaN or Inf")
    if atol is not None and checks["max_abs_diff"] > atol:
        reasons.append(f"max |artifact - keras| = {checks['max_abs_diff']:.3g} > atol={atol:g}")
    excused = agree + ties / len(x)
    if excused < min_top1_agreement:
        reasons.append(
            f"top-1 agreement {agree:.2%} ({ties} near-ties excused) "
            f"< required {min_top1_agreement:.2%}"
        )
    if reasons:
        return failed("; ".join(reasons))
    return Artifact(name, fmt, str(path), path_size(path), gzip_size(path), "ok", checks=checks)


def _run_tflite(path: Path, x: np.ndarray, checks: dict):
    """Load a .tflite file and run it; returns ``(outputs, None)`` or ``(None, reason)``."""
    from kvision.export.litert import LiteRTModel, split_ops, tflite_op_names

    problem = _file_problem(path)
    if problem:
        return None, problem
    try:
        ops = tflite_op_names(path)
    except ValueError as exc:
        return None, str(exc)
    flex, custom = split_ops(ops)
    checks.update(ops=ops, flex_ops=flex, custom_ops=custom)
    if flex or custom:
        parts = []
        if flex:
            parts.append(f"Flex (Select TF) ops {flex}")
        if custom:
            parts.append(f"custom ops {custom}")
        return None, f"{path.name} needs {' and '.join(parts)}; only builtin TFLite ops are allowed"
    model = LiteRTModel(path)
    checks["input_dtype"] = model.input_dtype.name
    checks["output_dtype"] = model.output_dtype.name
    checks["input_shape"] = list(model.input_shape)
    sigs = model.signature
    key = "serving_default" if "serving_default" in sigs else next(iter(sigs), None)
    if key is not None:
        checks["signature"] = {
            "key": key,
            "inputs": list(sigs[key]["inputs"]),
            "outputs": list(sigs[key]["outputs"]),
        }
    if tuple(model.input_shape[1:]) != tuple(x.shape[1:]):
        return None, (
            f"{path.name} expects input {list(model.input_shape)}, samples are {list(x.shape)}"
        )
    checks["contract"] = contract_path(path).is_file()
    scale, _ = model.input_quantization
    problem = _domain_problem(path, x, model.input_dtype, bool(scale))
    if problem:
        return None, problem
    return model.predict(x, batch_size=None if model.input_shape[0] else _BATCH), None


def _run_saved_model(path: Path, x: np.ndarray, checks: dict):
    """Load a SavedModel folder, check its serving signature and run it."""
    import tensorflow as tf

    from kvision.export.saved_model import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY

    if not path.is_dir():
        return None, f"SavedModel folder not found: {path}"
    if not (path / "saved_model.pb").is_file():
        return None, f"no saved_model.pb in {path}"
    loaded = tf.saved_model.load(str(path))
    signatures = dict(loaded.signatures)
    if SIGNATURE_KEY not in signatures:
        return None, f"no `{SIGNATURE_KEY}` signature in {path}; found {sorted(signatures)}"
    fn = signatures[SIGNATURE_KEY]
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    checks["signature"] = {
        "key": SIGNATURE_KEY,
        "inputs": sorted(inputs),
        "outputs": sorted(outputs),
    }
    if set(inputs) != {INPUT_NAME} or OUTPUT_NAME not in outputs:
        return None, (
            f"`{SIGNATURE_KEY}` should map input `{INPUT_NAME}` to output "
            f"`{OUTPUT_NAME}`. Found inputs {sorted(inputs)}, outputs {sorted(outputs)}"
        )
    spec, out_spec = inputs[INPUT_NAME], outputs[OUTPUT_NAME]
    checks["input_dtype"] = spec.dtype.name
    checks["output_dtype"] = out_spec.dtype.name
    checks["input_shape"] = spec.shape.as_list()
    checks["contract"] = contract_path(path).is_file()
    problem = _domain_problem(path, x, spec.dtype.name, False)
    if problem:
        return None, problem
    if spec.dtype != tf.float32:
        return None, f"input `{INPUT_NAME}` should be float32. Found {spec.dtype.name}"
    if not spec.shape.is_compatible_with([None, *x.shape[1:]]):
        return None, (
            f"input `{INPUT_NAME}` has shape {spec.shape.as_list()}, samples are {list(x.shape)}"
        )
    chunks = [
        fn(**{INPUT_NAME: tf.constant(x[i : i + _BATCH])})[OUTPUT_NAME].numpy()
        for i in range(0, len(x), _BATCH)
    ]
    return np.concatenate(chunks).astype(np.float32), None


def _domain_problem(path: Path, x: np.ndarray, dtype, quantized: bool) -> str:
    """Why ``x`` is not in the artifact's own input domain, or ``""``.

    The artifact's saved contract must agree with its input tensor (an integer input without
    quantization takes raw pixels) and the samples must fit the contract's domain (whole pixel
    values for ``input_domain="uint8"``), so verification never passes on inputs the artifact
    would not get in deployment ([0, 1] floats cast to 0 or 1 by both sides).
    """
    from kvision.models.contract import InputContract

    if not contract_path(path).is_file():
        return ""
    try:
        contract = InputContract.load(contract_path(path))
        contract.check_tensor(dtype, quantized, where=path.name)
        contract.check_values(x, where="verification samples for " + path.name)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return ""


def _file_problem(path: Path) -> str:
    if not path.exists():
        return f"file not found: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    size = path.stat().st_size
    if size == 0:
        return f"file is empty (0 bytes): {path}"
    return ""
