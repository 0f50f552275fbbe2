"""The ``Runtime`` interface every inference engine in ``deploy`` implements, and its helpers.

A runtime runs one artifact (``.tflite`` file, SavedModel folder, ``.keras`` / ``.h5`` file) on
float32 inputs in model scale ``[N, H, W, C]`` and returns float32 outputs ``[N, ...]``, whatever
the artifact's own input dtype (an int8 model is quantized and dequantized inside). The input
spec (shape, dtype, quantization scale / zero-point) is read from the artifact itself, so
artifacts kvision did not produce work as long as they have one image input and one output::

    rt = LiteRTRuntime("model.tflite", threads=2)
    rt.load()
    rt.input_spec          # TensorInfo(name='images', shape=(None, 28, 28, 1), dtype='int8', ...)
    probs = rt.predict(x)  # float32 [N, 10]
    rt.close()

A runtime that cannot run on this host (package not installed, no GPU, delegate library absent)
raises :class:`RuntimeUnavailable` from ``load()`` with the reason; the benchmark turns it into
an ``unavailable`` row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from kvision.errors import InputValueError

ARTIFACT_FORMATS = ("tflite", "saved_model", "keras", "onnx")


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here (not installed, no device, no delegate library); says why."""


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor as the artifact declares it.

    Args:
        name: tensor or signature key name (e.g. ``"images"``).
        shape: dimensions, ``None`` for a free one (e.g. ``(None, 28, 28, 1)``).
        dtype: NumPy dtype name of the artifact's tensor (``"float32"``, ``"int8"``, ``"uint8"``).
        scale: quantization scale (``0.0`` when the tensor is not quantized).
        zero_point: quantization zero-point (``0`` when not quantized).

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


@runtime_checkable
class Runtime(Protocol):
    """What every runtime offers (see the module docstring)."""

    name: str
    path: Path

    def load(self) -> None: ...

    @property
    def input_spec(self) -> TensorInfo: ...

    @property
    def output_spec(self) -> TensorInfo: ...

    def predict(self, x) -> np.ndarray: ...

    def close(self) -> None: ...

    def describe(self) -> dict: ...


class BaseRuntime:
    """Shared plumbing: lazy ``load()``, input checks, context manager, ``describe()``.

    Subclasses set ``name`` and implement ``_load()`` (returning ``(input_spec, output_spec)``),
    ``_predict(x)`` on a checked float32 batch, and optionally ``_close()``.
    """

    name = "base"

    def __init__(self, path, threads: int | None = None):
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise InputValueError(
                f"`threads` should be a positive integer or None. Received: threads={threads!r}"
            )
        self.path = Path(path)
        self.threads = threads
        self._specs: tuple[TensorInfo, TensorInfo] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def load(self) -> None:
        """Load the artifact (idempotent). Raises ``RuntimeUnavailable`` / load errors."""
        if self._specs is None:
            self._specs = self._load()

    def close(self) -> None:
        """Release the model; ``load()`` may be called again afterwards."""
        if self._specs is not None:
            self._close()
        self._specs = None

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def loaded(self) -> bool:
        return self._specs is not None

    # -- specs ----------------------------------------------------------------------------
    @property
    def input_spec(self) -> TensorInfo:
        self.load()
        return self._specs[0]

    @property
    def output_spec(self) -> TensorInfo:
        self.load()
        return self._specs[1]

    def describe(self) -> dict:
        """JSON-ready settings of this runtime (name, threads, options)."""
        return {"runtime": self.name, "threads": self.threads, **self._options()}

    # -- inference ------------------------------------------------------------------------
    def predict(self, x) -> np.ndarray:
        """Run float32 inputs in model scale ``[N, H, W, C]`` (or one ``[H, W, C]``)."""
        self.load()
        x = check_batch(x, self.input_spec, self.path)
        return np.asarray(self._predict(x), dtype=np.float32)

    # -- to implement ---------------------------------------------------------------------
    def _load(self) -> tuple[TensorInfo, TensorInfo]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _options(self) -> dict:
        return {}


