"""Shared test set-up: quiet TensorFlow, no network for albumentations, tiny deterministic data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def tiny_images():
    """64 deterministic 28x28 grayscale uint8 images in 4 classes whose class is learnable."""
    rng = np.random.default_rng(0)
    n, classes = 64, 4
    labels = np.arange(n) % classes
    images = rng.integers(0, 60, size=(n, 28, 28, 1), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, c * 7 : c * 7 + 7, :, 0] = 220  # a bright band whose row encodes the class
    return images, labels.astype(np.int64)


@pytest.fixture
def tiny_npz(tmp_path, tiny_images):
    """The tiny images as an .npz dataset file (x_train/y_train/x_test/y_test)."""
    images, labels = tiny_images
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images[:16], y_test=labels[:16])
    return path
