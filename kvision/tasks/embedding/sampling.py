"""P x K batch sampling for metric learning: every batch holds P distinct classes, K examples each.

Triplet mining needs positives in the batch, which random batches over many classes seldom give;
batch-hard and semi-hard mining are defined on P x K batches (Hermans et al., "In Defense of the
Triplet Loss for Person Re-Identification", 2017: P = 18, K = 4 for re-identification).

Each step draws P classes without replacement (uniformly among the classes), then K examples of
each class: without replacement when the class has at least K examples; when it has fewer, all
of them, topped up to K with examples drawn again (so some repeat in the batch). A batch lists
the classes one after another, K indices each.

:func:`pk_batches` returns the index batches as a NumPy array; :func:`pk_dataset` wraps them in a
``tf.data.Dataset`` of ``(x_batch, y_batch)`` gathered from in-memory arrays (or of index
batches, for data read from files: map them to images yourself).

Example:
    >>> batches = pk_batches(labels, p=8, k=4, seed=0)          # int64 [steps, 32]
    >>> ds = pk_dataset(images, labels, p=8, k=4, seed=0)       # (images[32], labels[32])
    >>> model.fit(ds.prefetch(2), epochs=10)                    # new batches every epoch
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kvision.errors import InputValueError


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputValueError(
            "`labels` should be a 1-D integer array [N]. "
            f"Received: dtype={labels.dtype}, shape={list(labels.shape)}"
        )
    if not len(labels):
        raise InputValueError("`labels` is empty: P x K sampling needs at least P classes.")
    return labels


def _check_pk(p, k, num_classes: int, steps) -> None:
    if isinstance(p, bool) or int(p) != p or p < 1 or p > num_classes:
        raise InputValueError(
            f"`p` (classes per batch) should be an integer in [1, {num_classes}], the number of "
            f"classes in `labels`. Received: p={p}"
        )
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise InputValueError(
            f"`k` (examples per class) should be an integer >= 2, so that every anchor has a "
            f"positive. Received: k={k}"
        )
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise InputValueError(f"`steps` should be an integer >= 1 or None. Received: steps={steps}")


def _draw(rng: np.random.Generator, classes, members, p: int, k: int, steps: int) -> np.ndarray:
    out = np.empty((steps, p * k), np.int64)
    for step in range(steps):
        chosen = rng.choice(len(classes), size=p, replace=False)
        for slot, c in enumerate(chosen):
            pool = members[c]
            if len(pool) >= k:
                picked = rng.choice(pool, size=k, replace=False)
            else:  # all of them, topped up with repeats
                picked = rng.permutation(np.concatenate([pool, rng.choice(pool, k - len(pool))]))
            out[step, slot * k : (slot + 1) * k] = picked
    return out


def _groups(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    classes, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    return classes, members


def pk_batches(labels, p: int, k: int, seed: int = 0, steps: int | None = None,
               epoch: int = 0) -> np.ndarray:  # fmt: skip
    """Index batches of P distinct classes x K examples each (module docstring).

    Args:
        labels: int class labels ``[N]`` (or ``[N, 1]``).
        p: classes per batch, at most the number of distinct labels.
        k: examples per class (>= 2); a class with fewer than ``k`` examples gives all of them,
            topped up to ``k`` with repeats.
        seed: the sampling seed; the same seed gives the same batches (default 0).
        steps: the number of batches; default ``max(1, N // (p * k))``, about one epoch.
        epoch: the epoch number (default 0): the batches come from a NumPy generator seeded
            with ``(seed, epoch)``, the batches of :func:`pk_dataset`'s epoch ``epoch``.

    Returns:
        int64 ``[steps, p * k]`` indices into ``labels``; in each row, ``k`` indices of one class,
        then ``k`` of the next, for ``p`` distinct classes.

    Raises:
        InputValueError: empty or non-integer ``labels``, ``p`` outside ``[1, classes]``,
            ``k < 2``, or ``steps < 1``.

    Example:
        >>> pk_batches([0, 0, 1, 1, 2, 2], p=2, k=2, seed=0).shape
        (1, 4)
    """
    labels = _check_labels(labels)
    classes, members = _groups(labels)
    _check_pk(p, k, len(classes), steps)
    p, k = int(p), int(k)
    steps = max(1, len(labels) // (p * k)) if steps is None else int(steps)
    return _draw(np.random.default_rng([int(seed), int(epoch)]), classes, members, p, k, steps)


def pk_dataset(x, y, p: int, k: int, seed: int = 0, steps: int | None = None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of P x K batches ``(x[idx], y[idx])`` from in-memory arrays.

    A Python generator (``tf.data.Dataset.from_generator``) draws each epoch's index batches
    with :func:`pk_batches`' sampler and gathers the rows in NumPy, so the arrays are never
    copied into the TensorFlow graph. Epoch ``e`` (the ``e``-th iteration of this dataset, from
    0) uses the generator seeded with ``(seed, e)``: every epoch has new batches, and a new
    dataset built with the same seed repeats the same sequence of epochs (epoch ``e``'s index
    batches are ``pk_batches(y, p, k, seed, steps, epoch=e)``).

    Args:
        x: the examples ``[N, ...]`` (images, or precomputed features), indexable by an int
            array; or ``None`` to yield the int64 index batches in its place (to map them to
            images read from files).
        y: int class labels ``[N]``.
        p, k, steps: as :func:`pk_batches` (``steps`` batches per epoch).
        seed: the sampling seed (default 0).

    Returns:
        A dataset of ``(x_batch [p*k, ...], y_batch [p*k])`` with static batch size ``p * k``;
        add ``.prefetch`` (and a ``.map`` for decoding or augmentation) as usual.

    Raises:
        InputValueError: as :func:`pk_batches`, or ``x`` and ``y`` of different lengths.

    Example:
        >>> ds = pk_dataset(images, labels, p=8, k=4, seed=0)
        >>> model.fit(ds.prefetch(tf.data.AUTOTUNE), epochs=10)
    """
    labels = _check_labels(y)
    classes, members = _groups(labels)
    _check_pk(p, k, len(classes), steps)
    p, k = int(p), int(k)
    steps = max(1, len(labels) // (p * k)) if steps is None else int(steps)
    if x is not None:
        x = np.asarray(x)
        if len(x) != len(labels):
            raise InputValueError(
                f"`x` and `y` should have one row per example each. Received: {len(x)} and "
                f"{len(labels)} rows"
            )
    epoch = [0]

    def generate():
        rng = np.random.default_rng([int(seed), epoch[0]])
        epoch[0] += 1
        for idx in _draw(rng, classes, members, p, k, steps):
            yield (idx if x is None else x[idx]), labels[idx]

    first = (
        tf.TensorSpec((p * k,), tf.int64)
        if x is None
        else tf.TensorSpec((p * k, *x.shape[1:]), tf.as_dtype(x.dtype))
    )
    second = tf.TensorSpec((p * k,), tf.as_dtype(labels.dtype))
    return tf.data.Dataset.from_generator(generate, output_signature=(first, second))
