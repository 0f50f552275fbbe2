"""``predict_files``: top-k labels for image files with any classifier artifact.

A Keras model file, a SavedModel or a ``.tflite``: the files go through :mod:`kvision.preprocess`
(the one decode -> resize path training, benchmark and serve use) for the artifact's contract::

    from kvision.predict import predict_files
    predict_files("runs/x/export/tflite/classifier_float32.tflite", ["shoe.png"], top_k=3)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.errors import InputValueError


def predict_files(model_path, files, top_k: int = 3) -> list[dict]:
    """Top-k labels for image files with a Keras model file, a SavedModel or a ``.tflite``.

    Files go through :mod:`kvision.preprocess` (as in training, benchmark and serve) for the
    model's contract: the saved one, checked against its input tensor, else derived from it
    (raw pixels 0..255 for an integer input without quantization; ``kvision.models.contract``).

    Raises:
        FileNotFoundError: no model. ValueError: ``top_k`` out of range, or a saved contract
            contradicting the input tensor. ``kvision.preprocess.ImageError``: a bad image.
    """
    from kvision.export.saved_model import open_model
    from kvision.preprocess import file_inputs

    model_path = Path(model_path)
    runner = open_model(model_path)
    contract = _contract_for(model_path, runner.input_tensor, runner.num_outputs)
    if top_k < 1 or top_k > contract.num_classes:
        raise InputValueError(
            f"`top_k` should be between 1 and {contract.num_classes}. Received: top_k={top_k}"
        )
    files = list(files)
    probs = runner.predict(file_inputs(files, contract)) if files else []
    out = []
    for f, p in zip(files, probs, strict=True):
        order = np.argsort(p)[::-1][:top_k]
        out.append(
            {
                "file": str(f),
                "top_k": [
                    {"label": contract.labels[i], "index": int(i), "probability": float(p[i])}
                    for i in order
                ],
            }
        )
    return out


def _contract_for(model_path: Path, tensor=None, num_outputs=None):
    """The contract saved with a model, checked against its input ``tensor`` (shape, dtype,
    quantization scale, zero point), else derived from it; labels ``"0"``.. for ``num_outputs``."""
    from kvision.models import InputContract

    if not model_path.exists():
        raise FileNotFoundError(f"Model not found: {model_path}")
    try:
        contract = InputContract.find(model_path)
    except FileNotFoundError:
        if tensor is None:
            raise
        shape, dtype, scale, zero_point = tensor
        contract = InputContract.for_tensor(shape, dtype, scale, zero_point, where=str(model_path))
    else:
        if tensor is not None:
            contract.check_tensor(tensor[1], bool(tensor[2]), where=str(model_path))
    if not contract.labels and isinstance(num_outputs, int | np.integer):
        contract.labels = [str(i) for i in range(int(num_outputs))]
    return contract
