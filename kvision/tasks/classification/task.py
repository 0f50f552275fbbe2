"""The classification :class:`~kvision.tasks.base.Task`: softmax head, cross-entropy, top-1.

The head is global average pooling -> dropout -> a dense softmax layer named ``probabilities``
(TF Serving users get probabilities from the ``serving_default`` signature). Decoding is the
arg-max; the streaming metric accumulates a confusion matrix, so accuracy, macro-F1 and the
per-class scores come from one pass over the split; parity compares probabilities and top-1
classes with the tolerance table below.

Example:
    >>> task = get_task("classification")
    >>> metric = task.metric(contract)
    >>> metric.update({"probabilities": probs}, labels)
    >>> metric.result()["accuracy"]
"""

from __future__ import annotations

import numpy as np

from kvision.evaluate.metrics import class_ids, metrics_from_confusion
from kvision.tasks.base import (
    Parity,
    StreamingMetric,
    Task,
    Tolerance,
    check_auto_loss,
    register_task,
)

OUTPUT = "probabilities"
#: Keras probability margin under which a top-1 disagreement is a near-tie (not an error).
TIE_TOL = 1e-5


class ClassificationMetric(StreamingMetric):
    """Accuracy, macro/weighted F1, per-class scores and the confusion matrix, streamed.

    Args:
        labels: class names (index = class id).

    Example:
        >>> m = ClassificationMetric(["a", "b"])
        >>> m.update({"probabilities": np.array([[0.9, 0.1], [0.3, 0.7]])}, np.array([0, 0]))
        >>> m.result()["accuracy"]
        0.5
    """

    def __init__(self, labels):
        self.labels = list(labels)
        k = len(self.labels)
        self.confusion = np.zeros((k, k), dtype=np.int64)

    def update(self, outputs, targets) -> None:
        probs = _single(outputs)
        k = len(self.labels)
        true_ids = class_ids(np.asarray(targets).reshape(-1), "labels", k)
        pred_ids = class_ids(probs, "probabilities", k)
        np.add.at(self.confusion, (true_ids, pred_ids), 1)

    def result(self) -> dict:
        return {
            **metrics_from_confusion(self.confusion, self.labels),
            "n": int(self.confusion.sum()),
        }


