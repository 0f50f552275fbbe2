"""The one place kvision imports Keras.

kvision builds every model with ``tf_keras`` (Keras 2): tensorflow-model-optimization only accepts
tf_keras models, and MultiWorkerMirroredStrategy works with it. Every other module gets Keras from
here::

    from kvision._keras import keras

Nothing here changes the process environment.
"""

from __future__ import annotations

import tf_keras as keras  # noqa: F401  (re-exported)

__all__ = ["keras", "is_tf_keras_model", "require_tf_keras_model", "load_model", "fit_verbosity"]


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


def require_tf_keras_model(obj, argument: str = "model"):
    """Return ``obj`` if it is a tf_keras model, else raise a ``TypeError`` that says what to do.

    A Keras 3 model (``keras.Model`` from the ``keras`` package) is the common mistake: tfmot and
    kvision's exporters need tf_keras.
    """
    if is_tf_keras_model(obj):
        return obj
    module = type(obj).__module__
    if module.startswith("keras"):
        raise TypeError(
            f"`{argument}` is a Keras 3 object ({module}.{type(obj).__name__}); kvision needs a "
            "tf_keras (Keras 2) model because tensorflow-model-optimization only supports "
            "tf_keras. "
            "Build it with `import tf_keras as keras` (or set TF_USE_LEGACY_KERAS=1 before "
            "importing "
            "tensorflow), or save its weights and rebuild the architecture with kvision.models."
        )
    raise TypeError(
        f"`{argument}` should be a tf_keras.Model. Received: {argument}={type(obj).__name__}"
    )


def load_model(path, compile: bool = False):
    """Load a tf_keras model from ``.keras``, ``.h5`` or a SavedModel directory.

    Raises ``FileNotFoundError`` naming the path when it does not exist, and a ``ValueError`` that
    names the file when it is not a readable tf_keras model (for example one saved by Keras 3).
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Model file not found: {p}")
    try:
        return keras.models.load_model(p, compile=compile)
    except Exception as exc:  # keras raises many types here; re-raise with the file named
        hint = ""
        text = str(exc)
        if "keras_version" in text or "Keras 3" in text or "module" in text and "keras.src" in text:
            hint = " It looks like a Keras 3 file: re-save it with tf_keras."
        else:
            hint = _user_code_hint(p)
        raise ValueError(f"Could not load a tf_keras model from {p}: {exc}.{hint}") from exc


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
