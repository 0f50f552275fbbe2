"""Read a SavedModel's signatures the way TF Serving does: from ``saved_model.pb`` itself.

TF Serving never runs Python: it parses the ``SavedModel`` protocol buffer, takes the
MetaGraphDef tagged ``serve`` and looks up ``signature_def[<signature_name>]`` (default
``serving_default``), whose inputs/outputs are tensor names with dtypes and shapes and whose
``method_name`` must be ``tensorflow/serving/predict`` for the Predict API. This module reads
exactly that, so tests can check what the server will see.

Example:
    >>> sig = read_serving_signature("export/saved_model/classifier/1")
    >>> sig["inputs"]["images"]["dtype"], sig["inputs"]["images"]["shape"]
    ('DT_FLOAT', [-1, 28, 28, 1])
    >>> sig["method_name"]
    'tensorflow/serving/predict'
"""

from __future__ import annotations

from pathlib import Path

from kvision.errors import InputValueError

SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"


def read_signature_defs(version_dir) -> dict:
    """``{signature_key: {"inputs", "outputs", "method_name"}}`` of the ``serve`` meta graph.

    Each tensor is ``{"name": "serving_default_images:0", "dtype": "DT_FLOAT",
    "shape": [-1, 28, 28, 1]}`` (``None`` shape for an unknown rank).

    Raises:
        FileNotFoundError: no ``saved_model.pb`` in ``version_dir``.
        ValueError: the file is not a SavedModel or has no meta graph tagged ``serve``.
    """
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(version_dir) / "saved_model.pb"
    if not pb.is_file():
        raise FileNotFoundError(f"No saved_model.pb in {version_dir}")
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(pb.read_bytes())
    except Exception as exc:  # protobuf's DecodeError
        raise InputValueError(f"{pb} is not a SavedModel protocol buffer: {exc}") from exc
    graphs = [g for g in model.meta_graphs if SERVE_TAG in g.meta_info_def.tags]
    if not graphs:
        tags = [list(g.meta_info_def.tags) for g in model.meta_graphs]
        raise InputValueError(f"{pb} has no meta graph tagged '{SERVE_TAG}' (tags: {tags})")

    def tensor(info) -> dict:
        shape = None
        if not info.tensor_shape.unknown_rank:
            shape = [int(d.size) for d in info.tensor_shape.dim]
        return {"name": info.name, "dtype": types_pb2.DataType.Name(info.dtype), "shape": shape}

    return {
        key: {
            "inputs": {k: tensor(v) for k, v in sig.inputs.items()},
            "outputs": {k: tensor(v) for k, v in sig.outputs.items()},
            "method_name": sig.method_name,
        }
        for key, sig in graphs[0].signature_def.items()
    }


def read_serving_signature(version_dir, signature: str = "serving_default") -> dict:
    """The one signature TF Serving's Predict API would use (see :func:`read_signature_defs`).

    Raises:
        ValueError: the signature is missing (names the ones found).
    """
    defs = read_signature_defs(version_dir)
    if signature not in defs:
        raise InputValueError(
            f"{version_dir} has no signature {signature!r}; TF Serving would reject requests. "
            f"Found: {sorted(defs)}"
        )
    return defs[signature]
