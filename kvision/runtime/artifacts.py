"""What an artifact path is (format, SavedModel version folder) and the input contract beside it.

Example:
    >>> detect_format("tflite_models/classifier_float32.tflite")
    'tflite'
    >>> contract, source = find_contract("someone_elses.tflite", rt.inputs)
    >>> source            # "file" (contract.json beside it), "derived" or None (no image input)
    'derived'
"""

from __future__ import annotations

from pathlib import Path

from kvision.errors import InputValueError

ARTIFACT_FORMATS = ("tflite", "saved_model", "keras", "onnx")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
ARTIFACT_SUFFIXES = (".tflite", *KERAS_SUFFIXES, ".onnx")


def detect_format(path) -> str:
    """``"tflite"``, ``"saved_model"``, ``"keras"`` or ``"onnx"`` for an artifact path.

    Keras files may be named ``.keras``, ``.h5`` or ``.hdf5``. A SavedModel may be given as its
    version folder (with ``saved_model.pb``) or as the model folder holding numeric versions
    (the highest is used, as TF Serving does).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputValueError: a path of no known format (the message lists them).

    Example:
        >>> detect_format("model.hdf5")
        'keras'
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Artifact not found: {p}")
    suffix = p.suffix.lower()
    if p.is_file() and suffix == ".tflite":
        return "tflite"
    if p.is_file() and suffix in KERAS_SUFFIXES:
        return "keras"
    if p.is_file() and suffix == ".onnx":
        return "onnx"
    if p.is_dir() and ((p / "saved_model.pb").is_file() or _versions(p)):
        return "saved_model"
    raise InputValueError(
        f"Cannot tell the format of {p}: expected a .tflite, .keras, .h5, .hdf5 or .onnx file, "
        "or a SavedModel folder (with saved_model.pb, or numeric version sub-folders)."
    )


def saved_model_version_dir(path) -> Path:
    """The SavedModel version folder for ``path`` (itself, or its highest numeric version).

    Raises:
        FileNotFoundError: no ``saved_model.pb`` there nor in a numeric sub-folder.
    """
    p = Path(path)
    if (p / "saved_model.pb").is_file():
        return p
    versions = _versions(p) if p.is_dir() else []
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


def _saved_contract(path):
    from kvision.export.artifact import load_contract

    p = Path(path)
    try:
        if p.is_dir() and not (p / "saved_model.pb").is_file():
            p = saved_model_version_dir(p)
        return load_contract(p), p
    except FileNotFoundError:
        return None, p


def artifact_contract(path, spec=None):
    """``(InputContract, source)`` for an image artifact; ``source`` is ``"file"`` or
    ``"derived"``.

    The contract kvision saved beside the artifact wins, after a check against the input spec
    (``InputContract.check_tensor``: a contract that scales pixels to [0, 1] for an integer
    input without quantization parameters is refused). Without one (a foreign model) it is
    derived from the input spec by ``InputContract.for_tensor``: size and channels from the
    shape; a float input takes pixels scaled to [0, 1]; a quantized uint8/int8 input maps pixel
    ``p`` onto the artifact's own calibration; an integer input without quantization takes raw
    pixels (``input_domain`` ``"uint8"``, scale 1). Labels are then empty.

    Args:
        path: the artifact.
        spec: its input ``TensorInfo`` (needed when no contract file exists; checked against
            one; default ``None``).

    Raises:
        FileNotFoundError: no contract file and no ``spec``.
        InputValueError: the contract file contradicts ``spec``, or ``spec`` is not an image
            input (both messages name the artifact).
    """
    from kvision.models.contract import InputContract

    contract, p = _saved_contract(path)
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


def find_contract(path, inputs) -> tuple:
    """``(InputContract | None, source)`` for any artifact; ``source`` is ``"file"``,
    ``"derived"`` or ``None``.

    As :func:`artifact_contract` for an artifact with one image input. An artifact with several
    inputs, or one whose input is not an image kvision can describe (``[N, H, W, 1 or 3]`` with
    fixed sizes, values that can hold pixels), has no derived contract: ``(None, None)``; its
    inputs are fed in their own tensors' domains.

    Args:
        path: the artifact.
        inputs: its input ``TensorInfo`` list (``Runtime.inputs``).

    Raises:
        InputValueError: a contract file that contradicts the one input tensor.
    """
    from kvision.models.contract import InputContract

    inputs = list(inputs)
    contract, p = _saved_contract(path)
    if contract is not None:
        if len(inputs) == 1:
            contract.check_tensor(inputs[0].dtype, inputs[0].quantized, where=str(p))
        return contract, "file"
    if len(inputs) != 1:
        return None, None
    spec = inputs[0]
    try:
        derived = InputContract.for_tensor(
            spec.shape, spec.dtype, spec.scale, spec.zero_point, where=str(p)
        )
    except ValueError:
        return None, None
    return derived, "derived"
