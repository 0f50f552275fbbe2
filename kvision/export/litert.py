"""The one place kvision imports ``ai_edge_litert``: run and inspect ``.tflite`` models.

:class:`LiteRTModel` wraps ``ai_edge_litert.interpreter.Interpreter`` (never ``tf.lite``): float
inputs in model scale go in, float probabilities come out, whatever the model's I/O dtype (int8 /
uint8 / int16 inputs with quantization parameters are quantized and outputs dequantized here; an
integer input without them takes raw pixel values, whole numbers that are cast exactly, see
``kvision.models.contract.to_input_tensor``), for any number of images.
:func:`tflite_op_names` reads the op list straight from the flatbuffer, so it also works for
models the interpreter cannot load (Flex or custom ops).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.errors import InputValueError, MissingDependencyError

_INSTALL_HINT = "LiteRT is missing: `pip install ai-edge-litert==2.3.*`."
_TFLITE_IDENTIFIER = b"TFL3"
_CUSTOM = "CUSTOM"


class DelegateUnavailable(RuntimeError):
    """An external LiteRT delegate library cannot be loaded on this machine."""


def _load_delegate(lite, spec):
    library, options = (spec, None) if isinstance(spec, str | Path) else spec
    try:
        return lite.load_delegate(str(library), options)
    except (ValueError, OSError, RuntimeError) as exc:
        raise DelegateUnavailable(f"loading delegate {library} failed: {exc}") from exc


def _litert():
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(_INSTALL_HINT) from exc
    return interpreter


def is_tflite_buffer(data: bytes) -> bool:
    """True when ``data`` carries the TFLite flatbuffer identifier (``TFL3`` at bytes 4..8)."""
    return len(data) >= 8 and data[4:8] == _TFLITE_IDENTIFIER


def tflite_op_names(model) -> list[str]:
    """Sorted names of the ops a ``.tflite`` model uses, read from its flatbuffer.

    Builtin ops by their ``BuiltinOperator`` name (``CONV_2D``); custom ops by their custom code
    (Flex ops are custom ops named ``Flex<TFOp>``, e.g. ``FlexMatrixDeterminant``).

    Args:
        model: a path or the file's bytes.

    Raises:
        ValueError: the data is not a readable TFLite flatbuffer (names the file).

    Example:
        >>> tflite_op_names("classifier_float32.tflite")
        ['CONV_2D', 'FULLY_CONNECTED', 'MEAN', 'SOFTMAX']
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError(_INSTALL_HINT) from exc
    label = "model bytes" if isinstance(model, bytes | bytearray) else str(model)
    data = bytes(model) if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    if not is_tflite_buffer(data):
        raise InputValueError(f"{label} is not a TFLite flatbuffer (no 'TFL3' identifier).")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        root = schema.Model.GetRootAs(data, 0)
        ops = set()
        for i in range(root.OperatorCodesLength()):
            code = root.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = names.get(builtin, f"BUILTIN_{builtin}")
            if name == _CUSTOM:
                custom = code.CustomCode()
                name = custom.decode("utf-8", "replace") if custom else _CUSTOM
            ops.add(name)
    except Exception as exc:  # flatbuffers raises struct.error / IndexError on corrupt data
        raise InputValueError(f"{label} is not a readable TFLite flatbuffer: {exc}") from exc
    return sorted(ops)


def split_ops(ops: list[str]) -> tuple[list[str], list[str]]:
    """``(flex_ops, custom_ops)`` among op names from :func:`tflite_op_names`.

    Builtin names are upper case (``CONV_2D``); anything else is a custom op, and custom ops whose
    name starts with ``Flex`` need the TensorFlow (Flex) delegate.
    """
    flex = sorted(o for o in ops if o.startswith("Flex"))
    custom = sorted(o for o in ops if not o.startswith("Flex") and not _is_builtin_name(o))
    return flex, custom


def _is_builtin_name(name: str) -> bool:
    return name != _CUSTOM and name.upper() == name and name.replace("_", "").isalnum()


