"""TensorFlow runtimes: a SavedModel's serving signature (CPU or GPU) and the Keras model itself.

The SavedModel is loaded the way TF Serving serves it: ``tf.saved_model.load`` and the
``serving_default`` signature (or the only one). Any SavedModel with one image input and one
output works (with several outputs, ``probabilities`` or the only float one is taken).

TensorFlow's thread pools are process-wide and fixed once TensorFlow starts, so these runtimes
take no ``threads`` argument; ``describe()`` says ``threads: None`` (TensorFlow's default).

Example:
    >>> rt = SavedModelRuntime("runs/x/export/saved_model/classifier")   # highest version
    >>> rt.load(); rt.input_spec.shape
    (None, 28, 28, 1)
"""

from __future__ import annotations

import numpy as np

from deploy.runtimes.base import (
    BaseRuntime,
    RuntimeUnavailable,
    TensorInfo,
    saved_model_version_dir,
)
from kvision.errors import InputValueError

DEVICES = ("cpu", "gpu")
_CHUNK = 256


class SavedModelRuntime(BaseRuntime):
    """Run a SavedModel's serving signature with TensorFlow.

    Args:
        path: SavedModel version folder, or the model folder holding numeric versions.
        device: ``"cpu"`` (default) or ``"gpu"`` (``load()`` raises ``RuntimeUnavailable`` when
            TensorFlow sees no GPU).
        signature: signature key (default ``"serving_default"``, else the only one).

    Example:
        >>> with SavedModelRuntime("export/saved_model/classifier/1", device="cpu") as rt:
        ...     probs = rt.predict(x)
    """

    def __init__(self, path, device: str = "cpu", signature: str = "serving_default"):
        super().__init__(path)
        if device not in DEVICES:
            raise InputValueError(
                f"`device` should be one of {DEVICES}. Received: device={device!r}"
            )
        self.device = device
        self.signature = signature
        self.name = f"tf_{device}"
        self._fn = None
        self._loaded = None
        self._names = None

    def _options(self) -> dict:
        return {"device": self.device, "signature": self.signature}

    def _load(self):
        import tensorflow as tf

        if self.device == "gpu" and not tf.config.list_physical_devices("GPU"):
            raise RuntimeUnavailable("TensorFlow sees no GPU on this host")
        folder = saved_model_version_dir(self.path)
        with tf.device(self._device_name()):
            self._loaded = tf.saved_model.load(str(folder))
        signatures = dict(self._loaded.signatures)
        key = self.signature if self.signature in signatures else None
        if key is None and len(signatures) == 1:
            key = next(iter(signatures))
        if key is None:
            raise InputValueError(
                f"{folder} has no `{self.signature}` signature; found {sorted(signatures)}. "
                "Pass `signature`."
            )
        self._fn = signatures[key]
        inputs = self._fn.structured_input_signature[1]
        outputs = self._fn.structured_outputs
        if len(inputs) != 1:
            raise InputValueError(
                f"Signature `{key}` of {folder} should have one (image) input. "
                f"Found {sorted(inputs)}."
            )
        in_name = next(iter(inputs))
        out_name = _pick_output(outputs, folder, key)
        self._names = (in_name, out_name)
        spec, out_spec = inputs[in_name], outputs[out_name]
        return (
            TensorInfo(in_name, tuple(spec.shape.as_list()), spec.dtype.name),
            TensorInfo(out_name, tuple(out_spec.shape.as_list()), out_spec.dtype.name),
        )

    def _device_name(self) -> str:
        return "/GPU:0" if self.device == "gpu" else "/CPU:0"

    def _predict(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        in_name, out_name = self._names
        dtype = tf.as_dtype(self.input_spec.dtype)
        out = []
        with tf.device(self._device_name()):
            for i in range(0, len(x), _CHUNK):
                chunk = _cast(x[i : i + _CHUNK], dtype.as_numpy_dtype, str(self.path))
                out.append(self._fn(**{in_name: tf.constant(chunk)})[out_name].numpy())
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def _close(self) -> None:
        self._fn = self._loaded = None


class KerasRuntime(BaseRuntime):
    """Run a tf_keras model file (``.keras`` / ``.h5``) with a traced ``model(x)`` call.

    Args:
        path: the model file (loaded with ``kvision._keras.load_model``).

    Example:
        >>> with KerasRuntime("runs/x/checkpoints/best.keras") as rt:
        ...     probs = rt.predict(x)
    """

    name = "keras"

    def __init__(self, path):
        super().__init__(path)
        self._call = None
        self._model = None

    def _load(self):
        import tensorflow as tf

        from kvision._keras import load_model

        self._model = load_model(self.path)
        shape = self._model.input_shape
        if isinstance(shape, list):
            raise InputValueError(f"{self.path} should have one (image) input. Found {len(shape)}.")
        dtype = self._model.inputs[0].dtype
        model = self._model
        spec = tf.TensorSpec([None, *shape[1:]], dtype)
        self._call = tf.function(lambda v: model(v, training=False), input_signature=[spec])
        out = self._model.output_shape
        return (
            TensorInfo(self._model.inputs[0].name, tuple(shape), tf.as_dtype(dtype).name),
            TensorInfo(self._model.outputs[0].name, tuple(out), "float32"),
        )

    def _predict(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        dtype = tf.as_dtype(self.input_spec.dtype).as_numpy_dtype
        out = [
            self._call(tf.constant(_cast(x[i : i + _CHUNK], dtype, str(self.path)))).numpy()
            for i in range(0, len(x), _CHUNK)
        ]
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def _close(self) -> None:
        self._call = self._model = None


def _pick_output(outputs: dict, folder, key: str) -> str:
    if len(outputs) == 1:
        return next(iter(outputs))
    if "probabilities" in outputs:
        return "probabilities"
    floats = [k for k, v in outputs.items() if v.dtype.is_floating]
    if len(floats) == 1:
        return floats[0]
    raise InputValueError(
        f"Signature `{key}` of {folder} has outputs {sorted(outputs)}; expected one, or one "
        "named `probabilities`."
    )


def _cast(x: np.ndarray, dtype, where: str = "input") -> np.ndarray:
    """Float inputs -> the signature's dtype; an integer input takes whole pixel values only
    (``kvision.models.contract.to_input_tensor``: no silent rounding of [0, 1] floats)."""
    from kvision.models.contract import to_input_tensor

    return to_input_tensor(x, np.dtype(dtype), where=where)
