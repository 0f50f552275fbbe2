"""The one module that wraps the LiteRT interpreter (``ai_edge_litert``, never ``tf.lite``).

:class:`LiteRTRuntime` runs a ``.tflite`` file with any number of named inputs and outputs
(named by the file's signature, ``serving_default`` or the only one, else by tensor names).
Kernel settings:

* XNNPACK delegate on (LiteRT's default on CPU), or LiteRT's builtin kernels without delegates,
  or the slow reference kernels (for debugging numerics);
* external delegates from shared libraries (GPU, Edge TPU, Hexagon, Arm NN ...):
  :data:`KNOWN_DELEGATES` lists the usual library names; one that is not on this host raises
  :class:`DelegateUnavailable` (a :class:`RuntimeUnavailable`) naming what was looked for.

A model that needs ops this LiteRT build lacks (Flex or custom ops) raises
:class:`UnsupportedOpsError` naming them, read from the flatbuffer.

Example:
    >>> with LiteRTRuntime("detector_int8.tflite", threads=2) as rt:
    ...     [o.name for o in rt.outputs], rt.run({"image": x})["boxes"].shape
    (['boxes', 'scores'], (8, 4))
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError, MissingDependencyError
from kvision.runtime.base import (
    Runtime,
    RuntimeUnavailable,
    TensorInfo,
    UnsupportedOpsError,
)

INSTALL_HINT = "LiteRT is missing: `pip install ai-edge-litert==2.3.*`."
SIGNATURE_KEY = "serving_default"
# delegate name -> shared library names tried with ctypes.util.find_library / dlopen
KNOWN_DELEGATES: dict[str, tuple[str, ...]] = {
    "gpu": ("libtensorflowlite_gpu_delegate.so", "libLiteRtGpuAccelerator.so"),
    "edgetpu": ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll"),
    "hexagon": ("libhexagon_interface.so",),
    "armnn": ("libarmnnDelegate.so", "libarmnnDelegate.so.29"),
}


class DelegateUnavailable(RuntimeUnavailable):
    """An external LiteRT delegate library cannot be loaded on this machine."""


def litert_module(name: str = "interpreter"):
    """``ai_edge_litert.<name>``, imported on first use.

    Raises:
        MissingDependencyError: ``ai-edge-litert`` is not installed (with the install command).
    """
    try:
        return importlib.import_module(f"ai_edge_litert.{name}")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(INSTALL_HINT) from exc


class LiteRTRuntime(Runtime):
    """Run a ``.tflite`` model with the LiteRT interpreter.

    Args:
        path: ``.tflite`` file.
        threads: interpreter threads (default ``None``: LiteRT's default).
        xnnpack: apply the XNNPACK delegate (default True).
        delegate: external delegate: a known name (``"gpu"``, ``"edgetpu"``, ``"hexagon"``,
            ``"armnn"``) or a shared-library path (default ``None``: none).
        delegate_options: options passed to that delegate's ``load_delegate`` (default none).
        reference_kernels: use the slow reference kernels (no delegates; default False).
        delegates: more delegates, each a library path (or name) or a ``(library, options)``
            pair, loaded as given (default none). Ops they do not take run on the builtin
            kernels (with XNNPACK when ``xnnpack``).
        signature: signature key naming the tensors (default ``serving_default``, else the
            only one; tensor names when the file has none for the main graph).

    Raises:
        InputValueError: a bad ``threads`` or ``delegate``.

    Example:
        >>> with LiteRTRuntime("m.tflite", threads=1, xnnpack=False) as rt:
        ...     probs = rt.predict(x)
    """

    default_batch = 64

    def __init__(
        self,
        path,
        threads: int | None = None,
        xnnpack: bool = True,
        delegate: str | None = None,
        delegate_options: dict | None = None,
        reference_kernels: bool = False,
        delegates=(),
        signature: str | None = None,
    ):
        super().__init__(path, threads)
        if delegate is not None and (not isinstance(delegate, str) or not delegate):
            raise InputValueError(
                "`delegate` should be a delegate name "
                f"{sorted(KNOWN_DELEGATES)} or a shared-library path. Received: {delegate!r}"
            )
        self.reference_kernels = bool(reference_kernels)
        self.xnnpack = bool(xnnpack) and delegate is None and not self.reference_kernels
        self.delegate = delegate
        self.delegate_options = dict(delegate_options or {})
        self.delegates = list(delegates)
        self.signature_key = signature
        self.name = (
            "litert_delegate"
            if delegate is not None
            else "litert"
            if self.xnnpack
            else "litert_no_xnnpack"
        )
        self._interp = None
        self._index: dict[str, int] = {}
        self._shapes: dict[int, tuple] = {}

    def _options(self) -> dict:
        return {"xnnpack": self.xnnpack, "delegate": self.delegate}

    @property
    def interpreter(self):
        """The underlying ``ai_edge_litert`` interpreter (tensor listings, low-level timing)."""
        self.load()
        return self._interp

    def tensor_index(self, name: str) -> int:
        """The interpreter's tensor index of input or output ``name`` (as in ``inputs``)."""
        self.load()
        if name not in self._index:
            raise InputValueError(
                f"{self.path.name} has no input or output {name!r}. Found: {sorted(self._index)}"
            )
        return self._index[name]

    @property
    def uses_delegate(self) -> bool:
        """True when a delegate (XNNPACK or external) took over part of the graph."""
        ops = self.interpreter._get_ops_details()
        return any(op["op_name"] == "DELEGATE" for op in ops)

    def _load(self):
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {self.path}")
        try:
            lite = litert_module()
        except MissingDependencyError as exc:
            raise RuntimeUnavailable(str(exc)) from exc
        specs = list(self.delegates)
        if self.delegate is not None:
            specs.append((find_delegate_library(self.delegate), self.delegate_options))
        handles = [_load_delegate(lite, d) for d in specs]
        if self.reference_kernels:
            resolver = lite.OpResolverType.BUILTIN_REF
        elif self.xnnpack:
            resolver = lite.OpResolverType.AUTO
        else:
            resolver = lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interp = lite.Interpreter(
                model_path=str(self.path),
                num_threads=self.threads,
                experimental_delegates=handles or None,
                experimental_op_resolver_type=resolver,
            )
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise _load_error(self.path, exc) from exc
        self._interp = interp
        names = self._signature_names(interp)
        inputs = [self._info(d, names) for d in interp.get_input_details()]
        outputs = [self._info(d, names) for d in interp.get_output_details()]
        self._index = {n: i for i, n in names.items()}
        self._shapes = {int(d["index"]): tuple(d["shape"]) for d in interp.get_input_details()}
        return inputs, outputs

    def _signature_names(self, interp) -> dict[int, str]:
        """Tensor index -> signature name, for the signature of the main graph (else tensor
        names: a signature of another subgraph does not run with ``invoke()``)."""
        details = interp.get_input_details() + interp.get_output_details()
        names = {int(d["index"]): d["name"] for d in details}
        sigs = interp._get_full_signature_list()
        key = self.signature_key
        if key is None:
            key = SIGNATURE_KEY if SIGNATURE_KEY in sigs else None
            if key is None and len(sigs) == 1:
                key = next(iter(sigs))
        elif key not in sigs:
            raise InputValueError(
                f"{self.path.name} has no signature {key!r}. Found: {sorted(sigs)}"
            )
        if key is None:
            return names
        sig = sigs[key]
        mapped = {int(i): n for n, i in {**sig["inputs"], **sig["outputs"]}.items()}
        main = interp._interpreter.GetSubgraphIndexFromSignature(key) == 0
        if main and set(mapped) == set(names):
            return mapped
        if self.signature_key is not None:
            raise InputValueError(
                f"Signature {key!r} of {self.path.name} does not name the main graph's tensors."
            )
        return names

    @staticmethod
    def _info(d: dict, names: dict[int, str]) -> TensorInfo:
        scale, zero_point = d["quantization"]
        shape = tuple(None if int(s) < 0 else int(s) for s in d["shape_signature"])
        return TensorInfo(
            names[int(d["index"])], shape, np.dtype(d["dtype"]).name, float(scale), int(zero_point)
        )

    def _invoke(self, tensors):
        interp = self._interp
        resized = False
        for name, x in tensors.items():
            index = self._index[name]
            if x.shape != self._shapes[index]:
                interp.resize_tensor_input(index, list(x.shape))
                self._shapes[index] = x.shape
                resized = True
        if resized:
            interp.allocate_tensors()
        for name, x in tensors.items():
            interp.set_tensor(self._index[name], x)
        interp.invoke()
        return {o.name: interp.get_tensor(self._index[o.name]) for o in self._io[1]}

    def _close(self) -> None:
        self._interp = None
        self._index, self._shapes = {}, {}


def _load_error(path: Path, exc: Exception) -> Exception:
    """An :class:`UnsupportedOpsError` naming the Flex / custom ops when the model has any,
    else an ``InputValueError`` naming the file."""
    from kvision.runtime.tflite_ops import describe_non_builtin, split_ops, tflite_op_names

    text = " ".join(str(exc).split())
    try:
        flex, custom = split_ops(tflite_op_names(path))
    except ValueError:
        flex, custom = [], []
    unresolved = [op for op in flex + custom if op in text]
    if unresolved or flex or custom:
        ops = unresolved or flex + custom
        return UnsupportedOpsError(
            f"{path.name} needs {describe_non_builtin(*split_ops(ops))} that LiteRT here does not "
            f"have; register their kernels, or convert with builtin ops only ({text[:300]})",
            ops=ops,
        )
    return InputValueError(f"Cannot load TFLite model {path}: {text}")


def _load_delegate(lite, spec):
    library, options = (spec, None) if isinstance(spec, str | Path) else spec
    try:
        return lite.load_delegate(str(library), options)
    except (ValueError, OSError, RuntimeError) as exc:
        raise DelegateUnavailable(f"loading delegate {library} failed: {exc}") from exc


def find_delegate_library(delegate: str) -> str:
    """The shared library to load for ``delegate`` (a known name or a path).

    Raises:
        DelegateUnavailable: the library is not on this host; the message names the files
            looked for, so a benchmark row says exactly why the delegate is missing.
        InputValueError: neither a known name nor a library path.

    Example:
        >>> find_delegate_library("/opt/lib/libedgetpu.so.1")
        '/opt/lib/libedgetpu.so.1'
    """
    if delegate in KNOWN_DELEGATES:
        names = KNOWN_DELEGATES[delegate]
        for name in names:
            found = ctypes.util.find_library(name.removeprefix("lib").split(".so")[0])
            if found:
                return found
            if _dlopen_ok(name):
                return name
        raise DelegateUnavailable(
            f"{delegate} delegate not available here: none of {list(names)} found on the library "
            "path (install the vendor's delegate library, or pass its path)"
        )
    if os.sep in delegate or delegate.endswith((".so", ".dylib", ".dll")) or ".so." in delegate:
        if not Path(delegate).is_file():
            raise DelegateUnavailable(f"delegate library not available here: {delegate} not found")
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
