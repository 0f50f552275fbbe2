"""Post-training quantization: dynamic-range, float16, full int8 and int16x8, with a deny-list.

Calibration images come from the user's own training pipeline (:func:`representative_images`),
offline. A deny-list keeps named layers in float inside the int8 model (quantization-sensitive
parts such as the classifier head) through ``convert_tflite(..., deny_layers=...)``.

Example::

    calib = representative_images(train_ds, 300)
    arts = ptq_artifacts(model, "out/tflite", PTQConfig(), calib, x_val[:256])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.compress.artifacts import build_artifact
from kvision.compress.config import PTQConfig
from kvision.errors import InputValueError

_NEEDS_CALIBRATION = ("int8", "int8_float_io", "int16x8")


def representative_images(dataset, count: int, seed: int = 0) -> np.ndarray:
    """Up to ``count`` float32 images from a ``tf.data`` pipeline of ``(images, labels)`` batches.

    Args:
        dataset: batched ``tf.data.Dataset`` (e.g. the training pipeline) or an array of images.
        count: number of images (``>= 1``).
        seed: shuffles the collected images deterministically (default 0).

    Raises:
        ValueError: ``count < 1`` or the dataset yields no images.

    Example:
        >>> representative_images(train_ds, 300).shape
        (300, 28, 28, 1)
    """
    if count < 1:
        raise InputValueError(f"`count` should be >= 1. Received: count={count}")
    if isinstance(dataset, np.ndarray):
        x = dataset.astype(np.float32)
    else:
        chunks, n = [], 0
        for batch in dataset:
            images = batch[0] if isinstance(batch, tuple | list) else batch
            chunks.append(np.asarray(images, dtype=np.float32))
            n += len(chunks[-1])
            if n >= count:
                break
        if not chunks:
            raise InputValueError("The calibration dataset yielded no images.")
        x = np.concatenate(chunks)
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[:count]]


def ptq_artifacts(
    model,
    out_dir,
    cfg: PTQConfig,
    calibration,
    samples,
    model_name: str = "classifier",
    min_top1_agreement: float = 0.9,
) -> list:
    """Convert ``model`` to each PTQ variant of ``cfg`` and verify each (one Artifact per variant).

    Args:
        model: the float tf_keras model.
        out_dir: folder for the ``.tflite`` files (``<model_name>_ptq_<variant>.tflite``).
        cfg: variants, calibration sample count, deny-list.
        calibration: float32 calibration images (see :func:`representative_images`).
        samples: float32 validation images for verification.
        model_name: file prefix (default ``"classifier"``).
        min_top1_agreement: required agreement with the float model (default 0.9).

    Returns:
        Artifacts named ``ptq_<variant>`` (``ptq_<variant>_deny`` when layers are deny-listed).

    Example:
        >>> [a.name for a in ptq_artifacts(model, "out", PTQConfig(variants=["int8"]), calib, xv)]
        ['ptq_int8']
    """
    out_dir = Path(out_dir)
    calibration = np.asarray(calibration, dtype=np.float32)[: cfg.calibration_samples]
    artifacts = []
    for variant in cfg.variants:
        deny = list(cfg.deny_layers) if variant in ("int8", "int8_float_io") else []
        suffix = "_deny" if deny else ""
        name = f"ptq_{variant}{suffix}"
        artifacts.append(
            build_artifact(
                model,
                out_dir / f"{model_name}_{name}.tflite",
                variant,
                samples,
                representative_data=calibration if variant in _NEEDS_CALIBRATION else None,
                name=name,
                deny_layers=deny,
                min_top1_agreement=min_top1_agreement,
                max_calibration_samples=cfg.calibration_samples,
            )
        )
    return artifacts
