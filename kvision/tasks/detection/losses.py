"""Detection losses on per-anchor targets: sigmoid focal loss and a smooth-L1 box loss.

Targets come from :func:`kvision.tasks.detection.anchors.encode_targets_tf`, batched:

- class targets ``int32 [B, A]``: the class index of a positive anchor, ``-1`` background,
  ``-2`` ignored (no loss);
- box targets ``float32 [B, A, 5]``: the 4 encoded deltas and a positive flag (1.0 / 0.0) in the
  last column (Keras passes one ``y_true`` per output, so the box loss carries its own mask).

Both losses are summed over anchors and the batch and divided by the number of positive anchors
in the batch (at least 1), as RetinaNet normalizes (Lin et al., ICCV 2017). Each returns one
scalar for the batch.
"""

from __future__ import annotations

import tensorflow as tf

from kvision._keras import keras


class FocalLoss(keras.losses.Loss):
    """Sigmoid focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)`` over every (anchor, class).

    Args:
        alpha: weight of the positive class term (default 0.25).
        gamma: focusing parameter (default 2.0).
        name: loss name (default ``"focal"``).

    Example:
        >>> loss = FocalLoss()(class_targets, class_logits)   # [B, A] int32, [B, A, C] float
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, name: str = "focal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.gamma = float(alpha), float(gamma)

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        targets = tf.cast(tf.reshape(y_true, tf.shape(logits)[:2]), tf.int32)
        num_classes = tf.shape(logits)[-1]
        labels = tf.one_hot(tf.maximum(targets, 0), num_classes)
        labels = labels * tf.cast(targets >= 0, tf.float32)[..., None]
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        p = tf.sigmoid(logits)
        p_t = labels * p + (1 - labels) * (1 - p)
        alpha_t = labels * self.alpha + (1 - labels) * (1 - self.alpha)
        loss = alpha_t * tf.pow(1.0 - p_t, self.gamma) * ce
        valid = tf.cast(targets != -2, tf.float32)[..., None]
        positives = tf.reduce_sum(tf.cast(targets >= 0, tf.float32))
        return tf.reduce_sum(loss * valid) / tf.maximum(positives, 1.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


class BoxLoss(keras.losses.Loss):
    """Smooth-L1 (Huber) loss of the encoded box deltas of positive anchors.

    Args:
        delta: the Huber transition point (default 1.0, as SSD with variance-scaled deltas).
        name: loss name (default ``"box"``).
    """

    def __init__(self, delta: float = 1.0, name: str = "box", **kwargs):
        super().__init__(name=name, **kwargs)
        self.delta = float(delta)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        deltas, positive = y_true[..., :4], y_true[..., 4]
        diff = tf.abs(tf.cast(y_pred, tf.float32) - deltas)
        huber = tf.where(diff < self.delta, 0.5 * diff**2, self.delta * (diff - 0.5 * self.delta))
        loss = tf.reduce_sum(huber, axis=-1) * positive
        return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(positive), 1.0)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}
