"""One ``Runtime`` interface over LiteRT, TF SavedModel, Keras and ONNX Runtime.

Heavy engines (TensorFlow, LiteRT, ONNX Runtime) are imported when a runtime loads, never here.

Example:
    >>> from deploy.runtimes import open_runtime
    >>> with open_runtime("tflite_models/classifier_int8.tflite", "litert", threads=1) as rt:
    ...     rt.input_spec.dtype, rt.predict(x).shape
    ('int8', (4, 10))
"""

from deploy.runtimes.base import (
    ARTIFACT_FORMATS,
    BaseRuntime,
    Runtime,
    RuntimeUnavailable,
    TensorInfo,
    artifact_contract,
    check_batch,
    detect_format,
    saved_model_version_dir,
)
from deploy.runtimes.registry import (
    DELEGATE_PREFIX,
    RUNTIME_FORMATS,
    default_runtimes,
    open_runtime,
    runtime_kind,
    supports_threads,
)

__all__ = [
    "ARTIFACT_FORMATS",
    "BaseRuntime",
    "DELEGATE_PREFIX",
    "RUNTIME_FORMATS",
    "Runtime",
    "RuntimeUnavailable",
    "TensorInfo",
    "artifact_contract",
    "check_batch",
    "default_runtimes",
    "detect_format",
    "open_runtime",
    "runtime_kind",
    "saved_model_version_dir",
    "supports_threads",
]
