"""One runtime layer for every artifact: LiteRT, TF SavedModel, Keras and ONNX Runtime.

Each runtime runs an artifact with any number of named inputs and outputs and returns every
output by name (float32, dequantized); integer inputs are fed in their own domain. kvision's
exporters, predict and verification and ``deploy``'s benchmark and server all run artifacts
through here, so there is one LiteRT inference path. Heavy engines (TensorFlow, LiteRT, ONNX
Runtime) are imported when a runtime loads, never on import.

Example:
    >>> from kvision.runtime import open_runtime
    >>> with open_runtime("face_detector_int8.tflite", threads=1) as rt:
    ...     [(t.name, t.dtype) for t in rt.outputs]
    ...     out = rt.run({"image": pixels})           # {"boxes": [N, 4], "scores": [N, 3]}
    [('boxes', 'int8'), ('scores', 'int8')]
"""

from kvision.runtime.artifacts import (
    ARTIFACT_FORMATS,
    ARTIFACT_SUFFIXES,
    KERAS_SUFFIXES,
    artifact_contract,
    detect_format,
    find_contract,
    saved_model_version_dir,
)
from kvision.runtime.base import (
    Runtime,
    RuntimeUnavailable,
    TensorInfo,
    UnsupportedOpsError,
    check_batch,
    check_feeds,
    primary_output,
)
from kvision.runtime.probe import probe_feeds
from kvision.runtime.registry import (
    DELEGATE_PREFIX,
    RUNTIME_FORMATS,
    default_runtimes,
    open_runtime,
    runtime_kind,
    supports_threads,
)
from kvision.runtime.tflite_ops import split_ops, tflite_op_names

__all__ = [
    "ARTIFACT_FORMATS",
    "ARTIFACT_SUFFIXES",
    "DELEGATE_PREFIX",
    "KERAS_SUFFIXES",
    "RUNTIME_FORMATS",
    "Runtime",
    "RuntimeUnavailable",
    "TensorInfo",
    "UnsupportedOpsError",
    "artifact_contract",
    "check_batch",
    "check_feeds",
    "default_runtimes",
    "detect_format",
    "find_contract",
    "open_runtime",
    "primary_output",
    "probe_feeds",
    "runtime_kind",
    "saved_model_version_dir",
    "split_ops",
    "supports_threads",
    "tflite_op_names",
]
