"""The ``Runtime`` base every inference engine implements: named inputs in, named outputs out.

A runtime runs one artifact (``.tflite`` file, SavedModel folder, ``.keras`` / ``.h5`` /
``.hdf5`` file, ``.onnx`` file) with any number of named inputs and outputs::

    with open_runtime("face_detector.tflite") as rt:
        rt.inputs            # [TensorInfo(name='image', shape=(None, 128, 128, 3), dtype='uint8')]
        rt.outputs           # [TensorInfo('boxes', ...), TensorInfo('scores', ...)]
        out = rt.run({"image": pixels})      # {"boxes": float32 [N, ...], "scores": ...}

Every input is fed in its own tensor's domain (``kvision.models.contract.to_input_tensor``): a
float tensor takes model-scale floats; a quantized integer tensor takes floats quantized with
its own scale / zero point; an integer tensor without quantization parameters takes whole
numbers in its dtype's range (raw pixels 0..255 for ``uint8``), never rounded floats. Every
numeric output comes back as float32, dequantized with its own scale / zero point.

Batches: ``run`` takes any number of rows ``N`` (the same for every input). A free batch
dimension is sized per call (LiteRT resizes its input tensors); large batches are split into
chunks of ``batch_size`` rows; an artifact with a fixed batch ``B`` runs ``B`` rows at a time,
the last chunk zero-padded and the padding dropped from the outputs.

For one-input, one-output artifacts ``input_spec``, ``output_spec`` and ``predict(x)`` are the
single-tensor conveniences every classifier caller uses.

A runtime that cannot run on this host (package missing, no GPU, delegate library absent)
raises :class:`RuntimeUnavailable` from ``load()`` with the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError

PRIMARY_OUTPUT = "probabilities"


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here (not installed, no device, no delegate library); says why."""


