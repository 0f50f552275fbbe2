"""Knowledge distillation: a teacher -> student trainer usable with Keras ``fit``.

The loss mixes the hard labels and the teacher's softened predictions (Hinton et al., 2015)::

    loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(soft(teacher, T) || soft(student, T))

``soft(p, T)`` is the softmax of ``log(p) / T``: kvision models output probabilities, and
``log(p)`` equals the logits up to a per-sample constant, which the softmax removes. The ``T^2``
factor keeps the soft term's gradient scale independent of ``T``.

Example::

    d = Distiller(student, teacher, temperature=4.0, alpha=0.1)
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    d.fit(train_ds, validation_data=val_ds, epochs=3)
    student  # trained; export it like any model
"""

from __future__ import annotations

import tensorflow as tf

from kvision._keras import keras, require_tf_keras_model
from kvision.errors import InputValueError

_EPS = 1e-7


def soften(probabilities, temperature: float):
    """Softmax of ``log(p) / T`` (probabilities at temperature ``T``)."""
    logits = tf.math.log(tf.clip_by_value(probabilities, _EPS, 1.0))
    return tf.nn.softmax(logits / temperature, axis=-1)


def distillation_loss(y_true, teacher_probs, student_probs, temperature: float, alpha: float):
    """Per-batch distillation loss (mean over the batch).

    Args:
        y_true: integer labels ``[B]``.
        teacher_probs, student_probs: probabilities ``[B, classes]``.
        temperature: softening temperature ``T > 0``.
        alpha: weight of the hard-label cross-entropy in [0, 1].

    Example:
        >>> float(distillation_loss([0], [[0.9, 0.1]], [[0.9, 0.1]], 2.0, 0.0))  # same outputs
        0.0
    """
    if temperature <= 0:
        raise InputValueError(f"`temperature` should be > 0. Received: temperature={temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise InputValueError(f"`alpha` should be in [0, 1]. Received: alpha={alpha}")
    student_probs = tf.convert_to_tensor(student_probs, tf.float32)
    teacher_probs = tf.convert_to_tensor(teacher_probs, tf.float32)
    hard = keras.losses.sparse_categorical_crossentropy(y_true, student_probs)
    t_soft = soften(teacher_probs, temperature)
    s_soft = soften(student_probs, temperature)
    kl = tf.reduce_sum(
        t_soft * (tf.math.log(tf.clip_by_value(t_soft, _EPS, 1.0)) - tf.math.log(s_soft + _EPS)),
        axis=-1,
    )
    return tf.reduce_mean(alpha * hard + (1.0 - alpha) * temperature**2 * kl)


class Distiller(keras.Model):
    """Trains ``student`` to match ``teacher`` (frozen) and the labels; use with ``fit``.

    Args:
        student: tf_keras model to train (outputs probabilities).
        teacher: trained tf_keras model (outputs probabilities); never updated.
        temperature: softening temperature (default 4.0).
        alpha: weight of the hard-label cross-entropy (default 0.1).

    ``compile(optimizer)`` needs no loss; the logged metrics are ``loss``, ``hard_loss``,
    ``soft_loss`` and ``accuracy`` (of the student). ``call`` runs the student.

    Example:
        >>> d = Distiller(student, teacher)
        >>> d.compile(optimizer="adam")
        >>> d.fit(train_ds, epochs=1)
    """

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.1, **kwargs):
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        require_tf_keras_model(student, "student")
        require_tf_keras_model(teacher, "teacher")
        if temperature <= 0:
            raise InputValueError(
                f"`temperature` should be > 0. Received: temperature={temperature}"
            )
        if not 0.0 <= alpha <= 1.0:
            raise InputValueError(f"`alpha` should be in [0, 1]. Received: alpha={alpha}")
        if student.output_shape[-1] != teacher.output_shape[-1]:
            raise InputValueError(
                f"`student` has {student.output_shape[-1]} classes, `teacher` "
                f"{teacher.output_shape[-1]}; they should match."
            )
        # The teacher is never updated: gradients are taken for the student's variables only and
        # the teacher runs in inference mode. Its `trainable` flag is left alone: the teacher is
        # often the user's model, compressed again by the next technique.
        self.student, self.teacher = student, teacher
        self.temperature, self.alpha = float(temperature), float(alpha)
        self._total_tracker = keras.metrics.Mean(name="loss")
        self._hard_tracker = keras.metrics.Mean(name="hard_loss")
        self._soft_tracker = keras.metrics.Mean(name="soft_loss")
        self._acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self._total_tracker, self._hard_tracker, self._soft_tracker, self._acc_tracker]

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _compute_losses(self, y, teacher_probs, student_probs):
        total = distillation_loss(y, teacher_probs, student_probs, self.temperature, self.alpha)
        hard = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, student_probs))
        soft = distillation_loss(y, teacher_probs, student_probs, self.temperature, 0.0)
        return total, hard, soft

    def _record(self, y, student_probs, total, hard, soft):
        self._total_tracker.update_state(total)
        self._hard_tracker.update_state(hard)
        self._soft_tracker.update_state(soft)
        self._acc_tracker.update_state(y, student_probs)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data[0], data[1]
        teacher_probs = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            student_probs = self.student(x, training=True)
            total, hard, soft = self._compute_losses(y, teacher_probs, student_probs)
            total_reg = total + tf.add_n(self.student.losses) if self.student.losses else total
        grads = tape.gradient(total_reg, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables, strict=True))
        return self._record(y, student_probs, total, hard, soft)

    def test_step(self, data):
        x, y = data[0], data[1]
        teacher_probs = self.teacher(x, training=False)
        student_probs = self.student(x, training=False)
        return self._record(
            y, student_probs, *self._compute_losses(y, teacher_probs, student_probs)
        )
