"""Short fine-tuning runs for compression (pruning, QAT, clustering) with the user's pipeline.

Compression fine-tunes with the same ``tf.data`` pipeline the float model was trained with
(augmentation stays in the pipeline, never in the model). This helper compiles with Adam and a
cosine-decayed learning rate and calls Keras ``fit``; it does not checkpoint (the runs are short
and the wrapped models are not the artifacts).

With a ``teacher`` (the float model being compressed), the run is a self-distillation: the
compressed model learns the float model's softened predictions as well as the labels
(:class:`~kvision.compress.distill.Distiller`). The float model's soft targets carry what it
learned about class similarity, which recovers accuracy lost to pruning and quantization faster
than the labels alone.
"""

from __future__ import annotations

import numpy as np

from kvision._keras import keras
from kvision.errors import InputValueError


def count_steps(train_ds, steps_per_epoch: int | None) -> int:
    """Steps per epoch: ``steps_per_epoch`` if given, else the dataset's cardinality.

    Raises:
        ValueError: the dataset has unknown or zero length and ``steps_per_epoch`` is None.
    """
    if steps_per_epoch is not None:
        if int(steps_per_epoch) < 1:
            raise InputValueError(
                f"`steps_per_epoch` should be >= 1. Received: steps_per_epoch={steps_per_epoch}"
            )
        return int(steps_per_epoch)
    n = int(train_ds.cardinality())
    if n < 0:
        raise InputValueError(
            "The training dataset has unknown length: pass `steps_per_epoch` "
            "(CompressConfig.steps_per_epoch)."
        )
    if n == 0:
        raise InputValueError("The training dataset is empty.")
    return n


def with_known_length(train_ds, steps_per_epoch: int | None = None, verbose: int = 0):
    """``train_ds`` with a known number of batches, so fine-tuning can size its schedules.

    A pipeline that filters (image folders drop undecodable files) has an unknown length; when
    ``steps_per_epoch`` is not given, its batches are counted once (one pass over the data) and
    asserted with ``tf.data.experimental.assert_cardinality``. A dataset of known length, or any
    dataset when ``steps_per_epoch`` is given, is returned as it is.

    Raises:
        ValueError: the dataset is infinite (``repeat()``) and ``steps_per_epoch`` is None, or it
            yields no batches.
    """
    import tensorflow as tf

    if steps_per_epoch is not None or not isinstance(train_ds, tf.data.Dataset):
        return train_ds
    n = int(train_ds.cardinality())
    if n == int(tf.data.INFINITE_CARDINALITY):
        raise InputValueError(
            "The training dataset repeats forever: set `steps_per_epoch` "
            "(CompressConfig.steps_per_epoch, compress.steps_per_epoch=N)."
        )
    if n != int(tf.data.UNKNOWN_CARDINALITY):
        return train_ds
    n = int(train_ds.reduce(np.int64(0), lambda count, _: count + 1).numpy())
    if n == 0:
        raise InputValueError("The training dataset yielded no batches.")
    if verbose:
        print(f"compress: the training dataset has unknown length; counted {n} batches")
    return train_ds.apply(tf.data.experimental.assert_cardinality(n))


def _cosine(learning_rate: float, total_steps: int):
    return keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps), alpha=0.05)


def compile_for_finetune(model, learning_rate: float, total_steps: int, loss=None):
    """Compile ``model`` with Adam + cosine decay over ``total_steps`` and accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(_cosine(learning_rate, total_steps)),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


def finetune(
    model,
    train_ds,
    val_ds=None,
    epochs: int = 1,
    learning_rate: float = 1e-3,
    steps_per_epoch: int | None = None,
    callbacks=(),
    verbose: int = 0,
    teacher=None,
    temperature: float = 4.0,
    alpha: float = 0.1,
) -> dict:
    """Compile and fit ``model`` for ``epochs``; returns the Keras history dict.

    Args:
        model: tf_keras model (possibly wrapped by tfmot).
        train_ds: ``tf.data.Dataset`` of ``(images, integer labels)`` batches.
        val_ds: optional validation dataset.
        epochs: epochs (default 1).
        learning_rate: peak learning rate (default 1e-3).
        steps_per_epoch: cap steps per epoch (default: the whole dataset).
        callbacks: extra Keras callbacks (e.g. tfmot's ``UpdatePruningStep``).
        verbose: Keras verbosity (default 0).
        teacher: optional float model whose softened predictions the model also learns
            (default None: labels only).
        temperature, alpha: distillation temperature and hard-label weight (used with
            ``teacher``; see :func:`~kvision.compress.distill.distillation_loss`).

    Example:
        >>> history = finetune(qat_model, train_ds, val_ds, epochs=1, learning_rate=5e-4)
    """
    steps = count_steps(train_ds, steps_per_epoch)
    if teacher is not None:
        from kvision.compress.distill import Distiller

        trainer = Distiller(model, teacher, temperature, alpha)
        trainer.compile(optimizer=keras.optimizers.Adam(_cosine(learning_rate, steps * epochs)))
    else:
        trainer = compile_for_finetune(model, learning_rate, steps * epochs)
    history = trainer.fit(
        train_ds.repeat() if steps_per_epoch else train_ds,
        validation_data=val_ds,
        epochs=epochs,
        steps_per_epoch=steps if steps_per_epoch else None,
        callbacks=list(callbacks),
        verbose=verbose,
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}
