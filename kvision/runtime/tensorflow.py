"""TensorFlow runtimes: a SavedModel's signature (CPU or GPU) and a tf_keras model file.

The SavedModel is loaded the way TF Serving serves it: ``tf.saved_model.load`` and a signature
by name (``serving_default``, else the only one). Inputs and outputs are the signature's
structured specs, named by their signature keys and listed in name order. A Keras file
(``.keras``, ``.h5``, ``.hdf5``) is loaded by ``kvision._keras.load_model`` (which explains
Keras 3 files); inputs and outputs are named by the model's input and output names.

TensorFlow's thread pools are process-wide and fixed once TensorFlow starts, so these runtimes
take no ``threads`` argument; ``describe()`` says ``threads: None`` (TensorFlow's default).

Example:
    >>> with SavedModelRuntime("export/saved_model/detector") as rt:   # highest version
    ...     sorted(rt.run({"image": x}))
    ['boxes', 'scores']
"""

from __future__ import annotations

from kvision.errors import InputValueError
from kvision.runtime.artifacts import saved_model_version_dir
from kvision.runtime.base import Runtime, RuntimeUnavailable, TensorInfo

DEVICES = ("cpu", "gpu")
SIGNATURE_KEY = "serving_default"


class SavedModelRuntime(Runtime):
    """Run a SavedModel signature with TensorFlow.

    Args:
        path: SavedModel version folder, or the model folder holding numeric versions.
        device: ``"cpu"`` (default) or ``"gpu"`` (``load()`` raises ``RuntimeUnavailable`` when
            TensorFlow sees no GPU).
        signature: signature key (default ``"serving_default"``, else the only one).

    Raises:
        InputValueError: an unknown ``device``; from ``load()``, a missing signature (the
            message lists those found).

    Example:
        >>> with SavedModelRuntime("export/saved_model/classifier/1", device="cpu") as rt:
        ...     probs = rt.predict(x)
    """

    default_batch = 256

    def __init__(self, path, device: str = "cpu", signature: str = SIGNATURE_KEY):
        super().__init__(path)
        if device not in DEVICES:
            raise InputValueError(
                f"`device` should be one of {DEVICES}. Received: device={device!r}"
            )
        self.device = device
        self.signature = signature
        self.name = f"tf_{device}"
        self.signature_key = None
        self._fn = None
        self._loaded = None

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
        self.signature_key = key
        self._fn = signatures[key]
        inputs = self._fn.structured_input_signature[1]
        outputs = self._fn.structured_outputs
        if not isinstance(outputs, dict):
            outputs = {"output_0": outputs}
        return (  # by name: a loaded signature's dict order is not stable
            [_spec_info(name, inputs[name]) for name in sorted(inputs)],
            [_spec_info(name, outputs[name]) for name in sorted(outputs)],
        )

    def _device_name(self) -> str:
        return "/GPU:0" if self.device == "gpu" else "/CPU:0"

    def _invoke(self, tensors):
        import tensorflow as tf

        with tf.device(self._device_name()):
            out = self._fn(**{k: tf.constant(v) for k, v in tensors.items()})
        if not isinstance(out, dict):
            out = {"output_0": out}
        return {k: v.numpy() for k, v in out.items()}

    def _close(self) -> None:
        self._fn = self._loaded = None


class KerasRuntime(Runtime):
    """Run a tf_keras model file (``.keras`` / ``.h5`` / ``.hdf5``) with a traced call.

    Args:
        path: the model file (loaded with ``kvision._keras.load_model``, which raises
            ``ModelFileError`` naming the file for Keras 3 files and missing custom code).

    Example:
        >>> with KerasRuntime("runs/x/checkpoints/best.keras") as rt:
        ...     probs = rt.predict(x)
    """

    name = "keras"
    default_batch = 256

    def __init__(self, path):
        super().__init__(path)
        self._call = None
        self._model = None
        self._order: list[str] = []

    @property
    def model(self):
        """The loaded tf_keras model."""
        self.load()
        return self._model

    def _load(self):
        import tensorflow as tf

        from kvision._keras import load_model

        model = load_model(self.path)
        in_names = list(model.input_names)
        specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in model.inputs]
        out_names = list(model.output_names)
        single = len(specs) == 1

        def call(*args):
            y = model(args[0] if single else list(args), training=False)
            if isinstance(y, dict):
                return {str(k): v for k, v in y.items()}
            y = list(y) if isinstance(y, list | tuple) else [y]
            return dict(zip(out_names, y, strict=True))

        self._call = tf.function(call, input_signature=specs)
        self._model = model
        self._order = in_names
        concrete = self._call.get_concrete_function().structured_outputs
        inputs = [
            TensorInfo(n, tuple(t.shape.as_list()), tf.as_dtype(t.dtype).name)
            for n, t in zip(in_names, model.inputs, strict=True)
        ]
        outputs = [_spec_info(n, t) for n, t in concrete.items()]
        return inputs, outputs

    def _invoke(self, tensors):
        import tensorflow as tf

        out = self._call(*[tf.constant(tensors[n]) for n in self._order])
        return {k: v.numpy() for k, v in out.items()}

    def _close(self) -> None:
        self._call = self._model = None


def _spec_info(name: str, spec) -> TensorInfo:
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()
    return TensorInfo(str(name), shape, spec.dtype.name)