class UnsupportedOpsError(InputValueError):
    """An artifact needs ops this runtime does not have (Flex or custom ops); ``ops`` names them.

    Example:
        >>> raise UnsupportedOpsError("m.tflite needs custom op(s) ['Foo']", ops=["Foo"])
    """

    def __init__(self, message: str, ops=()):
        super().__init__(message)
        self.ops = list(ops)


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor as the artifact declares it.

    Args:
        name: the name ``run`` uses: a signature key (``"images"``, ``"boxes"``), else the
            tensor's name.
        shape: dimensions, ``None`` for a free one (e.g. ``(None, 28, 28, 1)``).
        dtype: NumPy dtype name of the artifact's tensor (``"float32"``, ``"int8"``, ``"uint8"``,
            ``"float16"``).
        scale: quantization scale (default ``0.0``: not quantized).
        zero_point: quantization zero point (default ``0``).

    Example:
        >>> TensorInfo("images", (None, 28, 28, 1), "float32").to_dict()["shape"]
        [None, 28, 28, 1]
    """

    name: str
    shape: tuple
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


class Runtime:
    """Shared plumbing: lazy ``load()``, feed checks, batching, context manager, ``describe()``.

    Subclasses set ``name`` (and ``default_batch``: rows per call, ``None`` for no limit) and
    implement ``_load()`` returning ``(inputs, outputs)`` as lists of :class:`TensorInfo`,
    ``_invoke(tensors)`` on ``{input name: array in the tensor's dtype}`` returning
    ``{output name: array}``, and optionally ``_close()`` and ``_options()``.

    Args:
        path: the artifact.
        threads: thread count for runtimes that take one (default ``None``: the runtime's own).

    Raises:
        InputValueError: ``threads`` is not a positive integer or None.
    """

    name = "base"
    default_batch: int | None = 64

    def __init__(self, path, threads: int | None = None):
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise InputValueError(
                f"`threads` should be a positive integer or None. Received: threads={threads!r}"
            )
        self.path = Path(path)
        self.threads = threads
        self._io: tuple[list[TensorInfo], list[TensorInfo]] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def load(self) -> None:
        """Load the artifact (idempotent). Raises ``RuntimeUnavailable`` or a load error."""
        if self._io is None:
            inputs, outputs = self._load()
            self._io = (list(inputs), list(outputs))

    def close(self) -> None:
        """Release the model; ``load()`` may be called again afterwards."""
        if self._io is not None:
            self._close()
        self._io = None

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def loaded(self) -> bool:
        return self._io is not None

    # -- tensors --------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        """Every input, in the artifact's order."""
        self.load()
        return list(self._io[0])

    @property
    def outputs(self) -> list[TensorInfo]:
        """Every output, in the artifact's order."""
        self.load()
        return list(self._io[1])

    @property
    def input_spec(self) -> TensorInfo:
        """The one input; raises ``InputValueError`` for an artifact with several."""
        inputs = self.inputs
        if len(inputs) != 1:
            raise InputValueError(
                f"{self.path.name} has {len(inputs)} inputs {[i.name for i in inputs]}; use "
                "`inputs` and `run({name: array})`."
            )
        return inputs[0]

    @property
    def output_spec(self) -> TensorInfo:
        """The primary output: the only one, else ``probabilities``, else the only float one.

        Raises:
            InputValueError: several outputs and none of them primary (use ``run``).
        """
        found = primary_output(self.outputs)
        if found is None:
            names = [o.name for o in self.outputs]
            raise InputValueError(
                f"{self.path.name} has outputs {names}; none is the one output (or one named "
                f"{PRIMARY_OUTPUT!r}). Use `run()`, which returns every output by name."
            )
        return found

    def describe(self) -> dict:
        """JSON-ready settings of this runtime (name, threads, options)."""
        return {"runtime": self.name, "threads": self.threads, **self._options()}

    # -- inference ------------------------------------------------------------------------
    def run(self, feeds, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Run the artifact; every output by name, float32 ``[N, ...]`` (dequantized).

        Args:
            feeds: ``{input name: array [N, ...]}`` in model scale (see the module docstring),
                or one array when the artifact has one input. An array without the batch axis
                is one row.
            batch_size: rows per call (default: the runtime's ``default_batch``); an artifact
                with a fixed batch ``B`` accepts only ``None`` or ``B``.

        Raises:
            InputValueError: unknown or missing input names, wrong shapes, different row
                counts, values outside a raw integer input's domain, or a bad ``batch_size``.

        Example:
            >>> rt.run({"image": x})["scores"].shape
            (8, 3)
        """
        self.load()
        inputs, outputs = self._io
        arrays, n = check_feeds(feeds, inputs, self.path)
        step, fixed = self._step(batch_size, inputs)
        if n == 0:
            return {o.name: _empty(o) for o in outputs}
        tensors = {i.name: to_tensor(arrays[i.name], i, self._where(i)) for i in inputs}
        if n <= step and (fixed is None or n == fixed):
            raw = self._invoke(tensors)
            return {o.name: to_float(raw[o.name], o) for o in outputs}
        parts: dict[str, list] = {o.name: [] for o in outputs}
        for start in range(0, n, step):
            chunk = {k: v[start : start + step] for k, v in tensors.items()}
            rows = min(step, n - start)
            size = rows
            if fixed is not None and rows < fixed:
                chunk = {k: _pad(v, fixed) for k, v in chunk.items()}
                size = fixed
            raw = self._invoke(chunk)
            for o in outputs:
                y = np.asarray(raw[o.name])
                if y.ndim == 0 or y.shape[0] != size:
                    raise InputValueError(
                        f"Output {o.name!r} of {self.path.name} has shape {list(y.shape)}, "
                        f"without a batch axis of {size}: run at most {step} rows per call."
                    )
                parts[o.name].append(to_float(y[:rows], o))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """The primary output (see ``output_spec``) for the one input ``x`` ``[N, ...]``."""
        name = self.output_spec.name
        return self.run(x, batch_size)[name]

    def _where(self, info: TensorInfo) -> str:
        """What errors about input ``info`` name (the file, and the input when several)."""
        name = self.path.name
        return name if len(self._io[0]) == 1 else f"{name} input {info.name!r}"

    def _step(self, batch_size, inputs) -> tuple[int, int | None]:
        fixed = fixed_batch(inputs)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise InputValueError(
                f"`batch_size` should be a positive integer. Received: batch_size={batch_size!r}"
            )
        if fixed is not None:
            if batch_size not in (None, fixed):
                raise InputValueError(
                    f"{self.path.name} has a fixed batch size {fixed}; `batch_size` should be "
                    f"None or {fixed}. Received: batch_size={batch_size}"
                )
            return fixed, fixed
        step = batch_size or self.default_batch or np.iinfo(np.int64).max
        return int(step), None

    # -- to implement ---------------------------------------------------------------------
    def _load(self) -> tuple[list[TensorInfo], list[TensorInfo]]:  # pragma: no cover
        raise NotImplementedError

    def _invoke(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _options(self) -> dict:
        return {}


def primary_output(outputs: list[TensorInfo]) -> TensorInfo | None:
    """The only output, else the one named ``probabilities``, else the only float one."""
    if len(outputs) == 1:
        return outputs[0]
    named = [o for o in outputs if o.name == PRIMARY_OUTPUT]
    if named:
        return named[0]
    floats = [o for o in outputs if _kind(o.dtype) == "f"]
    return floats[0] if len(floats) == 1 else None


def fixed_batch(inputs: list[TensorInfo]) -> int | None:
    """The fixed leading dimension of the inputs (``None`` when free or when there is none)."""
    if not inputs or not inputs[0].shape:
        return None
    first = inputs[0].shape[0]
    return int(first) if first is not None else None


def check_feeds(feeds, inputs: list[TensorInfo], path=None) -> tuple[dict, int]:
    """``({name: array with a batch axis}, N)`` for ``feeds``, checked against ``inputs``.

    Raises:
        InputValueError: names, shapes or row counts that do not match (see ``Runtime.run``).
    """
    names = [i.name for i in inputs]
    label = _Label(path)
    if not isinstance(feeds, Mapping):
        if len(inputs) != 1:
            raise InputValueError(
                f"{label} has {len(inputs)} inputs {names}: pass `feeds` as {{name: array}}. "
                f"Received: {type(feeds).__name__}"
            )
        feeds = {names[0]: feeds}
        single = True
    else:
        single = False
        unknown = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            raise InputValueError(
                f"`feeds` should name the inputs of {label}: {names}. "
                f"Received: unknown {unknown}, missing {missing}"
            )
    arrays, rows = {}, {}
    for info in inputs:
        what = "x" if single else f"feeds[{info.name!r}]"
        x = _as_batch(feeds[info.name], info, what, label)
        arrays[info.name] = x
        rows[info.name] = len(x)
    if len(set(rows.values())) > 1:
        raise InputValueError(
            f"Every input of {label} needs the same number of rows. Received: {rows}"
        )
    return arrays, next(iter(rows.values()), 0)


def check_batch(x, spec: TensorInfo, path=None) -> np.ndarray:
    """``x`` as a float32 batch matching ``spec.shape[1:]``; a single sample gets a batch axis.

    Raises:
        InputValueError: wrong rank or size (the message gives both shapes), or not numbers.
    """
    return _as_batch(x, spec, "x", _Label(path)).astype(np.float32, copy=False)


class _Label:
    """The artifact's file name for messages, computed only when a message is made."""

    def __init__(self, path):
        self.path = path

    def __str__(self) -> str:
        return Path(self.path).name if self.path is not None else "the artifact"


def _as_batch(x, info: TensorInfo, what: str, label) -> np.ndarray:
    x = np.asarray(x)
    want = tuple(info.shape[1:])
    if x.ndim == len(want):
        x = x[None]
    ok = x.ndim == len(want) + 1 and all(
        w is None or w == g for w, g in zip(want, x.shape[1:], strict=True)
    )
    if not ok:
        dims = ", ".join("?" if d is None else str(d) for d in want)
        raise InputValueError(
            f"`{what}` should have shape [N, {dims}] for {label}. Received: {what}.shape={x.shape}"
        )
    if x.dtype.kind not in "iuf" and _kind(info.dtype) in "fiu":
        raise InputValueError(f"`{what}` should hold real numbers. Received: dtype={x.dtype}")
    return x


def to_tensor(x: np.ndarray, info: TensorInfo, where: str = "input") -> np.ndarray:
    """Model-domain values -> the array the input tensor ``info`` is given (see the module
    docstring; ``kvision.models.contract.to_input_tensor`` for numbers, as is otherwise).

    A quantized integer tensor gets ``clip(round(x / scale) + zero_point)`` in its dtype, the
    formula of ``to_input_tensor``, without re-reading the dtype on every call.
    """
    kind, target, lo, hi = _plan(info.dtype)
    if kind in "iu" and info.scale:
        q = np.round(np.asarray(x).astype(np.float32) / np.float32(info.scale)) + info.zero_point
        return np.clip(q, lo, hi).astype(target)
    if kind == "f" and target is not None:
        return np.asarray(x).astype(target, copy=False)
    if kind in "fiu":
        from kvision.models.contract import to_input_tensor

        return to_input_tensor(x, info.dtype, info.scale, info.zero_point, where=where)
    if kind == "b":
        return np.asarray(x).astype(bool)
    return np.asarray(x)


@functools.lru_cache(maxsize=64)
def _plan(dtype: str) -> tuple:
    """``(kind, numpy dtype or None, min, max)`` of a tensor dtype name."""
    kind = _kind(dtype)
    if kind in "iu":
        info = np.iinfo(dtype)
        return kind, np.dtype(dtype), info.min, info.max
    if kind == "f" and dtype != "bfloat16":
        return kind, np.dtype(dtype), None, None
    return kind, None, None, None


def to_float(y, info: TensorInfo) -> np.ndarray:
    """An output array as float32: dequantized with ``info``'s scale / zero point when it has
    them; non-numeric outputs (strings) are returned as they are."""
    y = np.asarray(y)
    if y.dtype.kind in "iu" and info.scale:
        return (y.astype(np.float32) - info.zero_point) * np.float32(info.scale)
    if y.dtype.kind in "fiub":
        return y.astype(np.float32, copy=False)
    return y


def _empty(info: TensorInfo) -> np.ndarray:
    return np.zeros((0, *(d or 0 for d in info.shape[1:])), np.float32)


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
    pad = np.zeros((rows - len(x), *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


def _kind(dtype: str) -> str:
    if dtype == "bfloat16":
        return "f"
    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "?"
