"""Export a tf_keras classifier as a TF Serving SavedModel.

Layout (what TF Serving's file-system source watches)::

    out_dir/<model_name>/<version>/saved_model.pb
                                  /variables/variables.{index,data-*}
                                  /assets.extra/contract.json     # kvision's input contract

Signature ``serving_default``: input ``images`` (float32 ``[None, H, W, C]``, already normalized as
the contract says) -> output ``probabilities`` (float32 ``[None, num_classes]``). The same serving
function is what ``kvision.export.converter`` converts to TFLite, so both formats expose the same
names.

The model is saved through a plain ``tf.Module`` holding its variables and the traced signature,
not through Keras' own SavedModel path: only the serving graph is written (no per-layer Keras
traces), which is smaller, faster and all TF Serving reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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
        raise ValueError(f"`model` should have one input (images). Received: {len(shape)} inputs.")
    _, h, w, c = shape
    if contract is None:
        contract = getattr(model, "kvision_contract", None)
    if contract is None:
        if None in (h, w, c):
            raise ValueError(
                f"`model` has a free input size {tuple(shape)}; pass `contract` "
                "(kvision.models.InputContract) so the export knows the image size."
            )
        return InputContract.from_model(model)
    if not isinstance(contract, InputContract):
        raise TypeError(
            f"`contract` should be an InputContract. Received: contract={type(contract).__name__}"
        )
    for axis, got, want in (
        ("height", h, contract.height),
        ("width", w, contract.width),
        ("channels", c, contract.channels),
    ):
        if got is not None and int(got) != want:
            raise ValueError(
                f"`contract` {axis}={want} does not match the model's input shape {tuple(shape)}."
            )
    return contract


def serving_function(model, contract=None):
    """A ``tf.function`` ``images -> {"probabilities": ...}`` with a fixed input signature.

    Args:
        model: tf_keras classifier with one input and one output.
        contract: ``InputContract`` for the input size (default: the model's own).

    Example:
        >>> fn = serving_function(model)
        >>> fn(images=tf.zeros([2, 28, 28, 1]))["probabilities"].shape
        TensorShape([2, 10])
    """
    import tensorflow as tf

    contract = resolve_contract(model, contract)
    outputs = model.outputs if hasattr(model, "outputs") else None
    if outputs is not None and len(outputs) != 1:
        raise ValueError(
            f"`model` should have one output (class probabilities). "
            f"Received: {len(outputs)} outputs."
        )
    spec = tf.TensorSpec([None, *contract.shape], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    return serve


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
        raise ValueError(
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
        raise ValueError(
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