class LiteRTModel:
    """A ``.tflite`` classifier run with the LiteRT interpreter.

    Args:
        path: ``.tflite`` file.
        num_threads: interpreter threads (default ``None``: LiteRT's default, 1).
        use_xnnpack: apply the default XNNPACK delegate (default True). ``False`` uses LiteRT's
            optimized builtin kernels without delegates (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
        reference_kernels: use the slow reference kernels (``BUILTIN_REF``, no delegates; for
            debugging numerics). Implies no XNNPACK.
        delegates: external delegates, each a shared-library path (or name) or a
            ``(library, options)`` pair, loaded with ``ai_edge_litert``'s ``load_delegate``
            (default none). Ops they do not take run on the builtin kernels (with XNNPACK when
            ``use_xnnpack``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a loadable TFLite model (the message names it).
        DelegateUnavailable: a delegate library cannot be loaded here (the message names it).

    Example:
        >>> m = LiteRTModel("out/tflite/classifier_float32.tflite")
        >>> probs = m.predict(x_val[:32])            # float32 [32, num_classes]
        >>> m.op_names()
        ['CONV_2D', 'FULLY_CONNECTED', 'MEAN', 'SOFTMAX']
    """

    def __init__(
        self,
        path,
        num_threads: int | None = None,
        use_xnnpack: bool = True,
        reference_kernels: bool = False,
        delegates=(),
    ):
        lite = _litert()
        self.path = Path(path)
        self.num_threads = num_threads
        self.use_xnnpack = bool(use_xnnpack) and not reference_kernels
        self.reference_kernels = bool(reference_kernels)
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise InputValueError(
                f"`num_threads` should be a positive integer or None. "
                f"Received: num_threads={num_threads!r}"
            )
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {self.path}")
        if reference_kernels:
            resolver = lite.OpResolverType.BUILTIN_REF
        elif use_xnnpack:
            resolver = lite.OpResolverType.AUTO
        else:
            resolver = lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        handles = [_load_delegate(lite, d) for d in delegates]
        self.delegates = list(delegates)
        try:
            self._interpreter = lite.Interpreter(
                model_path=str(self.path),
                num_threads=num_threads,
                experimental_delegates=handles or None,
                experimental_op_resolver_type=resolver,
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InputValueError(f"Cannot load TFLite model {self.path}: {exc}") from exc
        if len(self.input_details) != 1 or len(self.output_details) != 1:
            raise InputValueError(
                f"{self.path} should have one input and one output. Received: "
                f"{len(self.input_details)} inputs, {len(self.output_details)} outputs."
            )

    # -- inspection -------------------------------------------------------------------------
    @property
    def interpreter(self):
        """The underlying ``ai_edge_litert`` interpreter (tensor listings, low-level timing)."""
        return self._interpreter

    @property
    def input_details(self) -> list[dict]:
        return self._interpreter.get_input_details()

    @property
    def output_details(self) -> list[dict]:
        return self._interpreter.get_output_details()

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input_details[0]["dtype"])

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self.output_details[0]["dtype"])

    @property
    def input_quantization(self) -> tuple[float, int]:
        """``(scale, zero_point)`` of the input; ``(0.0, 0)`` for a float input."""
        scale, zero_point = self.input_details[0]["quantization"]
        return float(scale), int(zero_point)

    @property
    def output_quantization(self) -> tuple[float, int]:
        scale, zero_point = self.output_details[0]["quantization"]
        return float(scale), int(zero_point)

    @property
    def input_shape(self) -> tuple:
        """Input shape with ``None`` for a free batch dimension, e.g. ``(None, 28, 28, 1)``."""
        sig = self.input_details[0]["shape_signature"]
        return tuple(None if int(d) < 0 else int(d) for d in sig)

    @property
    def input_tensor(self) -> tuple:
        """``(shape, dtype name, quantization scale, zero point)`` of the input."""
        scale, zero_point = self.input_quantization
        return self.input_shape, self.input_dtype.name, scale, zero_point

    @property
    def num_outputs(self) -> int:
        """Size of the output's last axis (e.g. the number of classes)."""
        return int(self.output_details[0]["shape"][-1])

    @property
    def signature(self) -> dict:
        """``{"serving_default": {"inputs": [...], "outputs": [...]}}`` as stored in the file."""
        return self._interpreter.get_signature_list()

    @property
    def uses_delegate(self) -> bool:
        """True when a delegate (XNNPACK) took over part of the graph."""
        return any(op["op_name"] == "DELEGATE" for op in self._interpreter._get_ops_details())

    def op_names(self) -> list[str]:
        """Sorted op names from the model file (see :func:`tflite_op_names`)."""
        return tflite_op_names(self.path)

    # -- inference --------------------------------------------------------------------------
    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """Run the model on float inputs ``x`` ``[N, H, W, C]`` (model scale); float32 outputs.

        A raw integer input (no quantization parameters) takes whole pixel values; ``x`` with
        fractions or outside the dtype's range raises ``ValueError`` instead of being rounded.

        Args:
            x: array-like of N images (a single image ``[H, W, C]`` is treated as N=1).
            batch_size: images per invoke. Default: 64 for a free batch dimension; a model with
                a fixed batch size B runs B at a time (the last chunk is zero-padded) and only
                accepts ``batch_size`` None or B.
        """
        inp, out = self.input_details[0], self.output_details[0]
        fixed = self.input_shape[0]
        want = tuple(self.input_shape[1:])
        x = np.asarray(x)
        if x.ndim == len(want):
            x = x[None]
        if tuple(x.shape[1:]) != want:
            dims = ", ".join(map(str, want))
            raise InputValueError(
                f"`x` should have shape [N, {dims}] for {self.path.name}. "
                f"Received: x.shape={x.shape}"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise InputValueError(
                f"`batch_size` should be a positive integer. Received: batch_size={batch_size!r}"
            )
        if fixed is not None:
            if batch_size not in (None, fixed):
                raise InputValueError(
                    f"{self.path.name} has a fixed batch size {fixed}; `batch_size` "
                    f"should be None or {fixed}. Received: batch_size={batch_size}"
                )
            batch_size = fixed
        else:
            batch_size = batch_size or 64
        n = len(x)
        results = []
        for start in range(0, n, batch_size):
            chunk = self._quantize_input(x[start : start + batch_size].astype(np.float32))
            rows = len(chunk)
            if fixed is not None and rows < fixed:
                pad = np.zeros((fixed - rows, *want), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            if fixed is None and tuple(self.input_details[0]["shape"]) != chunk.shape:
                self._interpreter.resize_tensor_input(inp["index"], list(chunk.shape))
                self._interpreter.allocate_tensors()
            self._interpreter.set_tensor(inp["index"], chunk)
            self._interpreter.invoke()
            y = self._interpreter.get_tensor(out["index"])[:rows]
            results.append(self._dequantize_output(y))
        if not results:
            return np.zeros((0, *self.output_details[0]["shape"][1:]), dtype=np.float32)
        return np.concatenate(results).astype(np.float32, copy=False)

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        from kvision.models.contract import to_input_tensor

        scale, zero_point = self.input_quantization
        return to_input_tensor(x, self.input_dtype, scale, zero_point, where=self.path.name)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if y.dtype.kind == "f":
            return y.astype(np.float32, copy=False)
        scale, zero_point = self.output_quantization
        y = y.astype(np.float32)
        return (y - zero_point) * scale if scale else y
