"""Float export and verification: tf_keras model -> TF Serving SavedModel and float32 TFLite.

Entry point :func:`export`; the parts are ``saved_model`` (TF Serving layout), ``converter``
(the only user of ``tf.lite.TFLiteConverter``), ``litert`` (the only user of ``ai_edge_litert``),
``verify`` (reload + compare with Keras) and ``artifact`` (the result rows). Importing this package
imports neither TensorFlow nor LiteRT.

Output layout of ``export(model, out_dir, ...)``::

    out_dir/saved_model/<model_name>/<version>/   TF Serving model (+ assets.extra/contract.json)
    out_dir/tflite/<model_name>_float32.tflite
    out_dir/tflite/<model_name>_float32.contract.json
    out_dir/export_report.json                     {"artifacts": [Artifact.to_dict(), ...]}
"""

from __future__ import annotations

from pathlib import Path

from kvision.errors import InputValueError
from kvision.export.artifact import (
    Artifact,
    contract_path,
    gzip_size,
    load_contract,
    path_size,
    short_reason,
)

__all__ = [
    "Artifact",
    "EXPORT_FORMATS",
    "REPORT_FILE",
    "contract_path",
    "export",
    "gzip_size",
    "load_contract",
    "path_size",
    "short_reason",
]

EXPORT_FORMATS = ("saved_model", "tflite")
REPORT_FILE = "export_report.json"


def export(
    model,
    out_dir,
    samples,
    formats=EXPORT_FORMATS,
    model_name: str = "classifier",
    version: int = 1,
    atol: float = 1e-4,
    contract=None,
    overwrite: bool = False,
) -> list[Artifact]:
    """Export ``model`` to each format, verify each against Keras, and report.

    A format whose export or conversion raises becomes a failed :class:`Artifact` with the error
    as its reason; nothing here raises for a bad artifact. Invalid arguments still raise.

    Args:
        model: trained tf_keras classifier (one image input, one probabilities output).
        out_dir: output folder (see the module docstring for the layout).
        samples: float32 model inputs ``[N, H, W, C]`` used to verify (e.g. 256 validation images).
        formats: any of ``"saved_model"``, ``"tflite"`` (default both).
        model_name: TF Serving model name and TFLite file prefix (default ``"classifier"``).
        version: SavedModel version folder (default 1).
        atol: largest allowed ``|artifact - keras|`` (default 1e-4).
        contract: ``InputContract`` (default: the one the model carries).
        overwrite: replace an existing version folder / ``.tflite`` (default False).

    Returns:
        One :class:`Artifact` per format, in the order of ``formats``.

    Example:
        >>> arts = export(model, "runs/exp1/export", x_val[:256])
        >>> [(a.name, a.status) for a in arts]
        [('saved_model', 'ok'), ('float32', 'ok')]
    """
    import numpy as np

    from kvision._keras import require_tf_keras_model
    from kvision.export.converter import convert_tflite
    from kvision.export.saved_model import export_saved_model, resolve_contract
    from kvision.export.verify import empty_checks, verify_artifact
    from kvision.io import atomic_write_json

    require_tf_keras_model(model)
    formats = [formats] if isinstance(formats, str) else list(formats)
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats or len(set(formats)) != len(formats):
        raise InputValueError(
            f"`formats` should be distinct values from {EXPORT_FORMATS}. "
            f"Received: formats={formats}"
        )
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise InputValueError(
            f"`samples` should be float32 images [N, H, W, C] with N >= 1. "
            f"Received: shape={x.shape}"
        )
    contract = resolve_contract(model, contract)
    out_dir = Path(out_dir)
    reference = model.predict(x, batch_size=64, verbose=0)

    artifacts = []
    for fmt in formats:
        if fmt == "saved_model":
            name, path = "saved_model", out_dir / "saved_model" / model_name / str(version)

            def build(path=path):
                return export_saved_model(
                    model,
                    path.parent.parent,
                    model_name,
                    version,
                    contract=contract,
                    overwrite=overwrite,
                )
        else:
            name, path = "float32", out_dir / "tflite" / f"{model_name}_float32.tflite"

            def build(path=path):
                return convert_tflite(
                    model, path, "float32", contract=contract, overwrite=overwrite
                )

        try:
            build()
        except Exception as exc:  # a format that cannot be produced is a failed row, not a crash
            checks = empty_checks()
            checks["n_samples"] = int(len(x))
            artifacts.append(Artifact.failed(name, fmt, path, short_reason(exc), checks))
            continue
        artifacts.append(
            verify_artifact(path, fmt, model, x, atol=atol, name=name, reference=reference)
        )
    atomic_write_json(out_dir / REPORT_FILE, {"artifacts": [a.to_dict() for a in artifacts]})
    return artifacts
