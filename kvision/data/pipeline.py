"""The ``tf.data`` input pipeline, driven by the model's input contract.

decode (parallel, files only) -> mode conversion / resize -> cache -> shuffle -> batch ->
augment (training only, in ``tf.data`` on the CPU) -> normalize to the contract -> prefetch::

    ds = build_dataset(splits.train, contract, batch_size=128, training=True, augmenter=aug)

Decoding, channel conversion and resizing are :mod:`kvision.preprocess` (the one path predict,
benchmark and serve use too); arrays whose size or channels differ from the contract go through
its :func:`~kvision.preprocess.fit_pixels` in the pipeline. Normalizing is
``InputContract.normalize``, so an evaluation batch equals ``model_inputs`` bit for bit.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kvision.data.datasets import Split
from kvision.errors import InputValueError
from kvision.models.contract import InputContract
from kvision.preprocess import fit_pixels
from kvision.preprocess import model_inputs as _model_inputs

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
            (see ``kvision.augment.build_augmenter``); only used when ``training``. Augmented
            batches are mapped to the contract's scale afterwards (``x * 255 * scale + offset``;
            rounded to whole pixels for a raw integer ``input_domain``).
        seed: shuffle seed.
        cache: cache decoded images in memory (file datasets).
        on_error: ``skip`` or ``raise`` for files that fail to decode.
        drop_remainder: default ``training`` (unless the split is smaller than one batch).

    Returns:
        Batches of float32 images ``(B, H, W, C)`` normalized per the contract and int64 labels.
        Without augmentation they equal :func:`model_inputs` of the same pixels exactly.
    """
    if batch_size < 1:
        raise InputValueError(f"`batch_size` should be >= 1. Received: batch_size={batch_size}")
    if len(split) == 0:
        raise InputValueError("Cannot build a dataset from an empty split.")
    size = (contract.height, contract.width)
    if split.images is not None:
        ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
        fits = tuple(split.images.shape[1:]) == contract.shape
    else:
        from kvision.data.folders import file_dataset

        ds = file_dataset(split.files, split.labels, contract.channels, size, on_error=on_error,
                          resize=contract.resize)  # fmt: skip
        fits = True  # decoded at the contract's size and channels
        if cache:
            ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(split), 20_000), seed=seed, reshuffle_each_iteration=True)
    if drop_remainder is None:  # a training split smaller than one batch still yields one
        drop_remainder = training and len(split) >= batch_size
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if not fits:
        ds = ds.map(lambda x, y: (fit_batch(x, contract), y), num_parallel_calls=AUTOTUNE)
    return to_model_inputs(ds, contract, augmenter if training else None).prefetch(AUTOTUNE)


def to_model_inputs(ds, contract: InputContract, augmenter=None):
    """uint8 ``(images [B, H, W, C], labels)`` batches -> float32 model inputs in the contract's
    scale: through ``augmenter`` (which takes ``[0, 1]`` images) when given, else normalised."""
    if augmenter is None:
        return ds.map(lambda x, y: (contract.normalize(x), y), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=AUTOTUNE)
    ds = ds.map(augmenter, num_parallel_calls=AUTOTUNE)
    return ds.map(lambda x, y: (_from_unit(x, contract), y), num_parallel_calls=AUTOTUNE)


def fit_batch(images, contract: InputContract):
    """A uint8 batch tensor ``(B, h, w, c)`` -> uint8 ``(B, H, W, C)`` at the contract's size and
    channels, with :func:`kvision.preprocess.fit_pixels` (Pillow, inside the graph)."""
    size, channels, resize = (contract.height, contract.width), contract.channels, contract.resize
    if tuple(images.shape[1:]) == contract.shape:
        return images
    fitted = tf.numpy_function(
        lambda x: fit_pixels(x, channels, size, resize), [images], tf.uint8, stateful=False
    )
    return tf.ensure_shape(fitted, (None, *contract.shape))


def to_unit(images, contract: InputContract):
    """uint8 batch -> float32 in [0, 1] at the contract's size and channel count."""
    return tf.cast(fit_batch(tf.convert_to_tensor(images), contract), tf.float32) / 255.0


def model_inputs(images: np.ndarray, contract: InputContract) -> np.ndarray:
    """uint8 images ``(N, H, W, C)`` -> float32 model inputs (eager, the pipeline's maths).

    The same as :func:`kvision.preprocess.model_inputs`: channel conversion and resize with
    Pillow, then ``contract.normalize``.
    """
    return _model_inputs(images, contract)


def _from_unit(x, contract: InputContract):
    """Augmented [0, 1] images -> the contract's scale; whole pixel values for a raw domain."""
    if contract.raw_input:
        return tf.round(x * 255.0) * contract.scale + contract.offset
    if _is_identity(contract):
        return x
    return x * (255.0 * contract.scale) + contract.offset


def _is_identity(contract: InputContract) -> bool:
    return abs(contract.scale * 255.0 - 1.0) < 1e-9 and contract.offset == 0.0
