"""Metric-learning losses and the ArcFace training head for embedding models.

:class:`TripletLoss` mines triplets online in each batch of ``B`` embeddings and their int class
labels (sample P x K batches, :mod:`kvision.tasks.embedding.sampling`, so that every anchor has
positives). For an anchor ``a``, a positive ``p`` (same label, ``p != a``) and a negative ``n``
(another label), the triplet's loss is ``max(d(a, p) - d(a, n) + margin, 0)``. Mining modes:

- ``"hard"``, batch-hard (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
  Re-Identification", arXiv 2017): per anchor, its farthest positive against its nearest
  negative; the mean over the anchors that have both.
- ``"semihard"`` (Schroff, Kalenichenko and Philbin, "FaceNet", CVPR 2015): per (anchor,
  positive) pair, the nearest negative *farther* than the positive (``d(a, n) > d(a, p)``); when
  the batch holds none, the nearest negative (the hardest). The mean over the (anchor, positive)
  pairs whose anchor has a negative. (TensorFlow Addons' ``TripletSemiHardLoss`` falls back to
  the farthest negative instead.)
- ``"all"``, batch-all (Hermans et al.): every valid triplet; the sum of their losses over the
  number of triplets with a positive loss (0 when there is none).

Distances: ``"cosine"`` is ``1 - cos(a, b)`` of the L2-normalised embeddings (in [0, 2]);
``"squared_l2"`` is ``||a - b||^2`` of the embeddings as given. ``"semihard"`` and ``"all"`` build
``[B, B, B]`` tensors (B = 256: 64 MiB of float32).

:func:`brute_force_triplet_loss` is the same loss written as explicit Python loops over every
triplet in NumPy float64, the reference of the tests.

:class:`ArcFaceHead` is the additive angular margin head (Deng et al., "ArcFace", CVPR 2019),
used for training only: :func:`arcface_training_model` joins it to an embedder, and the embedder
alone (images -> L2-normalised embedding) is what gets exported.

Example:
    >>> model.compile(optimizer="adam", loss=TripletLoss(margin=0.2, mining="semihard"))
    >>> train = arcface_training_model(embedder, num_classes=100)
    >>> train.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from kvision._keras import keras
from kvision.errors import InputValueError

MINING = ("semihard", "hard", "all")
DISTANCES = ("cosine", "squared_l2")

#: a triplet counts as "positive loss" in batch-all above this (float32 round-off is not a loss)
_POSITIVE = 1e-16


def _check_triplet_args(margin, mining, distance) -> tuple[float, str, str]:
    if mining not in MINING:
        raise InputValueError(
            f"`mining` should be one of {', '.join(MINING)}. Received: mining={mining!r}"
        )
    if distance not in DISTANCES:
        raise InputValueError(
            f"`distance` should be one of {', '.join(DISTANCES)}. Received: distance={distance!r}"
        )
    if not np.isfinite(margin) or margin < 0:
        raise InputValueError(f"`margin` should be a finite number >= 0. Received: margin={margin}")
    return float(margin), mining, distance


@keras.saving.register_keras_serializable(package="kvision")
class TripletLoss(keras.losses.Loss):
    """Triplet loss with online mining in the batch (module docstring).

    ``y_true`` is int class labels ``[B]`` or ``[B, 1]``; ``y_pred`` is float embeddings
    ``[B, D]``. The loss is a scalar (already averaged as the mining mode says). Graph-mode
    TensorFlow ops only, so it runs inside ``model.fit``.

    Args:
        margin: the triplet margin (default 0.2; in cosine distance units for ``"cosine"``).
        mining: ``"semihard"`` (default), ``"hard"`` or ``"all"``.
        distance: ``"cosine"`` (default; embeddings are L2-normalised first) or
            ``"squared_l2"``.

    Raises:
        InputValueError: an unknown ``mining`` or ``distance``, or a negative ``margin``.

    Example:
        >>> loss = TripletLoss(margin=0.2, mining="hard")
        >>> float(loss([0, 0, 1, 1], [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]))
        0.0
    """

    def __init__(self, margin=0.2, mining="semihard", distance="cosine", name="triplet_loss",
                 **kwargs):  # fmt: skip
        super().__init__(name=name, **kwargs)
        self.margin, self.mining, self.distance = _check_triplet_args(margin, mining, distance)

    def call(self, y_true, y_pred):
        emb = tf.cast(y_pred, tf.float32)
        labels = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        d = _pairwise_distances(emb, self.distance)
        same = tf.equal(labels[:, None], labels[None, :])
        pos = tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))
        neg = tf.logical_not(same)
        has_neg = tf.reduce_any(neg, axis=1)
        far = tf.stop_gradient(tf.reduce_max(d)) + 1.0  # stands in for "no such negative"
        if self.mining == "hard":
            hardest_pos = tf.reduce_max(tf.where(pos, d, 0.0), axis=1)
            hardest_neg = tf.reduce_min(tf.where(neg, d, far), axis=1)
            losses = tf.maximum(hardest_pos - hardest_neg + self.margin, 0.0)
            return _masked_mean(losses, tf.logical_and(tf.reduce_any(pos, axis=1), has_neg))
        if self.mining == "semihard":
            d_an = d[:, None, :]  # [anchor, 1, negative]
            semi = tf.logical_and(neg[:, None, :], d_an > d[:, :, None])  # [anchor, pos, neg]
            semi_neg = tf.reduce_min(tf.where(semi, d_an, far), axis=2)
            hardest_neg = tf.reduce_min(tf.where(neg, d, far), axis=1)
            chosen = tf.where(tf.reduce_any(semi, axis=2), semi_neg, hardest_neg[:, None])
            losses = tf.maximum(d - chosen + self.margin, 0.0)
            return _masked_mean(losses, tf.logical_and(pos, has_neg[:, None]))
        triplets = tf.logical_and(pos[:, :, None], neg[:, None, :])  # [anchor, pos, neg]
        losses = tf.maximum(d[:, :, None] - d[:, None, :] + self.margin, 0.0)
        losses = tf.where(triplets, losses, 0.0)
        return _masked_mean(losses, losses > _POSITIVE)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "mining": self.mining,
                "distance": self.distance}  # fmt: skip


def _pairwise_distances(emb, distance: str):
    """float32 ``[B, B]`` distances, >= 0 with an exact 0 diagonal."""
    if distance == "cosine":
        emb = tf.math.l2_normalize(emb, axis=1)
        d = 1.0 - tf.matmul(emb, emb, transpose_b=True)
    else:
        sq = tf.reduce_sum(tf.square(emb), axis=1)
        d = sq[:, None] - 2.0 * tf.matmul(emb, emb, transpose_b=True) + sq[None, :]
    off_diagonal = 1.0 - tf.eye(tf.shape(emb)[0], dtype=emb.dtype)
    return tf.maximum(d, 0.0) * off_diagonal


def _masked_mean(values, mask):
    count = tf.reduce_sum(tf.cast(mask, tf.float32))
    return tf.reduce_sum(tf.where(mask, values, 0.0)) / tf.maximum(count, 1.0)


def brute_force_triplet_loss(labels, embeddings, margin: float = 0.2, mining: str = "semihard",
                             distance: str = "cosine") -> float:  # fmt: skip
    """:class:`TripletLoss` by enumerating every (anchor, positive, negative) triplet in Python
    loops, in NumPy float64: the slow, obviously correct reference of the tests.

    Args:
        labels: int ``[B]`` class labels.
        embeddings: float ``[B, D]``.
        margin, mining, distance: as :class:`TripletLoss`.

    Returns:
        The loss as a Python float.

    Raises:
        InputValueError: bad arguments (as :class:`TripletLoss`), or ``labels`` and
            ``embeddings`` whose shapes do not match.

    Example:
        >>> brute_force_triplet_loss([0, 0, 1], [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], 0.2, "all")
        0.7
    """
    margin, mining, distance = _check_triplet_args(margin, mining, distance)
    labels = np.asarray(labels).reshape(-1)
    emb = np.asarray(embeddings, np.float64)
    if emb.ndim != 2 or len(emb) != len(labels):
        raise InputValueError(
            "`embeddings` should be [B, D] with one row per label. "
            f"Received: embeddings shape={list(emb.shape)}, {len(labels)} labels"
        )
    if distance == "cosine":
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def dist(i, j):
        if i == j:
            return 0.0
        if distance == "cosine":
            return max(1.0 - float(np.dot(emb[i], emb[j])), 0.0)
        return float(np.sum((emb[i] - emb[j]) ** 2))

    n = len(labels)
    per_item = []  # hard: per anchor; semihard: per (anchor, positive) pair; all: per triplet
    for a in range(n):
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [q for q in range(n) if labels[q] != labels[a]]
        if not negatives:
            continue
        if mining == "hard":
            if positives:
                per_item.append(max(max(dist(a, p) - dist(a, q) + margin, 0.0)
                                    for p in positives for q in negatives))  # fmt: skip
            continue
        for p in positives:
            d_ap = dist(a, p)
            if mining == "all":
                per_item.extend(max(d_ap - dist(a, q) + margin, 0.0) for q in negatives)
                continue
            farther = [dist(a, q) for q in negatives if dist(a, q) > d_ap]
            d_an = min(farther) if farther else min(dist(a, q) for q in negatives)
            per_item.append(max(d_ap - d_an + margin, 0.0))
    if mining == "all":
        positive = [v for v in per_item if v > _POSITIVE]
        return float(sum(positive) / len(positive)) if positive else 0.0
    return float(np.mean(per_item)) if per_item else 0.0


@keras.saving.register_keras_serializable(package="kvision")
class ArcFaceHead(keras.layers.Layer):
    """Additive angular margin logits (ArcFace; Deng et al., CVPR 2019), for training only.

    A weight matrix ``W`` ``[D, num_classes]`` holds one class centre per column. With
    ``cos(theta_j)`` the cosine between the L2-normalised embedding and the normalised column
    ``j``, ``head([embeddings, labels])`` returns float32 logits ``[B, num_classes]``:
    ``scale * cos(theta_y + margin)`` for the true class ``y`` and ``scale * cos(theta_j)`` for
    the others; train them with ``SparseCategoricalCrossentropy(from_logits=True)``.

    ``cos(theta + m)`` stops decreasing in ``theta`` once ``theta + m > pi``, so (as the
    reference implementation, insightface) when ``theta > pi - m`` the true-class logit is
    ``scale * (cos(theta) - m * sin(m))`` instead, a CosFace-style penalty that is continuous at
    ``theta = pi - m`` and keeps the logit decreasing. With ``easy_margin=True`` the margin is
    only applied where ``cos(theta) > 0`` (``theta < pi / 2``) and the logit is
    ``scale * cos(theta)`` elsewhere.

    ``head.cosine(embeddings)`` gives the cosines ``[B, num_classes]`` (no label, no margin), and
    ``head(embeddings)`` without labels gives ``scale * cosine``.

    Args:
        num_classes: the number of training classes (>= 2).
        scale: the logit scale ``s`` (default 30.0).
        margin: the angular margin ``m`` in radians, in ``[0, pi / 2)`` (default 0.5).
        easy_margin: apply the margin only where ``cos(theta) > 0`` (default False).

    Raises:
        InputValueError: ``num_classes < 2``, ``scale <= 0`` or ``margin`` outside
            ``[0, pi / 2)``.

    Example:
        >>> head = ArcFaceHead(10, scale=30.0, margin=0.5)
        >>> logits = head([tf.random.normal([4, 8]), tf.constant([0, 1, 2, 3])])  # [4, 10]
        >>> cosines = head.cosine(tf.random.normal([4, 8]))                        # [4, 10]
    """

    def __init__(self, num_classes, scale=30.0, margin=0.5, easy_margin=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise InputValueError(
                f"`num_classes` should be an integer >= 2. Received: num_classes={num_classes}"
            )
        if not np.isfinite(scale) or scale <= 0:
            raise InputValueError(f"`scale` should be a number > 0. Received: scale={scale}")
        if not 0 <= margin < math.pi / 2:
            raise InputValueError(
                f"`margin` should be in [0, pi / 2) radians. Received: margin={margin}"
            )
        self.num_classes = int(num_classes)
        self.scale, self.margin = float(scale), float(margin)
        self.easy_margin = bool(easy_margin)

    def build(self, input_shape):
        emb_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple, tf.TensorShape)) else input_shape  # fmt: skip
        dim = tf.TensorShape(emb_shape)[-1]
        if dim is None:
            raise InputValueError(
                f"ArcFaceHead needs a known embedding size. Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel", shape=(int(dim), self.num_classes), initializer="glorot_uniform",
            trainable=True, dtype=tf.float32,
        )  # fmt: skip
        super().build(input_shape)

    def cosine(self, embeddings):
        """float32 ``[B, num_classes]`` cosines between the embeddings and the class centres."""
        emb = tf.cast(embeddings, tf.float32)
        if not self.built:
            self.build(emb.shape)
        emb = tf.math.l2_normalize(emb, axis=1)
        centres = tf.math.l2_normalize(tf.cast(self.kernel, tf.float32), axis=0)
        return tf.matmul(emb, centres)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            return self.scale * self.cosine(inputs)
        embeddings, labels = inputs
        cos = self.cosine(embeddings)
        onehot = tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), self.num_classes)
        cos_y = tf.reduce_sum(cos * onehot, axis=1)
        # sin(theta) >= 0 for theta in [0, pi]; the floor keeps the gradient finite at theta = 0
        sin_y = tf.sqrt(tf.maximum(1.0 - tf.square(cos_y), 1e-7))
        m = self.margin
        phi = cos_y * math.cos(m) - sin_y * math.sin(m)  # cos(theta + m)
        if self.easy_margin:
            phi = tf.where(cos_y > 0.0, phi, cos_y)
        else:
            phi = tf.where(cos_y > math.cos(math.pi - m), phi, cos_y - m * math.sin(m))
        return self.scale * (cos + onehot * (phi - cos_y)[:, None])

    def compute_output_shape(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple, tf.TensorShape)) else input_shape  # fmt: skip
        return tf.TensorShape(shape)[:-1].concatenate([self.num_classes])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "scale": self.scale,
                "margin": self.margin, "easy_margin": self.easy_margin}  # fmt: skip


def arcface_training_model(embedder, num_classes: int, scale: float = 30.0, margin: float = 0.5,
                           easy_margin: bool = False) -> keras.Model:  # fmt: skip
    """The training model of an ArcFace embedder: inputs ``(images, labels)``, output the
    :class:`ArcFaceHead` logits ``[B, num_classes]`` for
    ``SparseCategoricalCrossentropy(from_logits=True)``.

    ``embedder`` (a tf_keras model, images -> L2-normalised embedding ``[B, D]``) is used as a
    layer, so training updates its weights in place; export ``embedder`` itself (it is also
    ``model.get_layer(embedder.name)``). The head and its class centres are for training only.

    Args:
        embedder: a single-input tf_keras model with a known embedding size.
        num_classes: the number of training classes.
        scale, margin, easy_margin: as :class:`ArcFaceHead` (defaults 30.0, 0.5, False).

    Returns:
        A tf_keras functional model; feed it ``((images, labels), labels)``, labels int ``[B]``.

    Raises:
        InputValueError: ``embedder`` is not a single-input tf_keras model, or bad head
            arguments (as :class:`ArcFaceHead`).

    Example:
        >>> model = arcface_training_model(embedder, num_classes=10)
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> model.fit(tf.data.Dataset.from_tensor_slices(((x, y), y)).batch(32), epochs=5)
        >>> embedder.save("embedder.keras")  # the exported model
    """
    if not isinstance(embedder, keras.Model) or len(embedder.inputs or []) != 1:
        raise InputValueError(
            "`embedder` should be a tf_keras model with one image input. "
            f"Received: {type(embedder).__name__}"
        )
    head = ArcFaceHead(num_classes, scale=scale, margin=margin, easy_margin=easy_margin,
                       name="arcface_head")  # fmt: skip
    images = keras.Input(shape=embedder.inputs[0].shape[1:], dtype=embedder.inputs[0].dtype,
                         name="images")  # fmt: skip
    labels = keras.Input(shape=(), dtype="int32", name="labels")
    logits = head([embedder(images), labels])
    return keras.Model([images, labels], logits, name=f"{embedder.name}_arcface")
