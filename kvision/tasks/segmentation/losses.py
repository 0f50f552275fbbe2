"""Segmentation losses on per-pixel class logits, honouring ``ignore_index``.

``y_true`` is int ``[B, H, W]`` class ids (``ignore_index`` pixels take no loss), ``y_pred``
float ``[B, H, W, C]`` logits. :class:`SegmentationLoss` is a weighted sum of

- cross-entropy, optionally class-weighted and with the focal term ``(1 - p_t)^gamma`` (Lin et
  al., ICCV 2017), averaged over the labelled pixels (weighted mean, as PyTorch's
  ``CrossEntropyLoss(weight=..., ignore_index=...)``);
- soft Dice, ``1 - mean_c (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` over the batch's labelled
  pixels (Milletari et al., "V-Net", 3DV 2016), smoothing ``s = 1``.

Example:
    >>> loss = SegmentationLoss(ce=1.0, dice=1.0)            # CE + Dice
    >>> loss = SegmentationLoss(ce=1.0, dice=0.0, gamma=2.0)  # focal
"""

from __future__ import annotations

import tensorflow as tf

from kvision._keras import keras
from kvision.errors import InputValueError

LOSSES = {
    "ce": {"ce": 1.0, "dice": 0.0},
    "dice": {"ce": 0.0, "dice": 1.0},
    "ce_dice": {"ce": 1.0, "dice": 1.0},
    "focal": {"ce": 1.0, "dice": 0.0, "gamma": 2.0},
}


class SegmentationLoss(keras.losses.Loss):
    """Cross-entropy (+ focal term) + soft Dice, with class weights and ``ignore_index``.

    Args:
        ce: weight of the cross-entropy term (default 1.0).
        dice: weight of the soft Dice term (default 1.0).
        gamma: focal exponent; 0 (default) is plain cross-entropy.
        class_weights: per-class weights of the cross-entropy (length C), or ``None``.
        ignore_index: the label that takes no loss (default 255).
        smooth: Dice smoothing (default 1.0).

    Raises:
        InputValueError: negative weights, both terms 0, or a negative ``gamma``.
    """

    def __init__(self, ce=1.0, dice=1.0, gamma=0.0, class_weights=None, ignore_index=255,
                 smooth=1.0, name="segmentation_loss", **kwargs):  # fmt: skip
        super().__init__(name=name, **kwargs)
        if ce < 0 or dice < 0 or ce + dice <= 0 or gamma < 0:
            raise InputValueError(
                "Loss weights `ce`, `dice` should be >= 0 with a positive sum and `gamma` >= 0. "
                f"Received: ce={ce}, dice={dice}, gamma={gamma}"
            )
        self.ce, self.dice, self.gamma = float(ce), float(dice), float(gamma)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_index, self.smooth = int(ignore_index), float(smooth)

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        num_classes = tf.shape(logits)[-1]
        labels = tf.cast(tf.reshape(y_true, tf.shape(logits)[:-1]), tf.int32)
        valid = tf.cast(labels != self.ignore_index, tf.float32)
        safe = tf.where(labels == self.ignore_index, 0, labels)
        total = 0.0
        if self.ce:
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
            if self.gamma:
                p_t = tf.exp(-ce)
                ce = ce * tf.pow(1.0 - p_t, self.gamma)
            weight = valid
            if self.class_weights is not None:
                weight = weight * tf.gather(tf.constant(self.class_weights, tf.float32), safe)
            total += self.ce * tf.reduce_sum(ce * weight) / tf.maximum(tf.reduce_sum(weight), 1e-6)
        if self.dice:
            probs = tf.nn.softmax(logits) * valid[..., None]
            onehot = tf.one_hot(safe, num_classes) * valid[..., None]
            axes = tf.range(tf.rank(probs) - 1)
            inter = tf.reduce_sum(probs * onehot, axis=axes)
            denom = tf.reduce_sum(probs, axis=axes) + tf.reduce_sum(onehot, axis=axes)
            dice = (2.0 * inter + self.smooth) / (denom + self.smooth)
            total += self.dice * (1.0 - tf.reduce_mean(dice))
        return total

    def get_config(self):
        return {**super().get_config(), "ce": self.ce, "dice": self.dice, "gamma": self.gamma,
                "class_weights": self.class_weights, "ignore_index": self.ignore_index,
                "smooth": self.smooth}  # fmt: skip


def build_loss(spec="ce_dice", class_weights=None, ignore_index: int = 255) -> SegmentationLoss:
    """A :class:`SegmentationLoss` from a name in :data:`LOSSES` (``ce``, ``dice``, ``ce_dice``
    (default), ``focal``) or a dict of its arguments.

    Raises:
        InputValueError: an unknown name.
    """
    if isinstance(spec, str):
        if spec not in LOSSES:
            raise InputValueError(
                f"Unknown segmentation loss `{spec}`. Available: {', '.join(LOSSES)}, or a dict "
                "{ce, dice, gamma}."
            )
        spec = LOSSES[spec]
    return SegmentationLoss(**dict(spec), class_weights=class_weights, ignore_index=ignore_index)
