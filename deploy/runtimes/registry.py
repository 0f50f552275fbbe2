"""Re-export of :mod:`kvision.runtime.registry` (runtime names, formats, ``open_runtime``)."""

from kvision.runtime.registry import (
    DELEGATE_PREFIX,
    RUNTIME_FORMATS,
    THREADED,
    default_runtimes,
    open_runtime,
    runtime_kind,
    supports_threads,
)

__all__ = [
    "DELEGATE_PREFIX",
    "RUNTIME_FORMATS",
    "THREADED",
    "default_runtimes",
    "open_runtime",
    "runtime_kind",
    "supports_threads",
]
