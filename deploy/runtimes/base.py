"""Re-export of :mod:`kvision.runtime`'s base types (``deploy.runtimes`` stays importable).

``BaseRuntime`` is :class:`kvision.runtime.Runtime` under its former name.
"""

from kvision.runtime.artifacts import (
    ARTIFACT_FORMATS,
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
)

BaseRuntime = Runtime

__all__ = [
    "ARTIFACT_FORMATS",
    "BaseRuntime",
    "Runtime",
    "RuntimeUnavailable",
    "TensorInfo",
    "UnsupportedOpsError",
    "artifact_contract",
    "check_batch",
    "detect_format",
    "find_contract",
    "saved_model_version_dir",
]
