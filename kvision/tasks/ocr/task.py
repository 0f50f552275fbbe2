"""The OCR :class:`~kvision.tasks.base.Task`: text-line recognition with a CRNN and CTC, decoded
outside the graph, CER as the metric (lower is better).

The model's raw output is ``char_logits`` float ``[B, T, K + 1]`` (index 0 the CTC blank, index
``i + 1`` the contract's ``labels[i]``: the charset). The contract's ``postprocess`` says how to
decode: ``{"decoder": "greedy" | "beam", "beam_width": 8, "sequence": "conv" | "bilstm"}``.
Training targets are the label's character indices (1..K), padded with 0 to the batch's longest.

Parity (Keras vs an artifact) compares decoded strings: the fraction of lines decoded to exactly
the Keras model's text (``text_agreement``) and the CER between the two; float variants are also
held to a raw-logit tolerance. A quantized variant checked on samples where the Keras model
decodes nothing fails as "not verified".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvision._keras import keras
from kvision.errors import InputValueError
from kvision.tasks.base import (
    Parity,
    StreamingMetric,
    Task,
    Tolerance,
    check_auto_loss,
    register_task,
)
from kvision.tasks.ocr.model import CHAR_OUTPUT


@dataclass
class OcrTarget:
    """The ground truth of one line: its text and its kind (``clean``, ``distorted``, ...)."""

    text: str
    kind: str = ""


@dataclass
class OcrPrediction:
    """One decoded line: the text and each character's confidence (greedy) or the text's log
    probability (beam)."""

    text: str
    confidences: list | None = None
    log_prob: float | None = None


def decode_lines(outputs: dict, contract) -> list[OcrPrediction]:
    """Raw ``char_logits`` of a batch -> one :class:`OcrPrediction` per line, by the contract's
    decoder."""
    from kvision.tasks.ocr.ctc import beam_decode, greedy_decode

    logits = np.asarray(outputs[CHAR_OUTPUT], np.float32)
    post = getattr(contract, "postprocess", None) or {}
    charset = list(contract.labels)
    if post.get("decoder", "greedy") == "beam":
        width = int(post.get("beam_width", 8))
        return [OcrPrediction(t, log_prob=lp) for t, lp in beam_decode(logits, charset, width)]
    return [OcrPrediction(t, confidences=c) for t, c in greedy_decode(logits, charset)]


class CTCLoss(keras.losses.Loss):
    """CTC loss (Graves et al., ICML 2006) on ``char_logits`` ``[B, T, K + 1]`` with targets
    int ``[B, L]`` (character indices 1..K, 0-padded): the batch mean of ``tf.nn.ctc_loss``
    (blank index 0)."""

    def __init__(self, name: str = "ctc", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        import tensorflow as tf

        labels = tf.cast(y_true, tf.int32)
        logits = tf.cast(y_pred, tf.float32)
        label_length = tf.reduce_sum(tf.cast(labels > 0, tf.int32), axis=-1)
        logit_length = tf.fill([tf.shape(logits)[0]], tf.shape(logits)[1])
        loss = tf.nn.ctc_loss(labels, logits, label_length, logit_length,
                              logits_time_major=False, blank_index=0)  # fmt: skip
        return tf.reduce_mean(loss)


class OcrMetric(StreamingMetric):
    """CER, WER and exact-line accuracy, streamed; CER also per line kind."""

    def __init__(self, contract):
        self.contract = contract
        self.totals = {}  # kind -> [edit distance, chars, word distance, words, exact, lines]

    def update(self, outputs, targets) -> None:
        from rapidfuzz.distance import Levenshtein

        for target, pred in zip(targets, decode_lines(outputs, self.contract), strict=True):
            for kind in ("all", target.kind or "all"):
                t = self.totals.setdefault(kind, [0, 0, 0, 0, 0, 0])
                t[0] += Levenshtein.distance(target.text, pred.text)
                t[1] += len(target.text)
                t[2] += Levenshtein.distance(target.text.split(), pred.text.split())
                t[3] += len(target.text.split())
                t[4] += int(target.text == pred.text)
                t[5] += 1
                if kind == (target.kind or "all"):
                    break

    def result(self) -> dict:
        t = self.totals.get("all", [0, 0, 0, 0, 0, 0])
        out = {
            "CER": t[0] / t[1] if t[1] else None,
            "WER": t[2] / t[3] if t[3] else None,
            "exact_match": t[4] / t[5] if t[5] else None,
            "n": t[5],
        }
        kinds = {k: v for k, v in self.totals.items() if k != "all"}
        if kinds:
            out["CER_by_kind"] = {k: (v[0] / v[1] if v[1] else None) for k, v in kinds.items()}
            out["lines_by_kind"] = {k: v[5] for k, v in kinds.items()}
        return out


@register_task("ocr")
class OcrTask(Task):
    """Text-line recognition (module docstring)."""

    primary_metric = "CER"
    higher_is_better = False
    stages = "kvision.tasks.ocr.stages"
    artifact_name = "recognizer"
    default_backbone = "crnn"
    output_names = (CHAR_OUTPUT,)
    #: ``min_agreement`` is the fraction of lines decoded to the Keras model's exact text
    tolerances = {
        "float": Tolerance(max_abs_diff=1e-3, min_agreement=0.99),
        "float16": Tolerance(max_abs_diff=None, min_agreement=0.97),
        "dynamic": Tolerance(max_abs_diff=None, min_agreement=0.95),
        "int8": Tolerance(max_abs_diff=None, min_agreement=0.9),
        "int16x8": Tolerance(max_abs_diff=None, min_agreement=0.95),
    }

    def compile_args(self, train_cfg, num_classes: int) -> dict:
        check_auto_loss(train_cfg, self.name)
        return {"loss": {CHAR_OUTPUT: CTCLoss()}, "metrics": None}

    def monitor(self, has_validation: bool) -> tuple[str, str]:
        return ("val_loss" if has_validation else "loss"), "min"

    def decode(self, outputs, contract, image_sizes=None) -> list:
        return decode_lines(outputs, contract)

    def metric(self, contract) -> OcrMetric:
        return OcrMetric(contract)

    def parity(self, reference, outputs, variant: str, contract=None, min_agreement=None):
        """Raw-logit difference (float variants) and the agreement of decoded strings."""
        from kvision.tasks.ocr.ctc import cer

        if contract is None:
            raise InputValueError("OCR parity decodes the outputs: pass the model's `contract`.")
        tol = self.tolerance(variant)
        need = tol.min_agreement if min_agreement is None else min_agreement
        self.check_outputs(reference, "the Keras outputs")
        self.check_outputs(outputs, "the artifact's outputs")
        ref, out = np.asarray(reference[CHAR_OUTPUT]), np.asarray(outputs[CHAR_OUTPUT])
        if ref.shape != out.shape:
            shape = f"{list(out.shape)} differs from Keras {list(ref.shape)}"
            return Parity(False, {}, [f"{CHAR_OUTPUT}: shape {shape}"])
        if not (np.all(np.isfinite(out)) and np.all(np.isfinite(ref))):
            return Parity(False, {}, [f"{CHAR_OUTPUT}: outputs contain NaN or Inf"])
        checks, reasons = {"max_abs_diff": float(np.abs(out - ref).max())}, []
        if tol.max_abs_diff is not None and not checks["max_abs_diff"] <= tol.max_abs_diff:
            reasons.append(
                f"max |artifact - keras| = {checks['max_abs_diff']:.3g} > atol={tol.max_abs_diff:g}"
            )
        keras_text = [p.text for p in decode_lines(reference, contract)]
        text = [p.text for p in decode_lines(outputs, contract)]
        agreement = float(np.mean([a == b for a, b in zip(keras_text, text, strict=True)]))
        checks.update(text_agreement=round(agreement, 6),
                      CER_vs_keras=cer(keras_text, text))  # fmt: skip
        if not any(keras_text) and tol.max_abs_diff is None:
            reasons.append(
                f"not verified: the Keras model decodes no character on the {len(ref)} samples, "
                "so texts cannot be compared (train longer)"
            )
        elif agreement < need:
            reasons.append(f"decoded texts agree on {agreement:.2%} of lines < required {need:.2%}")
        return Parity(not reasons, checks, reasons)

    def prediction_json(self, prediction, contract) -> dict:
        out = {"text": prediction.text}
        if prediction.confidences is not None:
            out["confidences"] = prediction.confidences
        if prediction.log_prob is not None:
            out["log_prob"] = round(float(prediction.log_prob), 4)
        return out

    def draw(self, pixels, prediction, contract, min_score: float = 0.0):
        from kvision.tasks.ocr.draw import caption

        return caption(pixels, prediction.text)

    def remedy(self, artifact_name: str) -> str:
        if "qat" in artifact_name:
            return "train QAT longer (compress.qat.epochs) or at a lower learning rate"
        return "use QAT (compress.techniques includes qat), or the conv sequence model"
