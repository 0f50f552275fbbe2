"""ONNX Runtime on a ``.onnx`` file or a tf2onnx conversion of a SavedModel (optional extra).

``onnxruntime`` and ``tf2onnx`` are imported in ``load()`` only; when either is missing,
``load()`` raises :class:`RuntimeUnavailable` with the install command (a benchmark shows an
``unavailable`` row). A ``.onnx`` file is run as is; a SavedModel is converted first (its
serving signature, every input and output by its signature key, opset 17) into ``cache_dir``
(default: a temporary folder removed by ``close()``); the conversion time is reported as
``conversion_s`` in ``describe()``.

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

from kvision.errors import InputValueError
from kvision.runtime.artifacts import saved_model_version_dir
from kvision.runtime.base import Runtime, RuntimeUnavailable, TensorInfo

INSTALL_HINT = "pip install onnxruntime==1.31.1 tf2onnx==1.17.0"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPSET = 17


class OnnxRuntime(Runtime):
    """Run a SavedModel (converted with tf2onnx) or a ``.onnx`` file with ONNX Runtime.

    Args:
        path: SavedModel folder or ``.onnx`` file.
        threads: ``intra_op_num_threads`` (default ``None``: ONNX Runtime's default).
        device: ``"cpu"`` (default) or ``"cuda"`` (unavailable unless the CUDA provider is).
        cache_dir: where the converted ``model.onnx`` goes (default: a temporary folder).

    Raises:
        InputValueError: an unknown ``device``.
    """

    default_batch = None

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
        self._names: dict[str, str] = {}

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
        inputs = [_info(t) for t in self._session.get_inputs()]
        outputs = [_info(t) for t in self._session.get_outputs()]
        # tf2onnx names tensors "<key>:0"; the runtime names them by their keys
        tensors = self._session.get_inputs() + self._session.get_outputs()
        self._names = {info.name: t.name for info, t in zip(inputs + outputs, tensors, strict=True)}
        return inputs, outputs

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
        specs = fn.structured_input_signature[1]
        names = list(specs)
        tf2onnx.convert.from_function(
            tf.function(lambda *args: fn(**dict(zip(names, args, strict=True)))),
            input_signature=[tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names],
            opset=OPSET,
            output_path=str(target),
        )
        self.conversion_s = time.perf_counter() - start
        return target

    def _invoke(self, tensors):
        feeds = {self._names[k]: v for k, v in tensors.items()}
        names = [o.name for o in self._io[1]]
        values = self._session.run([self._names[n] for n in names], feeds)
        return dict(zip(names, values, strict=True))

    def _close(self) -> None:
        self._session = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _info(t) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in t.shape)
    name = t.type.removeprefix("tensor(").removesuffix(")")
    dtype = {"float": "float32", "double": "float64", "float16": "float16"}.get(name, name)
    return TensorInfo(t.name.removesuffix(":0"), shape, dtype)
