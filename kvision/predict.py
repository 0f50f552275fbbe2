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
    task = saved_task(model_path)
    if task not in (None, "classification"):
        return predict_task_files(model_path, files)
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


def saved_task(model_path: Path) -> str | None:
    """The task named by the contract saved with the model, or None when there is none."""
    from kvision.models import InputContract

    try:
        return InputContract.find(model_path).task
    except (FileNotFoundError, ValueError):
        return None


#: detections drawn on ``kvision predict --out`` images score at least this (the JSON has all)
DRAW_SCORE = 0.3


def predict_task_files(model_path, files, out_dir=None, threads: int | None = None) -> list[dict]:
    """Predictions of a task model (detection, ...) for image files, decoded outside the graph.

    The model's saved contract names the task; its decoding (e.g. score threshold, per-class
    NMS) turns the raw named outputs into one prediction per file, in that file's pixels.

    Args:
        model_path: ``.tflite``, SavedModel version folder or ``.keras`` / ``.h5`` checkpoint
            with its contract (``*.contract.json``, ``assets.extra/contract.json`` or
            ``contract.json`` beside it).
        files: image files.
        out_dir: when given, each image is written there with its predictions drawn
            (``<stem>.png``: detections scoring >= :data:`DRAW_SCORE`, or a colour-coded class
            mask overlay) beside ``<stem>.json``, and the task's own images (segmentation: the
            class mask as ``<stem>_mask.png``, a palette PNG of class ids).
        threads: the runtime's thread count (default: the runtime's own).

    Returns:
        One dict per file: ``{"file": str, **task.prediction_json(...)}`` (detection:
        ``{"detections": [{"label", "class_index", "score", "box": [x_min, y_min, x_max,
        y_max]}]}``, pixels of the file).

    Raises:
        FileNotFoundError: no model or no saved contract. ``kvision.preprocess.ImageError``: a
            bad image (the message names it).
    """
    import json

    from kvision.io import atomic_write_text
    from kvision.models import InputContract
    from kvision.preprocess import decode_image, image_pixels, read_bytes
    from kvision.runtime import open_runtime
    from kvision.tasks import get_task

    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"Model not found: {model_path}")
    contract = InputContract.find(model_path)
    task = get_task(contract.task)
    runtime = open_runtime(model_path, threads=threads)
    runtime.load()
    size = (contract.height, contract.width)
    results = []
    for f in files:
        image = decode_image(read_bytes(f), f)  # decoded once: model input and drawing
        x = image_pixels(image, contract.channels, size, f, contract.resize)[None]
        x = contract.normalize(x)
        w, h = image.size
        prediction = task.decode(runtime.run(x), contract, [(w, h)])[0]
        result = {"file": str(f), **task.prediction_json(prediction, contract)}
        results.append(result)
        if out_dir is not None:
            out = Path(out_dir)
            stem = Path(f).stem
            original = image_pixels(image, contract.channels, source=f)
            drawn = task.draw(original, prediction, contract, min_score=DRAW_SCORE)
            _write_png(drawn, out / f"{stem}.png")
            for name, pixels in task.prediction_images(prediction, contract).items():
                task.write_prediction_image(name, pixels, out / f"{stem}_{name}.png", contract)
            atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2))
    runtime.close()
    return results


def _write_png(pixels, path: Path) -> None:
    import io

    from PIL import Image

    from kvision.io import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


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