def check_batch(x, spec: TensorInfo, path=None) -> np.ndarray:
    """``x`` as a float32 batch matching ``spec.shape[1:]``; a single image gets a batch axis.

    Raises:
        ValueError: wrong rank or size; the message gives the expected and received shapes.
    """
    x = np.asarray(x)
    want = tuple(spec.shape[1:])
    if x.ndim == len(want):
        x = x[None]
    ok = x.ndim == len(want) + 1 and all(
        w is None or w == g for w, g in zip(want, x.shape[1:], strict=True)
    )
    if not ok:
        dims = ", ".join("?" if d is None else str(d) for d in want)
        where = f" for {Path(path).name}" if path is not None else ""
        raise InputValueError(
            f"`x` should have shape [N, {dims}]{where}. Received: x.shape={x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputValueError(f"`x` should hold real numbers. Received: dtype={x.dtype}")
    return x.astype(np.float32, copy=False)


def detect_format(path) -> str:
    """``"tflite"``, ``"saved_model"``, ``"keras"`` or ``"onnx"`` for an artifact path.

    A SavedModel may be given as its version folder (with ``saved_model.pb``) or as the model
    folder holding numeric versions (the highest is used, as TF Serving does).

    Example:
        >>> detect_format("tflite_models/classifier_float32.tflite")
        'tflite'
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Artifact not found: {p}")
    if p.is_file() and p.suffix == ".tflite":
        return "tflite"
    if p.is_file() and p.suffix in (".keras", ".h5"):
        return "keras"
    if p.is_file() and p.suffix == ".onnx":
        return "onnx"
    if p.is_dir() and ((p / "saved_model.pb").is_file() or _versions(p)):
        return "saved_model"
    raise InputValueError(
        f"Cannot tell the format of {p}: expected a .tflite, .keras, .h5 or .onnx file, or a "
        "SavedModel folder (with saved_model.pb, or numeric version sub-folders)."
    )


def saved_model_version_dir(path) -> Path:
    """The SavedModel version folder for ``path`` (itself, or its highest numeric version)."""
    p = Path(path)
    if (p / "saved_model.pb").is_file():
        return p
    versions = _versions(p)
    if not versions:
        raise FileNotFoundError(
            f"No saved_model.pb in {p} and no numeric version folder with one "
            f"(expected {p / '1' / 'saved_model.pb'})."
        )
    return p / str(max(versions))


def _versions(p: Path) -> list[int]:
    return [
        int(d.name)
        for d in p.iterdir()
        if d.is_dir() and d.name.isdigit() and (d / "saved_model.pb").is_file()
    ]


def artifact_contract(path, spec: TensorInfo | None = None):
    """``(InputContract, source)`` for an artifact; ``source`` is ``"file"`` or ``"derived"``.

    The contract kvision saved beside the artifact wins, after a check against the input spec
    (``InputContract.check_tensor``: a contract that scales pixels to [0, 1] for an integer
    input without quantization parameters is refused). Without one (a foreign model) it is
    derived from the input spec by ``InputContract.for_tensor``, the one rule: size and
    channels from the shape; a float input takes pixels scaled to [0, 1]; a quantized
    uint8/int8 input maps pixel ``p`` to ``(p - zero_point) * scale`` (the artifact's own
    calibration); an integer input without quantization takes raw pixels (``input_domain``
    ``"uint8"``, scale 1). Labels are then empty (the caller names outputs ``"0"``, ``"1"`` ...).

    Args:
        path: the artifact.
        spec: its input spec (needed when no contract file exists; checked against one).

    Raises:
        FileNotFoundError: no contract file and no ``spec``.
        ValueError: the contract file contradicts ``spec``, or ``spec`` is not an image input
            (both messages name the artifact).
    """
    from kvision.export.artifact import load_contract
    from kvision.models.contract import InputContract

    p = Path(path)
    try:
        if p.is_dir() and not (p / "saved_model.pb").is_file():
            p = saved_model_version_dir(p)
        contract = load_contract(p)
    except FileNotFoundError:
        contract = None
    if contract is not None:
        if spec is not None:
            contract.check_tensor(spec.dtype, spec.quantized, where=str(p))
        return contract, "file"
    if spec is None:
        raise FileNotFoundError(f"No input contract beside {p} and no input spec given.")
    derived = InputContract.for_tensor(
        spec.shape, spec.dtype, spec.scale, spec.zero_point, where=str(p)
    )
    return derived, "derived"
