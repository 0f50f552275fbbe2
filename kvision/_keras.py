"""The one place kvision imports Keras.

kvision builds every model with ``tf_keras`` (Keras 2): tensorflow-model-optimization only accepts
tf_keras models, and MultiWorkerMirroredStrategy works with it. Every other module gets Keras from
here::

    from kvision._keras import keras

Nothing here changes the process environment.
"""

from __future__ import annotations

import tf_keras as keras  # noqa: F401  (re-exported)

__all__ = [
    "keras",
    "is_tf_keras_model",
    "is_keras3_file",
    "require_tf_keras_model",
    "load_model",
    "fit_verbosity",
    "saved_keras_version",
]


def fit_verbosity(verbose):
    """Keras ``fit`` verbosity: ``"auto"`` is a progress bar on a terminal and one line per epoch
    in logs; any other value is returned as it is."""
    if verbose == "auto":
        import sys

        return 1 if sys.stdout.isatty() else 2
    return verbose


def is_tf_keras_model(obj) -> bool:
    """True when ``obj`` is a tf_keras (Keras 2) model."""
    return isinstance(obj, keras.Model)


KERAS3_REMEDY = (
    "kvision needs tf_keras (Keras 2) models: tensorflow-model-optimization only supports "
    "tf_keras, and tf_keras cannot read Keras 3 files. Rebuild the model with `import tf_keras "
    "as keras` (or TF_USE_LEGACY_KERAS=1 set before importing tensorflow) and save it again; to "
    "keep trained weights, copy them layer by layer (`new_layer.set_weights(old_layer."
    "get_weights())`) into the same architecture built with tf_keras. To only benchmark, "
    "convert or serve it, export a SavedModel with Keras 3's `model.export(DIR)` and pass that "
    "folder."
)


def require_tf_keras_model(obj, argument: str = "model"):
    """Return ``obj`` if it is a tf_keras model, else raise an ``InputTypeError`` (a
    ``TypeError``) that says what to do.

    A Keras 3 model (``keras.Model`` from the ``keras`` package) is the common mistake: tfmot and
    kvision's exporters need tf_keras.
    """
    from kvision.errors import InputTypeError

    if is_tf_keras_model(obj):
        return obj
    module = type(obj).__module__
    if module.startswith("keras"):
        raise InputTypeError(
            f"`{argument}` is a Keras 3 object ({module}.{type(obj).__name__}). {KERAS3_REMEDY}"
        )
    raise InputTypeError(
        f"`{argument}` should be a tf_keras.Model. Received: {argument}={type(obj).__name__}"
    )


def saved_keras_version(path) -> str | None:
    """The Keras version that wrote a model file, read from the file itself.

    A ``.keras`` archive (a zip) stores it in ``metadata.json``; an HDF5 file (``.h5``) in its
    ``keras_version`` attribute. The content decides, not the file name.

    Returns:
        The version string (``"3.15.1"``, ``"2.21.0"``), or ``None`` for anything else (a
        SavedModel folder, an unreadable file, a file without the field).
    """
    import json
    import zipfile
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return None
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as archive:
                meta = json.loads(archive.read("metadata.json"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None
        version = meta.get("keras_version") if isinstance(meta, dict) else None
        return str(version) if version else None
    try:
        import h5py

        if not h5py.is_hdf5(p):
            return None
        with h5py.File(p, "r") as h5:
            version = h5.attrs.get("keras_version")
    except (ImportError, OSError):
        return None
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return str(version) if version else None


def is_keras3_file(path) -> bool:
    """True when the model file at ``path`` was written by Keras 3 (see
    :func:`saved_keras_version`)."""
    version = saved_keras_version(path)
    try:
        return version is not None and int(version.split(".")[0]) >= 3
    except ValueError:
        return False


def load_model(path, compile: bool = False):
    """Load a tf_keras model from ``.keras``, ``.h5`` or a SavedModel directory.

    Every kvision and deploy command that loads a Keras model goes through here.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        kvision.errors.ModelFileError: (a ``ValueError``) the file is not a readable tf_keras
            model. The message names the file and leads with what to do: a Keras 3 file (its
            own metadata says so) gets :data:`KERAS3_REMEDY`; a model that needs custom code
            names its custom classes and Lambda layers; a SavedModel folder without Keras
            metadata says where it can be used.
    """
    from pathlib import Path

    from kvision.errors import ModelFileError

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Model file not found: {p}")
    version = saved_keras_version(p)
    if is_keras3_file(p):
        raise ModelFileError(f"{p} is a Keras 3 file (keras_version {version}). {KERAS3_REMEDY}")
    try:
        return keras.models.load_model(p, compile=compile)
    except Exception as exc:  # keras raises many types here; re-raise with the file named
        hint = _user_code_hint(p) or _saved_model_hint(p)
        text = " ".join(str(exc).split())
        if not hint and ("Keras 3" in text or "batch_shape" in text or "keras.src" in text):
            hint = f" It looks like a Keras 3 file. {KERAS3_REMEDY}"
        raise ModelFileError(  # the hint first: report rows cut long messages at the end
            f"Could not load a tf_keras model from {p}.{hint} ({type(exc).__name__}: {text})"
        ) from exc


def _saved_model_hint(path) -> str:
    """A SavedModel folder without tf_keras metadata (``tf.saved_model.save``, Keras 3's
    ``model.export``) is not a Keras model: say where it can be used."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir() and (p / "saved_model.pb").is_file() and not (p / "keras_metadata.pb").exists():
        return (
            " It is a SavedModel without Keras metadata (written by tf.saved_model.save or "
            "Keras 3's model.export): kvision benchmark, convert and serve accept it; training, "
            "evaluation and compression need the tf_keras model file."
        )
    return ""


def _user_code_hint(path) -> str:
    """What in a ``.keras`` file needs the user's own code: custom layer classes and Lambdas."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return ""
    layers = (config.get("config") or {}).get("layers") or []
    custom = sorted(
        {
            f"{layer.get('module')}.{layer['class_name']}"
            for layer in layers
            if not str(layer.get("module", "")).startswith("keras")
        }
    )
    lambdas = [layer["config"]["name"] for layer in layers if layer["class_name"] == "Lambda"]
    parts = []
    if custom:
        parts.append(
            f"uses custom layer class(es) {custom}: import the module(s) that define them "
            "(registered with keras.saving.register_keras_serializable) before loading"
        )
    if lambdas:
        parts.append(
            f"has Lambda layer(s) {lambdas}, whose Python code is stored in the file and "
            "must be importable here; replacing them with registered layers is more portable"
        )
    return (" The model " + "; it ".join(parts) + ".") if parts else ""
