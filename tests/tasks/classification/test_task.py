"""The classification task: streaming metric, parity table, decoding and prediction JSON."""

import numpy as np
import pytest

from kvision.evaluate.metrics import classification_metrics
from kvision.models.contract import InputContract
from kvision.tasks import get_task

LABELS = ["a", "b", "c", "d"]


def _probs(rng, n, k=4):
    logits = rng.normal(size=(n, k))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_streamed_metric_equals_whole_split_metric():
    rng = np.random.default_rng(0)
    probs, labels = _probs(rng, 103), rng.integers(0, 4, 103)
    metric = get_task("classification").metric(InputContract(8, 8, 1, labels=LABELS))
    for start in range(0, 103, 16):  # uneven last batch
        metric.update({"probabilities": probs[start : start + 16]}, labels[start : start + 16])
    streamed = metric.result()
    whole = classification_metrics(labels, probs, LABELS)
    assert streamed == whole
    assert streamed["n"] == 103
    assert streamed["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))


def test_parity_float_row_requires_atol_and_full_agreement():
    task = get_task("classification")
    rng = np.random.default_rng(1)
    ref = _probs(rng, 50)
    assert task.parity({"probabilities": ref}, {"probabilities": ref + 5e-5}, "float32").ok
    off = ref.copy()
    off[0] += 1e-3
    parity = task.parity({"probabilities": ref}, {"probabilities": off}, "saved_model")
    assert not parity.ok and "atol=0.0001" in parity.reason
    assert parity.checks["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


def test_parity_int8_row_judges_top1_only_and_excuses_near_ties():
    task = get_task("classification")
    ref = np.array([[0.6, 0.4], [0.5, 0.5 - 1e-6], [0.9, 0.1], [0.8, 0.2]], np.float32)
    swapped = ref[:, ::-1].copy()
    out = ref.copy()
    out[1] = swapped[1]  # a near-tie flips: excused
    parity = task.parity({"probabilities": ref}, {"probabilities": out}, "ptq_int8")
    assert parity.ok and parity.checks["top1_near_ties"] == 1
    out[0] = swapped[0]  # a real flip: 2 of 4 disagree, 1 excused -> 75 % < 90 %
    parity = task.parity({"probabilities": ref}, {"probabilities": out}, "ptq_int8")
    assert not parity.ok and "top-1 agreement 50.00%" in parity.reason
    # the compression config may lower the bar for quantized variants
    relaxed = task.parity(
        {"probabilities": ref}, {"probabilities": out}, "ptq_int8", min_agreement=0.7
    )
    assert relaxed.ok


def test_parity_rejects_shape_mismatch_and_nan():
    task = get_task("classification")
    ref = np.full((3, 4), 0.25, np.float32)
    assert "output shape" in task.parity(ref, ref[:, :3], "int8").reason
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert "NaN" in task.parity(ref, bad, "int8").reason


def test_decode_and_prediction_json():
    task = get_task("classification")
    contract = InputContract(8, 8, 1, labels=LABELS)
    probs = np.array([[0.1, 0.6, 0.2, 0.1]], np.float32)
    (pred,) = task.decode({"probabilities": probs}, contract)
    assert pred["class"] == 1
    js = task.prediction_json(pred, contract, top_k=2)
    assert js["label"] == "b"
    assert [t["label"] for t in js["top_k"]] == ["b", "c"]
    assert js["top_k"][0]["probability"] == pytest.approx(0.6)
