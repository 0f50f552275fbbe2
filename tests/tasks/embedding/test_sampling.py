"""P x K sampling: batch shapes, P distinct classes x K examples, determinism per seed, the
tf.data wrapper reshuffling each epoch, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.embedding.sampling import pk_batches, pk_dataset

# 5 classes: 6, 5, 4, 3 and 2 examples (class 4 has fewer than K = 3)
LABELS = np.array([0] * 6 + [1] * 5 + [2] * 4 + [3] * 3 + [4] * 2)[::-1].copy()


def _check_pk(batch, labels, p, k):
    blocks = labels[batch].reshape(p, k)
    assert (blocks == blocks[:, :1]).all()  # one class per block of k
    assert len(set(blocks[:, 0].tolist())) == p  # p distinct classes


def test_pk_batches_hold_p_distinct_classes_of_k_examples():
    batches = pk_batches(LABELS, p=3, k=3, seed=0, steps=40)
    assert batches.shape == (40, 9) and batches.dtype == np.int64
    assert batches.min() >= 0 and batches.max() < len(LABELS)
    for batch in batches:
        _check_pk(batch, LABELS, 3, 3)
        for block in batch.reshape(3, 3):
            if LABELS[block[0]] != 4:  # enough examples: no repeats
                assert len(set(block.tolist())) == 3
    # class 4 has 2 examples for K = 3: both of them, and one again
    small = [b for b in batches.reshape(-1, 3) if LABELS[b[0]] == 4]
    assert small and all(len(set(b.tolist())) == 2 for b in small)
    # every class shows up over 40 batches
    assert set(LABELS[batches[:, ::3]].ravel().tolist()) == set(range(5))


def test_pk_batches_are_deterministic_per_seed_and_default_to_one_epoch():
    a = pk_batches(LABELS, p=2, k=2, seed=3)
    assert a.shape == (len(LABELS) // 4, 4)
    np.testing.assert_array_equal(a, pk_batches(LABELS, p=2, k=2, seed=3))
    assert not np.array_equal(a, pk_batches(LABELS, p=2, k=2, seed=4))
    assert not np.array_equal(a, pk_batches(LABELS, p=2, k=2, seed=3, epoch=1))
    assert pk_batches(LABELS[:, None], p=5, k=2, seed=0, steps=1).shape == (1, 10)


def test_pk_batches_errors():
    with pytest.raises(InputValueError, match="p=6"):
        pk_batches(LABELS, p=6, k=2)
    with pytest.raises(InputValueError, match="k=1"):
        pk_batches(LABELS, p=2, k=1)
    with pytest.raises(InputValueError, match="empty"):
        pk_batches(np.zeros(0, np.int64), p=1, k=2)
    with pytest.raises(InputValueError, match="steps=0"):
        pk_batches(LABELS, p=2, k=2, steps=0)
    with pytest.raises(InputValueError, match="dtype=float"):
        pk_batches(LABELS.astype(float), p=2, k=2)


def test_pk_dataset_gathers_the_batches_and_reshuffles_each_epoch():
    x = np.arange(len(LABELS) * 2, dtype=np.float32).reshape(-1, 2)
    ds = pk_dataset(x, LABELS, p=2, k=3, seed=5, steps=3)
    assert ds.element_spec[0].shape.as_list() == [6, 2]
    epochs = [[(xb.numpy(), yb.numpy()) for xb, yb in ds] for _ in range(2)]
    for e, batches in enumerate(epochs):
        expected = pk_batches(LABELS, p=2, k=3, seed=5, steps=3, epoch=e)
        assert len(batches) == 3
        for (xb, yb), idx in zip(batches, expected, strict=True):
            np.testing.assert_array_equal(xb, x[idx])
            np.testing.assert_array_equal(yb, LABELS[idx])
            _check_pk(idx, LABELS, 2, 3)
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])
    fresh = [xb.numpy() for xb, _ in pk_dataset(x, LABELS, p=2, k=3, seed=5, steps=3)]
    np.testing.assert_array_equal(fresh[0], epochs[0][0][0])
    indices = next(iter(pk_dataset(None, LABELS, p=2, k=3, seed=5, steps=3)))[0].numpy()
    np.testing.assert_array_equal(indices, pk_batches(LABELS, p=2, k=3, seed=5, steps=3)[0])
    with pytest.raises(InputValueError, match="one row per example"):
        pk_dataset(x[:-1], LABELS, p=2, k=2)
    with pytest.raises(InputValueError, match="p=9"):
        pk_dataset(x, LABELS, p=9, k=2)