@register_task("classification")
class ClassificationTask(Task):
    """One class per image (see the module docstring)."""

    primary_metric = "accuracy"
    higher_is_better = True
    stages = "kvision.tasks.classification.stages"
    artifact_name = "classifier"
    output_names = (OUTPUT,)
    #: float artifacts must match Keras to 1e-4 and agree on every top-1 class; quantized ones
    #: are judged on top-1 agreement (``compress.min_top1_agreement`` overrides the int8 rows).
    tolerances = {
        "float": Tolerance(max_abs_diff=1e-4, min_agreement=1.0),
        "float16": Tolerance(max_abs_diff=None, min_agreement=0.9),
        "dynamic": Tolerance(max_abs_diff=None, min_agreement=0.9),
        "int8": Tolerance(max_abs_diff=None, min_agreement=0.9),
        "int16x8": Tolerance(max_abs_diff=None, min_agreement=0.9),
    }

    def build_head(self, features, num_classes: int, dropout: float = 0.2, **_):
        from kvision._keras import keras

        x = features[list(features)[-1]] if isinstance(features, dict) else features
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        return {OUTPUT: keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT)(x)}

    def compile_args(self, train_cfg, num_classes: int) -> dict:
        check_auto_loss(train_cfg, self.name)
        from kvision._keras import keras

        if train_cfg.label_smoothing:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg.label_smoothing)
        else:
            loss = keras.losses.SparseCategoricalCrossentropy()
        return {"loss": loss, "metrics": ["accuracy"]}

    def monitor(self, has_validation: bool) -> tuple[str, str]:
        return ("val_accuracy" if has_validation else "accuracy"), "max"

    def training_targets(self, dataset, train_cfg, model):
        """Integer labels become one-hot rows when the loss smooths labels."""
        if not train_cfg.label_smoothing:
            return dataset
        import tensorflow as tf

        k = int(model.output_shape[-1])
        return dataset.map(lambda x, y, *w: (x, tf.one_hot(tf.cast(y, tf.int32), k), *w))

    def decode(self, outputs, contract, image_sizes=None) -> list[dict]:
        probs = _single(outputs)
        return [{"class": int(np.argmax(p)), "probabilities": p} for p in probs]

    def metric(self, contract) -> ClassificationMetric:
        return ClassificationMetric(contract.labels)

    def parity(
        self,
        reference,
        outputs,
        variant: str,
        contract=None,
        min_agreement: float | None = None,
    ):
        """Max/mean absolute difference of the probabilities and top-1 agreement.

        A top-1 disagreement where the Keras model's own margin between the two classes is at
        most ``TIE_TOL`` is a near-tie (no defined top-1): counted in ``top1_near_ties`` and
        excused. ``min_agreement`` overrides the table's row (the compression config's
        ``min_top1_agreement`` for quantized variants).
        """
        tol = self.tolerance(variant)
        need = tol.min_agreement if min_agreement is None else min_agreement
        ref, out = _single(reference), _single(outputs)
        checks = {"max_abs_diff": None, "mean_abs_diff": None}
        if ref.shape != out.shape:
            shapes = f"output shape {list(out.shape)} differs from Keras {list(ref.shape)}"
            return Parity(False, checks, [shapes])
        diff = np.abs(out.astype(np.float64) - ref)
        checks.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()))
        agree, ties = top1_agreement(ref, out, TIE_TOL)
        checks.update(top1_agreement=agree, top1_near_ties=ties)
        reasons = []
        if not np.all(np.isfinite(out)):
            reasons.append("outputs contain NaN or Inf")
        if tol.max_abs_diff is not None and checks["max_abs_diff"] > tol.max_abs_diff:
            reasons.append(
                f"max |artifact - keras| = {checks['max_abs_diff']:.3g} > atol={tol.max_abs_diff:g}"
            )
        if agree + ties / len(ref) < need:
            reasons.append(
                f"top-1 agreement {agree:.2%} ({ties} near-ties excused) < required {need:.2%}"
            )
        return Parity(not reasons, checks, reasons)

    def prediction_json(self, prediction, contract, top_k: int = 3) -> dict:
        probs = np.asarray(prediction["probabilities"])
        order = np.argsort(-probs)[:top_k]
        names = contract.labels or [str(i) for i in range(len(probs))]
        return {
            "label": names[int(order[0])],
            "class": int(order[0]),
            "top_k": [{"label": names[int(i)], "probability": float(probs[i])} for i in order],
        }


def top1_agreement(reference: np.ndarray, outputs: np.ndarray, tie_tol: float = TIE_TOL):
    """``(agreement in [0, 1], near-ties)`` of the arg-max classes of two ``[N, K]`` arrays.

    A disagreement is a near-tie when ``reference``'s margin between its top class and the
    other array's top class is at most ``tie_tol``.
    """
    ref_top = reference.argmax(axis=-1)
    out_top = outputs.argmax(axis=-1)
    disagree = np.flatnonzero(ref_top != out_top)
    margins = reference[disagree, ref_top[disagree]] - reference[disagree, out_top[disagree]]
    return float(1.0 - len(disagree) / len(reference)), int(np.sum(margins <= tie_tol))


def _single(outputs) -> np.ndarray:
    """The probabilities array of a classifier's outputs (a dict or a bare array)."""
    if isinstance(outputs, dict):
        if OUTPUT in outputs:
            return np.asarray(outputs[OUTPUT])
        if len(outputs) == 1:
            return np.asarray(next(iter(outputs.values())))
        raise ValueError(
            f"A classifier has one output ({OUTPUT!r}). Received outputs: {sorted(outputs)}"
        )
    return np.asarray(outputs)
