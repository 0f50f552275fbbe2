"""Peak resident memory around one benchmark row.

On Linux the process's peak RSS (``VmHWM``) is reset before each row by writing ``5`` to
``/proc/self/clear_refs``, so each row's ``peak_rss_mb`` is the peak while that row loaded and
ran. Elsewhere ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is used: the process's lifetime
peak, which never goes down (``method`` says which one a number is).

Example:
    >>> probe = PeakMemory()
    >>> probe.start(); _ = bytearray(50_000_000); probe.stop()["peak_delta_mb"] >= 40
    True
"""

from __future__ import annotations

import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
METHOD_HWM = "VmHWM reset per row via /proc/self/clear_refs (peak RSS of this row)"
METHOD_RUSAGE = "resource.getrusage ru_maxrss (process lifetime peak RSS, not reset per row)"


class PeakMemory:
    """Measure peak RSS between :meth:`start` and :meth:`stop` (see the module docstring)."""

    def __init__(self):
        self.method = METHOD_HWM if _can_reset() else METHOD_RUSAGE
        self._before = None

    def start(self) -> None:
        if self.method == METHOD_HWM:
            _reset()
        self._before = _rss_mb()

    def stop(self) -> dict:
        peak = _status_mb("VmHWM") if self.method == METHOD_HWM else _rusage_mb()
        before = self._before if self._before is not None else 0.0
        return {
            "peak_rss_mb": round(peak, 2),
            "rss_before_mb": round(before, 2),
            "peak_delta_mb": round(max(peak - before, 0.0), 2),
            "method": self.method,
        }


def _can_reset() -> bool:
    if not (_STATUS.is_file() and _CLEAR.exists()):
        return False
    try:
        _reset()
    except OSError:
        return False
    return _status_mb("VmHWM") > 0


def _reset() -> None:
    with open(_CLEAR, "w") as fh:
        fh.write("5")


def _status_mb(key: str) -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss else _rusage_mb()


def _rusage_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
