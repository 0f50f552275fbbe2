"""Verify a converted ``.tflite`` against its source model output by output, for any task.

``kvision convert`` uses :func:`verify_outputs` for sources that are not one-output classifiers
(a detector's ``boxes`` and ``scores``, a segmentation map ...): the file is reloaded with
LiteRT (``kvision.runtime``), fed the same samples as the source in its own input domain, and
every named output is compared with the source's within the variant's tolerance of
:data:`OUTPUT_TOLERANCES`. A failed artifact says which output failed and by how much.

Example:
    >>> art = verify_outputs("out/det_int8.tflite", "int8", x, {"boxes": b, "scores": s})
    >>> art.status, art.checks["outputs"]["boxes"]["max_abs_diff"] <= 0.1 * np.ptp(b)
    ('ok', True)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# variant -> ("abs", atol) or ("range", fraction of the source output's range over the samples):
# the largest allowed max |artifact - source| per output. Float variants are near-exact; the
# quantized ones carry input, weight and output rounding, a few quanta of each output's range.
OUTPUT_TOLERANCES = {
    "float32": ("abs", 1e-4),
    "float16": ("abs", 1e-2),
    "dynamic": ("range", 0.05),
    "int8": ("range", 0.1),
    "int8_float_io": ("range", 0.1),
    "int16x8": ("range", 0.02),
}


def output_tolerance(variant: str, reference: np.ndarray) -> float:
    """The allowed max |diff| for one output of ``variant`` whose source values are
    ``reference``."""
    how, value = OUTPUT_TOLERANCES[variant]
    return value if how == "abs" else value * float(np.ptp(reference))


def verify_outputs(path, variant: str, samples, reference: dict, name: str | None = None):
    """Reload ``path`` with LiteRT, run ``samples`` and compare every output with ``reference``.

    Never raises for a bad artifact: a missing or unloadable file, non-builtin ops, inputs
    outside the artifact's own domain (its contract), output names or shapes that differ from
    the source's, non-finite values or a difference over the tolerance make it ``failed`` with
    the reason (naming the output).

    Args:
        path: the ``.tflite`` file.
        variant: a key of :data:`OUTPUT_TOLERANCES`.
        samples: the source's model-domain inputs ``[N, H, W, C]``.
        reference: the source's outputs on ``samples``, by output name.
        name: the artifact's name (default: ``variant``).

    Returns:
        A ``kvision.export.artifact.Artifact``; ``checks["outputs"]`` maps each output name to
        ``{max_abs_diff, mean_abs_diff, tolerance, ok}``.
    """
    from kvision.export.artifact import Artifact, gzip_size, path_size, short_reason
    from kvision.export.verify import empty_checks

    path = Path(path)
    checks = empty_checks()
    checks["n_samples"] = int(len(samples))
    checks["outputs"] = {}
    try:
        problem = _run_and_compare(path, variant, samples, reference, checks)
    except Exception as exc:  # any failure to load or run the artifact is a failed row
        problem = short_reason(exc)
    size, gz = (path_size(path), gzip_size(path)) if path.exists() else (0, 0)
    status = "failed" if problem else "ok"
    return Artifact(
        name or variant, "tflite", str(path), size, gz, status, reason=problem, checks=checks
    )


def _run_and_compare(path: Path, variant, samples, reference: dict, checks: dict) -> str:
    from kvision.models.contract import InputContract
    from kvision.runtime import open_runtime, split_ops, tflite_op_names
    from kvision.runtime.tflite_ops import describe_non_builtin

    if not path.is_file() or path.stat().st_size == 0:
        return f"file missing or empty: {path}"
    ops = tflite_op_names(path)
    flex, custom = split_ops(ops)
    checks.update(ops=ops, flex_ops=flex, custom_ops=custom)
    if flex or custom:
        return f"{path.name} needs {describe_non_builtin(flex, custom)}; only builtin ops allowed"
    with open_runtime(path, "litert") as rt:
        inputs, outputs = rt.inputs, rt.outputs
        checks["input_dtype"] = inputs[0].dtype
        checks["output_dtype"] = sorted({o.dtype for o in outputs})
        checks["input_shape"] = list(inputs[0].shape)
        checks["signature"] = {
            "inputs": [i.name for i in inputs],
            "outputs": [o.name for o in outputs],
        }
        try:
            contract = InputContract.find(path)
        except FileNotFoundError:
            contract = None
        checks["contract"] = contract is not None
        if contract is not None:
            contract.check_tensor(inputs[0].dtype, inputs[0].quantized, where=path.name)
            contract.check_values(samples, where=f"verification samples for {path.name}")
        got = rt.run(samples)
    if sorted(got) != sorted(reference):
        return f"output names {sorted(got)} differ from the source's {sorted(reference)}"
    reasons = []
    for key, ref in reference.items():
        ref = np.asarray(ref, dtype=np.float32)
        y = got[key]
        if y.shape != ref.shape:
            reasons.append(f"output {key!r}: shape {list(y.shape)}, source {list(ref.shape)}")
            continue
        if not np.all(np.isfinite(y)):
            reasons.append(f"output {key!r} contains NaN or Inf")
            continue
        diff = np.abs(y - ref)
        tol = output_tolerance(variant, ref)
        ok = bool(diff.max() <= tol) if diff.size else True
        checks["outputs"][key] = {
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "tolerance": tol,
            "ok": ok,
        }
        if not ok:
            how, value = OUTPUT_TOLERANCES[variant]
            rule = (
                f"atol {value:g}" if how == "abs" else f"{value:g} of its range {np.ptp(ref):.4g}"
            )
            reasons.append(
                f"output {key!r}: max |artifact - source| = {diff.max():.4g} > {tol:.4g} ({rule})"
            )
    return "; ".join(reasons)
