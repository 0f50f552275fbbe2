"""Export a tf_keras classifier as a TF Serving SavedModel.

Layout (what TF Serving's file-system source watches)::

    out_dir/<model_name>/<version>/saved_model.pb
                                  /variables/variables.{index,data-*}
                                  /assets.extra/contract.json     # kvision's input contract

Signature ``serving_default``: input ``images`` (float32 ``[None, H, W, C]``, already normalized as
the contract says) -> output ``probabilities`` (float32 ``[None, num_classes]``); a model with
several outputs keeps one per output, named by its output names. The same serving function is
what ``kvision.export.converter`` converts to TFLite, so both formats expose the same names.
:class:`ServingSignature` and :class:`KerasModelFile` run artifacts through ``kvision.runtime``.

The model is saved through a plain ``tf.Module`` holding its variables and the traced signature,
not through Keras' own SavedModel path: only the serving graph is written (no per-layer Keras
traces), which is smaller, faster and all TF Serving reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kvision.errors import InputTypeError, InputValueError
from kvision.export.artifact import SAVED_MODEL_CONTRACT

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


def resolve_contract(model, contract=None):
    """The model's ``InputContract``: ``contract`` if given, else the one the model carries.

    Raises ``ValueError`` if the model's fixed input size disagrees with ``contract``, or if the
    model has free spatial dimensions and no contract says what they are.
    """
    from kvision._keras import require_tf_keras_model
    from kvision.models.contract import InputContract

    require_tf_keras_model(model)
    shape = model.input_shape
    if isinstance(shape, list):
        raise InputValueError(
            f"`model` should have one input (images). Received: {len(shape)} inputs."
        )
    _, h, w, c = shape
    if contract is None:
        contract = getattr(model, "kvision_contract", None)
    if contract is None:
        if None in (h, w, c):
            raise InputValueError(
                f"`model` has a free input size {tuple(shape)}; pass `contract` "
                "(kvision.models.InputContract) so the export knows the image size."
            )
        return InputContract.from_model(model)
    if not isinstance(contract, InputContract):
        raise InputTypeError(
            f"`contract` should be an InputContract. Received: contract={type(contract).__name__}"
        )
    for axis, got, want in (
        ("height", h, contract.height),
        ("width", w, contract.width),
        ("channels", c, contract.channels),
    ):
        if got is not None and int(got) != want:
            raise InputValueError(
                f"`contract` {axis}={want} does not match the model's input shape {tuple(shape)}."
            )
    return contract


def serving_function(model, contract=None):
    """A ``tf.function`` ``images -> {"probabilities": ...}`` with a fixed input signature.

    A model with several outputs (a detector's ``boxes`` and ``scores``) gets one entry per
    output, named by the model's output names.

    Args:
        model: tf_keras model with one image input.
        contract: ``InputContract`` for the input size (default: the model's own).

    Raises:
        InputValueError: several inputs, or output names that repeat.

    Example:
        >>> fn = serving_function(model)
        >>> fn(images=tf.zeros([2, 28, 28, 1]))["probabilities"].shape
        TensorShape([2, 10])
    """
    import tensorflow as tf

    contract = resolve_contract(model, contract)
    names = output_names(model)
    spec = tf.TensorSpec([None, *contract.shape], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(images):
        y = model(images, training=False)
        if isinstance(y, dict):
            return {str(k): v for k, v in y.items()}
        if len(names) == 1:
            return {OUTPUT_NAME: y[0] if isinstance(y, list | tuple) else y}
        return dict(zip(names, y, strict=True))

    return serve


def output_names(model) -> list[str]:
    """The signature names of ``model``'s outputs: ``["probabilities"]`` for one output, else
    the model's output names (``["boxes", "scores"]``).

    Raises:
        InputValueError: several outputs whose names repeat.
    """
    outputs = list(getattr(model, "outputs", None) or [None])
    if len(outputs) == 1:
        return [OUTPUT_NAME]
    names = [str(n) for n in model.output_names]
    if len(set(names)) != len(names):
        raise InputValueError(f"`model` output names should be unique. Received: {names}")
    return names


def export_saved_model(
    model,
    out_dir,
    model_name: str = "classifier",
    version: int = 1,
    contract=None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as ``out_dir/<model_name>/<version>/`` for TF Serving, atomically.

    The version folder is built in a hidden temp folder beside it and renamed into place, so TF
    Serving never sees a half-written version.

    Args:
        model: tf_keras classifier (one image input, one probabilities output).
        out_dir: base folder (TF Serving's ``--model_base_path`` is ``out_dir/<model_name>``).
        model_name: folder name of the model (default ``"classifier"``).
        version: non-negative integer version folder (default 1).
        contract: ``InputContract`` to save and to size the input (default: the model's).
        overwrite: replace an existing version folder (default False: raise).

    Returns:
        The version folder.

    Raises:
        FileExistsError: the version folder exists and ``overwrite`` is False (names the path).

    Example:
        >>> export_saved_model(model, "out/saved_model", "fashion", version=3)
        PosixPath('out/saved_model/fashion/3')
    """
    import tensorflow as tf

    _check_name(model_name)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InputValueError(
            f"`version` should be a non-negative integer. Received: version={version!r}"
        )
    contract = resolve_contract(model, contract)
    base = Path(out_dir) / model_name
    final = base / str(version)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"SavedModel version folder already exists: {final}. Pass overwrite=True to replace "
            "it, or export a new `version`."
        )
    serve = serving_function(model, contract)
    root = tf.Module()
    root.model_variables = list(model.variables)
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{version}.", suffix=".tmp"))
    try:
        tf.saved_model.save(root, str(tmp), signatures={SIGNATURE_KEY: serve})
        contract.save(tmp / SAVED_MODEL_CONTRACT)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _check_name(model_name) -> None:
    if (
        not isinstance(model_name, str)
        or not model_name
        or model_name in (".", "..")
        or "/" in model_name
        or "\\" in model_name
    ):
        raise InputValueError(
            "`model_name` should be a non-empty folder name without slashes. "
            f"Received: model_name={model_name!r}"
        )


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename folder ``src`` to ``dst``; an existing ``dst`` is moved aside first, then deleted."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".old"))
        os.rmdir(old)
        os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ServingSignature:
    """A SavedModel's serving signature, run on model-domain float inputs (``kvision predict``).

    A view of :class:`kvision.runtime.tensorflow.SavedModelRuntime` (``serving_default``, else
    the only signature) with one input; the output is the primary one (``probabilities``, else
    the only one). Inputs are fed in the input's own domain (``to_input_tensor``): an integer
    input takes whole pixel values and refuses anything else (no rounding of [0, 1] floats).

    Args:
        path: SavedModel version folder.

    Raises:
        FileNotFoundError: no ``saved_model.pb`` in ``path``.
        ValueError: no usable signature (the message lists what exists), several inputs, or
            several outputs of which none is primary.

    Example:
        >>> sig = ServingSignature("export/saved_model/classifier/1")
        >>> sig.input_dtype, sig.predict(x).shape
        ('float32', (8, 10))
    """

    def __init__(self, path):
        from kvision.runtime.tensorflow import SavedModelRuntime

        self.path = Path(path)
        if not (self.path / "saved_model.pb").is_file():
            raise FileNotFoundError(f"No saved_model.pb in {self.path}")
        self.runtime = SavedModelRuntime(self.path)
        spec = self.runtime.input_spec
        out = self.runtime.output_spec
        self.input_name = spec.name
        self.output_name = out.name
        self.input_shape = spec.shape
        self.input_dtype = spec.dtype
        self.output_shape = out.shape

    @property
    def input_tensor(self) -> tuple:
        """``(shape, dtype name, quantization scale, zero point)`` of the input (not quantized)."""
        return self.input_shape, self.input_dtype, 0.0, 0

    @property
    def num_outputs(self):
        """Size of the output's last axis (``None`` when free)."""
        return self.output_shape[-1] if self.output_shape else None

    def predict(self, x, batch_size: int = 64) -> np.ndarray:
        """float32 outputs ``[N, ...]`` for model-domain inputs ``x`` ``[N, H, W, C]``."""
        return self.runtime.predict(x, batch_size)


class KerasModelFile:
    """A tf_keras model file (``.keras`` / ``.h5`` / ``.hdf5``) with :class:`ServingSignature`'s
    interface, run through :class:`kvision.runtime.tensorflow.KerasRuntime`.

    Args:
        path: the model file (``kvision._keras.load_model``).

    Example:
        >>> KerasModelFile("best.keras").predict(x).shape
        (8, 10)
    """

    def __init__(self, path):
        from kvision.models.contract import model_input_dtype
        from kvision.runtime.tensorflow import KerasRuntime

        self.path = Path(path)
        self.runtime = KerasRuntime(self.path)
        self.model = self.runtime.model
        shape = self.model.input_shape
        self.input_shape = tuple(shape[0] if isinstance(shape, list) else shape)
        self.input_dtype = model_input_dtype(self.model)
        self.num_outputs = self.runtime.output_spec.shape[-1]

    @property
    def input_tensor(self) -> tuple:
        """``(shape, dtype name, 0.0, 0)``: Keras inputs have no quantization."""
        return self.input_shape, self.input_dtype, 0.0, 0

    def predict(self, x, batch_size: int = 64) -> np.ndarray:
        """float32 outputs for model-domain inputs (whole pixels for an integer input)."""
        return self.runtime.predict(x, batch_size)


def open_model(path):
    """A loaded model to predict with: ``LiteRTModel`` for a ``.tflite``, :class:`ServingSignature`
    for a SavedModel version folder, :class:`KerasModelFile` for ``.keras`` / ``.h5`` /
    ``.hdf5``. Each has
    ``input_tensor`` (shape, dtype, quantization scale, zero point), ``num_outputs`` and
    ``predict(x)`` on model-domain float inputs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the model cannot be loaded or has no usable single-input signature.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Model not found: {p}")
    if p.suffix == ".tflite":
        from kvision.export.litert import LiteRTModel

        return LiteRTModel(p)
    if p.is_dir():
        return ServingSignature(p)
    return KerasModelFile(p)
