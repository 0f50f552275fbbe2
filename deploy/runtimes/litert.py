"""LiteRT runtime: a ``.tflite`` file through :class:`kvision.export.litert.LiteRTModel`.

Three kernel settings, each a runtime name in the registry:

* ``litert``: XNNPACK delegate on (LiteRT's default on CPU), 1..N threads.
* ``litert_no_xnnpack``: LiteRT's optimized builtin kernels without any delegate.
* ``litert_delegate``: an external delegate loaded from a shared library (GPU, Edge TPU,
  Hexagon, Arm NN ...). :data:`KNOWN_DELEGATES` lists the usual library names; a library that is
  not on this host makes ``load()`` raise :class:`RuntimeUnavailable` naming what was looked for.

Example:
    >>> rt = LiteRTRuntime("tflite_models/classifier_int8.tflite", threads=2)
    >>> rt.load(); rt.input_spec.dtype, rt.input_spec.scale > 0
    ('int8', True)
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

import numpy as np

from deploy.runtimes.base import BaseRuntime, RuntimeUnavailable, TensorInfo
from kvision.errors import InputValueError
from kvision.models.contract import to_input_tensor

# delegate name -> shared library names tried with ctypes.util.find_library / dlopen
KNOWN_DELEGATES: dict[str, tuple[str, ...]] = {
    "gpu": ("libtensorflowlite_gpu_delegate.so", "libLiteRtGpuAccelerator.so"),
    "edgetpu": ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll"),
    "hexagon": ("libhexagon_interface.so",),
    "armnn": ("libarmnnDelegate.so", "libarmnnDelegate.so.29"),
}


class LiteRTRuntime(BaseRuntime):
    """Run a ``.tflite`` model with the LiteRT interpreter.

    Args:
        path: ``.tflite`` file.
        threads: interpreter threads (default ``None``: LiteRT's default).
        xnnpack: apply the XNNPACK delegate (default True).
        delegate: external delegate: a known name (``"gpu"``, ``"edgetpu"``, ``"hexagon"``,
            ``"armnn"``) or a shared-library path (default ``None``: no external delegate).
        delegate_options: options passed to the delegate's ``load_delegate`` (default none).

    Example:
        >>> with LiteRTRuntime("m.tflite", threads=1, xnnpack=False) as rt:
        ...     probs = rt.predict(x)
    """

    def __init__(
        self,
        path,
        threads: int | None = None,
        xnnpack: bool = True,
        delegate: str | None = None,
        delegate_options: dict | None = None,
    ):
        super().__init__(path, threads)
        self.xnnpack = bool(xnnpack) and delegate is None
        self.delegate = delegate
        self.delegate_options = dict(delegate_options or {})
        if delegate is not None and (not isinstance(delegate, str) or not delegate):
            raise InputValueError(
                "`delegate` should be a delegate name "
                f"{sorted(KNOWN_DELEGATES)} or a shared-library path. Received: {delegate!r}"
            )
        self.name = (
            "litert"
            if delegate is None and self.xnnpack
            else "litert_no_xnnpack"
            if delegate is None
            else "litert_delegate"
        )
        self._model = None
        self._fast = None
        self._current_shape = None

    def _options(self) -> dict:
        return {"xnnpack": self.xnnpack, "delegate": self.delegate}

    def _load(self):
        from kvision.export.litert import LiteRTModel

        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {self.path}")
        if self.delegate is not None:
            from kvision.export.litert import DelegateUnavailable

            library = find_delegate_library(self.delegate)
            try:
                self._model = LiteRTModel(
                    self.path,
                    num_threads=self.threads,
                    use_xnnpack=False,
                    delegates=[(library, self.delegate_options)],
                )
            except DelegateUnavailable as exc:
                raise RuntimeUnavailable(
                    f"delegate {self.delegate!r} not available here: {exc}"
                ) from exc
        else:
            self._model = LiteRTModel(self.path, num_threads=self.threads, use_xnnpack=self.xnnpack)
        m = self._model
        inp, out = m.input_details[0], m.output_details[0]
        in_scale, in_zp = m.input_quantization
        out_scale, out_zp = m.output_quantization
        sig = m.signature.get("serving_default") or next(iter(m.signature.values()), None)
        in_name = sig["inputs"][0] if sig and sig.get("inputs") else inp["name"]
        out_name = sig["outputs"][0] if sig and sig.get("outputs") else out["name"]
        out_shape = tuple(None if int(d) < 0 else int(d) for d in out["shape_signature"])
        self._fast = None
        if m.input_shape[0] is None:  # a free batch dimension: resize per call size
            dtype = m.input_dtype
            in_q = None
            if dtype.kind in "iu" and in_scale:
                info = np.iinfo(dtype)
                in_q = (in_scale, in_zp, info.min, info.max)
            out_q = (out_scale, out_zp) if m.output_dtype.kind in "iu" and out_scale else None
            self._fast = (inp["index"], dtype, in_q, out["index"], out_q)
            self._current_shape = tuple(int(d) for d in inp["shape"])
        return (
            TensorInfo(in_name, m.input_shape, m.input_dtype.name, in_scale, in_zp),
            TensorInfo(out_name, out_shape, m.output_dtype.name, out_scale, out_zp),
        )

    def _predict(self, x: np.ndarray) -> np.ndarray:
        fast = self._fast
        if fast is None or len(x) == 0:
            return self._model.predict(x)
        # Cached-details path: LiteRTModel.predict re-reads the tensor details (dicts built by
        # the interpreter) several times per call, which costs more than a small model's
        # invoke(); tools/bench_harness.py measures what remains.
        interp, (in_index, in_dtype, in_q, out_index, out_q) = self._model.interpreter, fast
        if x.shape != self._current_shape:
            interp.resize_tensor_input(in_index, list(x.shape))
            interp.allocate_tensors()
            self._current_shape = x.shape
        if in_q is not None:
            scale, zero_point, lo, hi = in_q
            x = np.clip(np.round(x / scale) + zero_point, lo, hi)
        elif in_dtype.kind in "iu":  # raw integer input: whole pixel values, never rounded
            x = to_input_tensor(x, in_dtype, where=self.path.name)
        interp.set_tensor(in_index, x.astype(in_dtype, copy=False))
        interp.invoke()
        y = interp.get_tensor(out_index)
        if out_q is not None:
            return (y.astype(np.float32) - out_q[1]) * out_q[0]
        return y.astype(np.float32)

    def _close(self) -> None:
        self._model = None
        self._fast = None

    @property
    def uses_delegate(self) -> bool:
        """True when a delegate (XNNPACK or external) took over part of the graph."""
        self.load()
        return self._model.uses_delegate


def find_delegate_library(delegate: str) -> str:
    """The shared library to load for ``delegate`` (a known name or a path).

    Raises:
        RuntimeUnavailable: the library is not on this host; the message names the files
            looked for, so the benchmark row says exactly why the delegate is missing.
    """
    if delegate in KNOWN_DELEGATES:
        names = KNOWN_DELEGATES[delegate]
        for name in names:
            found = ctypes.util.find_library(name.removeprefix("lib").split(".so")[0])
            if found:
                return found
            if _dlopen_ok(name):
                return name
        raise RuntimeUnavailable(
            f"{delegate} delegate not available here: none of {list(names)} found on the library "
            "path (install the vendor's delegate library, or pass its path)"
        )
    if os.sep in delegate or delegate.endswith((".so", ".dylib", ".dll")) or ".so." in delegate:
        if not Path(delegate).is_file():
            raise RuntimeUnavailable(f"delegate library not available here: {delegate} not found")
        return delegate
    raise InputValueError(
        f"`delegate` should be one of {sorted(KNOWN_DELEGATES)} or a shared-library path. "
        f"Received: delegate={delegate!r}"
    )


def _dlopen_ok(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True
