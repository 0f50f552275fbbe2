"""Retrieval metrics against hand-computed cases (recall@k, mAP@R, leave-one-out retrieval on a
hand-made 2-D embedding set), the streaming accumulator, and pair-verification thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.embedding.metrics import (
    StreamingEmbeddings,
    choose_threshold,
    cosine_similarity,
    map_at_r,
    recall_at_k,
    retrieval_metrics,
    verify_pairs,
)

# Four queries with their ranked neighbours' labels (the query itself excluded):
#   A, label 0, R = 3: [0, 1, 0, 0, 2]  first 3: match, miss, match -> AP = (1/1 + 2/3) / 3 = 5/9
#   B, label 1, R = 2: [2, 1, 1, 0, 0]  first 2: miss, match        -> AP = (1/2) / 2     = 1/4
#   C, label 2, R = 1: [2, 0, 0, 1, 1]  first 1: match              -> AP = 1
#   D, label 3, R = 0: [0, 1, 2, 0, 1]  no other item of label 3: left out of mAP@R
# recall@1: A, C -> 2/4; recall@2: A, B, C -> 3/4; recall@5: D never matches -> 3/4
QUERIES = [0, 1, 2, 3]
NEIGHBORS = [[0, 1, 0, 0, 2], [2, 1, 1, 0, 0], [2, 0, 0, 1, 1], [0, 1, 2, 0, 1]]
R = [3, 2, 1, 0]


def test_recall_at_k_by_hand():
    assert recall_at_k(QUERIES, NEIGHBORS, ks=(1, 2, 5)) == {1: 0.5, 2: 0.75, 5: 0.75}
    with pytest.raises(InputValueError, match="at least 10 columns"):
        recall_at_k(QUERIES, NEIGHBORS)  # ks (1, 5, 10) but 5 neighbours
    with pytest.raises(InputValueError, match="ks="):
        recall_at_k(QUERIES, NEIGHBORS, ks=(0,))
    with pytest.raises(InputValueError, match="one row per query"):
        recall_at_k(QUERIES[:3], NEIGHBORS, ks=(1,))


def test_map_at_r_by_hand():
    assert map_at_r(QUERIES, NEIGHBORS, R) == pytest.approx((5 / 9 + 1 / 4 + 1) / 3)
    with pytest.raises(InputValueError, match="undefined"):
        map_at_r([3], [[0]], [0])
    with pytest.raises(InputValueError, match="at least 4 columns"):
        map_at_r([0], [[0, 0, 0]], [4])


def _hand_set():
    """Six 2-D embeddings at these angles (cosine ranking = angle ranking), random norms:

    item:   0    1    2    3    4    5
    angle:  0   10   25   85   95  175 deg
    label:  0    0    1    1    0    2     (R: 2, 2, 1, 1, 2, and item 5 is a lone query)

    ranked neighbours' labels, by angular distance:
      q0: 1(10) 2(25) 3(85) 4(95) 5  -> [0, 1, 1, 0, 2]  AP@2 = (1 + 0) / 2 = 0.5
      q1: 0(10) 2(15) 3(75) 4(85) 5  -> [0, 1, 1, 0, 2]  AP@2 = 0.5
      q2: 1(15) 0(25) 3(60) 4(70) 5  -> [0, 0, 1, 0, 2]  AP@1 = 0, first match at rank 3
      q3: 4(10) 2(60) 1(75) 0(85) 5  -> [0, 1, 0, 0, 2]  AP@1 = 0, first match at rank 2
      q4: 3(10) 2(70) 5(80) 1(85) 0  -> [1, 1, 2, 0, 0]  AP@2 = 0, first match at rank 4
    recall@1 = 2/5, recall@2 = 3/5 (q0, q1, q3), recall@10 (all 5 neighbours) = 1,
    mAP@R = (0.5 + 0.5) / 5 = 0.2, n = 5 scored queries, 1 lone query.
    """
    angles = np.radians([0, 10, 25, 85, 95, 175])
    norms = np.random.default_rng(0).uniform(0.5, 3.0, 6)
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1) * norms[:, None]
    return emb.astype(np.float32), np.array([0, 0, 1, 1, 0, 2])


EXPECTED = {"recall@1": 0.4, "recall@2": 0.6, "recall@10": 1.0, "mAP@R": 0.2, "n": 5,
            "lone_queries": 1}  # fmt: skip


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_retrieval_metrics_on_a_hand_made_set(chunk_size):
    emb, labels = _hand_set()
    out = retrieval_metrics(emb, labels, ks=(1, 2, 10), chunk_size=chunk_size)
    assert out == pytest.approx(EXPECTED)


def test_retrieval_metrics_match_a_full_sort_reference():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 80)
    emb = rng.normal(size=(80, 8)).astype(np.float32)
    out = retrieval_metrics(emb, labels, chunk_size=16)  # top-k by partial sort
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    neighbors = labels[np.argsort(-sims, axis=1, kind="stable")[:, :-1]]
    r = np.bincount(labels)[labels] - 1
    recall = recall_at_k(labels, neighbors)
    assert out["mAP@R"] == pytest.approx(map_at_r(labels, neighbors, r))
    assert [out[f"recall@{k}"] for k in (1, 5, 10)] == pytest.approx([recall[1], recall[5],
                                                                      recall[10]])  # fmt: skip


def test_retrieval_metrics_without_scorable_queries_and_errors():
    out = retrieval_metrics(np.eye(3, dtype=np.float32), [0, 1, 2])
    assert out == {"recall@1": None, "recall@5": None, "recall@10": None, "mAP@R": None,
                   "n": 0, "lone_queries": 3}  # fmt: skip
    with pytest.raises(InputValueError, match="should have 3 entries"):
        retrieval_metrics(np.eye(3), [0, 1])
    with pytest.raises(InputValueError, match="NaN"):
        retrieval_metrics([[np.nan, 0.0], [1.0, 0.0]], [0, 0])
    with pytest.raises(InputValueError, match="2-D"):
        retrieval_metrics(np.zeros(3), [0, 0, 0])


def test_streaming_embeddings_equals_one_shot():
    emb, labels = _hand_set()
    metric = StreamingEmbeddings(ks=(1, 2, 10))
    assert metric.result()["n"] == 0 and metric.result()["mAP@R"] is None
    metric.update(emb[:4], labels[:4, None])
    metric.update(emb[4:], labels[4:])
    assert len(metric) == 6
    assert metric.result() == pytest.approx(EXPECTED)
    with pytest.raises(InputValueError, match="D=2"):
        metric.update(np.zeros((2, 3)), [0, 1])


def test_choose_threshold_by_hand():
    # sorted: 0.1 F, 0.2 F, 0.35 F | 0.4 T, 0.6 T, 0.8 T: separable between 0.35 and 0.4
    sims = [0.1, 0.4, 0.35, 0.8, 0.6, 0.2]
    same = [False, True, False, True, True, False]
    threshold, accuracy = choose_threshold(sims, same)
    assert (threshold, accuracy) == pytest.approx((0.375, 1.0))
    np.testing.assert_array_equal(verify_pairs(sims, threshold), same)
    # 0.1 F, 0.3 T, 0.5 F, 0.7 T: thresholds 0.2 (3 right) and 0.6 (3 right) tie; 0.4, "all
    # same" and "all different" get 2 -> the lower middle of the tied two, 0.2
    assert choose_threshold([0.7, 0.5, 0.3, 0.1], [1, 0, 1, 0]) == pytest.approx((0.2, 0.75))
    # equal similarities are never split: 0.5 T, 0.5 F, 0.9 T -> "all same" (2/3) or 0.7 (2/3)
    assert choose_threshold([0.5, 0.5, 0.9], [True, False, True]) == pytest.approx((0.5, 2 / 3))
    # all different: the threshold sits just above the highest similarity
    threshold, accuracy = choose_threshold([0.2, 0.4], [False, False])
    assert accuracy == 1.0 and 0.4 < threshold < 0.4 + 1e-12
    assert not verify_pairs([0.2, 0.4], threshold).any()


def test_choose_threshold_errors_and_cosine_similarity():
    with pytest.raises(InputValueError, match="non-empty"):
        choose_threshold([], [])
    with pytest.raises(InputValueError, match="NaN"):
        choose_threshold([0.1, np.nan], [0, 1])
    with pytest.raises(InputValueError, match="booleans"):
        choose_threshold([0.1, 0.2], [0, 2])
    with pytest.raises(InputValueError, match="booleans"):
        choose_threshold([0.1, 0.2], [0])
    sims = cosine_similarity([[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, -3.0]])
    assert sims == pytest.approx([1 / math.sqrt(2), -1.0], abs=1e-6)
    with pytest.raises(InputValueError, match="same shape"):
        cosine_similarity(np.ones((2, 2)), np.ones((3, 2)))
