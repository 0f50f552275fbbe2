"""``deploy.runtimes``: the runtimes of :mod:`kvision.runtime`, under their ``deploy`` names.

The implementation lives in ``kvision.runtime`` (kvision never imports ``deploy``), so kvision's
exporters and ``deploy``'s benchmark and server share one LiteRT inference path. Every runtime
runs any number of named inputs and outputs (``inputs``, ``outputs``, ``run(feeds)``); the
single-tensor ``input_spec``, ``output_spec`` and ``predict(x)`` remain for classifiers.

Example:
    >>> from deploy.runtimes import open_runtime
    >>> with open_runtime("tflite_models/classifier_int8.tflite", "litert", threads=1) as rt:
    ...     rt.input_spec.dtype, rt.predict(x).shape
    ('int8', (4, 10))
"""

from kvision.runtime import (
    ARTIFACT_FORMATS,
    DELEGATE_PREFIX,
    RUNTIME_FORMATS,
    Runtime,
    RuntimeUnavailable,
    TensorInfo,
    UnsupportedOpsError,
    artifact_contract,
    check_batch,
    default_runtimes,
    detect_format,
    find_contract,
    open_runtime,
    probe_feeds,
    runtime_kind,
    saved_model_version_dir,
    supports_threads,
)

BaseRuntime = Runtime

__all__ = [
    "ARTIFACT_FORMATS",
    "BaseRuntime",
    "DELEGATE_PREFIX",
    "RUNTIME_FORMATS",
    "Runtime",
    "RuntimeUnavailable",
    "TensorInfo",
    "UnsupportedOpsError",
    "artifact_contract",
    "check_batch",
    "default_runtimes",
    "detect_format",
    "find_contract",
    "open_runtime",
    "probe_feeds",
    "runtime_kind",
    "saved_model_version_dir",
    "supports_threads",
]
