"""Re-export of :mod:`kvision.runtime.litert` (the one LiteRT inference path)."""

from kvision.runtime.litert import (
    KNOWN_DELEGATES,
    DelegateUnavailable,
    LiteRTRuntime,
    find_delegate_library,
)

__all__ = ["KNOWN_DELEGATES", "DelegateUnavailable", "LiteRTRuntime", "find_delegate_library"]
