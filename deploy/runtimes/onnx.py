"""ONNX Runtime on a tf2onnx conversion of a SavedModel (an optional extra).

``onnxruntime`` and ``tf2onnx`` are imported in ``load()`` only; when either is missing,
``load()`` raises :class:`RuntimeUnavailable` with the install command, which the benchmark
shows as an ``unavailable`` row. A ``.onnx`` file is run as is; a SavedModel is converted first
(its serving signature, opset 17) into ``cache_dir`` (default: a temporary folder removed by
``close()``); the conversion time is reported as ``conversion_s`` in ``describe()``.

Example:
    >>> rt = OnnxRuntime("export/saved_model/classifier/1", threads=2)
    >>> rt.load(); rt.predict(x).shape
    (8, 10)
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from deploy.runtimes.base import (
    BaseRuntime,
    RuntimeUnavailable,
    TensorInfo,
    saved_model_version_dir,
)
from kvision.errors import InputValueError

INSTALL_HINT = "pip install onnxruntime==1.31.1 tf2onnx==1.17.0"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPSET = 17


class OnnxRuntime(BaseRuntime):
    """Run a SavedModel (converted with tf2onnx) or a ``.onnx`` file with ONNX Runtime.

    Args:
        path: SavedModel folder or ``.onnx`` file.
        threads: ``intra_op_num_threads`` (default ``None``: ONNX Runtime's default).
        device: ``"cpu"`` (default) or ``"cuda"`` (unavailable unless the CUDA provider is).
        cache_dir: where the converted ``model.onnx`` goes (default: a temporary folder).
    """

    def __init__(self, path, threads: int | None = None, device: str = "cpu", cache_dir=None):
        super().__init__(path, threads)
        if device not in PROVIDERS:
            raise InputValueError(
                f"`device` should be one of {sorted(PROVIDERS)}. Received: device={device!r}"
            )
        self.device = device
        self.name = "onnxruntime" if device == "cpu" else "onnxruntime_cuda"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.conversion_s = None
        self._session = None
        self._tmp = None
        self._names = None

    def _options(self) -> dict:
        return {"device": self.device, "conversion_s": self.conversion_s}

    def _load(self):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable(f"onnxruntime is not installed ({INSTALL_HINT})") from exc
        provider = PROVIDERS[self.device]
        if provider not in ort.get_available_providers():
            raise RuntimeUnavailable(
                f"ONNX Runtime has no {provider} here (available: {ort.get_available_providers()})"
            )
        onnx_file = self.path if self.path.suffix == ".onnx" else self._convert()
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        self._session = ort.InferenceSession(str(onnx_file), options, providers=[provider])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise InputValueError(f"{onnx_file} should have one input. Found {len(inputs)}.")
        out = next((o for o in outputs if o.name == "probabilities"), outputs[0])
        self._names = (inputs[0].name, out.name)
        return (
            TensorInfo(inputs[0].name, _shape(inputs[0].shape), _dtype(inputs[0].type)),
            TensorInfo(out.name, _shape(out.shape), _dtype(out.type)),
        )

    def _convert(self) -> Path:
        try:
            import tensorflow as tf
            import tf2onnx
        except ImportError as exc:
            raise RuntimeUnavailable(f"tf2onnx is not installed ({INSTALL_HINT})") from exc
        folder = saved_model_version_dir(self.path)
        if self.cache_dir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="kvision_onnx_"))
        out_dir = self.cache_dir or self._tmp
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / "model.onnx"
        start = time.perf_counter()
        loaded = tf.saved_model.load(str(folder))
        signatures = dict(loaded.signatures)
        fn = signatures.get("serving_default") or next(iter(signatures.values()), None)
        if fn is None:
            raise InputValueError(f"{folder} has no signatures to convert to ONNX.")
        inputs = fn.structured_input_signature[1]
        if len(inputs) != 1:
            raise InputValueError(
                f"{folder}: the signature should have one input. Found {list(inputs)}"
            )
        name, spec = next(iter(inputs.items()))
        tf2onnx.convert.from_function(
            tf.function(lambda v: fn(**{name: v})),
            input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=name)],
            opset=OPSET,
            output_path=str(target),
        )
        self.conversion_s = time.perf_counter() - start
        return target

    def _predict(self, x: np.ndarray) -> np.ndarray:
        in_name, out_name = self._names
        from kvision.models.contract import to_input_tensor

        x = to_input_tensor(x, np.dtype(self.input_spec.dtype), where=str(self.path))
        return self._session.run([out_name], {in_name: x})[0]

    def _close(self) -> None:
        self._session = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _shape(dims) -> tuple:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in dims)


def _dtype(onnx_type: str) -> str:
    name = onnx_type.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(name, name)
