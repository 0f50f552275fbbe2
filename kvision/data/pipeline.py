"""The ``tf.data`` input pipeline, driven by the model's input contract.

decode (parallel, files only) -> resize / channel conversion -> cache -> shuffle -> batch ->
augment (training only, in ``tf.data`` on the CPU) -> normalize to the contract -> prefetch::

    ds = build_dataset(splits.train, contract, batch_size=128, training=True, augmenter=aug)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kvision.data.datasets import Split
from kvision.models.contract import InputContract

AUTOTUNE = tf.data.AUTOTUNE


def build_dataset(
    split: Split,
    contract: InputContract,
    batch_size: int = 128,
    training: bool = False,
    augmenter=None,
    seed: int = 0,
    cache: bool = True,
    on_error: str = "skip",
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of ``(model_inputs, labels)`` for one split.

    Args:
        split: images (uint8 arrays) or image files with labels.
        contract: the model's input contract (size, channels, scale/offset).
        batch_size: batch size (default 128).
        training: shuffle, drop the last partial batch and apply ``augmenter``.
        augmenter: callable ``(images, labels) -> (images, labels)`` on float32 batches in [0, 1]
            (see ``kvision.augment.build_augmenter``); only used when ``training``.
        seed: shuffle seed.
        cache: cache decoded images in memory (file datasets).
        on_error: ``skip`` or ``raise`` for files that fail to decode.
        drop_remainder: default ``training`` (unless the split is smaller than one batch).

    Returns:
        Batches of float32 images ``(B, H, W, C)`` normalized per the contract and int64 labels.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` should be >= 1. Received: batch_size={batch_size}")
    if len(split) == 0:
        raise ValueError("Cannot build a dataset from an empty split.")
    size = (contract.height, contract.width)
    if split.images is not None:
        ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    else:
        from kvision.data.folders import file_dataset

        ds = file_dataset(split.files, split.labels, contract.channels, size, on_error=on_error)
        if cache:
            ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(split), 20_000), seed=seed, reshuffle_each_iteration=True)
    if drop_remainder is None:  # a training split smaller than one batch still yields one
        drop_remainder = training and len(split) >= batch_size
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (to_unit(x, contract), y), num_parallel_calls=AUTOTUNE)
    if training and augmenter is not None:
        ds = ds.map(augmenter, num_parallel_calls=AUTOTUNE)
    if not _is_identity(contract):
        ds = ds.map(
            lambda x, y: (x * (255.0 * contract.scale) + contract.offset, y),
            num_parallel_calls=AUTOTUNE,
        )
    return ds.prefetch(AUTOTUNE)


def to_unit(images, contract: InputContract):
    """uint8 batch -> float32 in [0, 1] at the contract's size and channel count."""
    x = tf.cast(images, tf.float32) / 255.0
    channels = x.shape[-1]
    if channels != contract.channels:
        x = tf.image.grayscale_to_rgb(x) if contract.channels == 3 else tf.image.rgb_to_grayscale(x)
    if tuple(x.shape[-3:-1]) != (contract.height, contract.width):
        x = tf.image.resize(x, (contract.height, contract.width), antialias=True)
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x


def model_inputs(images: np.ndarray, contract: InputContract) -> np.ndarray:
    """uint8 images ``(N, H, W, C)`` -> float32 model inputs (eager, same maths as the pipeline)."""
    x = to_unit(tf.convert_to_tensor(images), contract)
    if not _is_identity(contract):
        x = x * (255.0 * contract.scale) + contract.offset
    return x.numpy()


def _is_identity(contract: InputContract) -> bool:
    return abs(contract.scale * 255.0 - 1.0) < 1e-9 and contract.offset == 0.0
