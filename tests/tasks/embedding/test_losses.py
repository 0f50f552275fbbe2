"""Triplet loss against the brute-force NumPy reference for every mining mode; ArcFace logits by
hand; the ArcFace training model fits, and saves and loads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from kvision._keras import keras
from kvision.errors import InputValueError
from kvision.tasks.embedding.losses import (
    ArcFaceHead,
    TripletLoss,
    arcface_training_model,
    brute_force_triplet_loss,
)


def _batch(seed: int, n: int = 12, dim: int = 5, classes: int = 4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    return labels, (0.5 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("distance", ["cosine", "squared_l2"])
@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_triplet_loss_equals_brute_force(mining, distance):
    loss = TripletLoss(margin=0.3, mining=mining, distance=distance)
    for seed in range(4):
        labels, emb = _batch(seed)
        expected = brute_force_triplet_loss(labels, emb, 0.3, mining, distance)
        assert expected > 0
        assert float(loss(labels, emb)) == pytest.approx(expected, rel=1e-5, abs=1e-5)
        # [B, 1] labels, as model.fit passes them
        assert float(loss(labels[:, None], emb)) == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_triplet_loss_in_graph_mode_with_unknown_batch_has_finite_gradients(mining):
    loss = TripletLoss(margin=0.2, mining=mining)
    labels, emb = _batch(7, n=10)
    emb[1] = emb[0]  # a zero distance between two items

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 5])])
    def value_and_grad(y, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(y, x)
        return value, tape.gradient(value, x)

    value, grad = value_and_grad(tf.constant(labels), tf.constant(emb))
    expected = brute_force_triplet_loss(labels, emb, 0.2, mining, "cosine")
    assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0


@pytest.mark.parametrize("distance", ["cosine", "squared_l2"])
@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_triplet_loss_is_zero_for_classes_separated_beyond_the_margin(mining, distance):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    emb = np.eye(4, dtype=np.float32)[labels] + 0.01 * rng.normal(size=(12, 4)).astype(np.float32)
    assert brute_force_triplet_loss(labels, emb, 0.2, mining, distance) == 0.0
    assert float(TripletLoss(0.2, mining, distance)(labels, emb)) == pytest.approx(0.0, abs=1e-7)


def test_semihard_falls_back_to_the_hardest_negative():
    # 1-D points under squared L2: anchor 0 at 0, positive at 1 (d = 1), negatives at 0.5 and
    # 0.6 (d = 0.25, 0.36), none farther than the positive -> the hardest, 0.25
    labels = np.array([0, 0, 1, 1])
    emb = np.array([[0.0], [1.0], [0.5], [0.6]], np.float32)
    loss = TripletLoss(margin=0.1, mining="semihard", distance="squared_l2")
    # pairs (0,1): 1 - 0.25 + 0.1 = 0.85; (1,0): anchor at 1, negatives d = 0.25, 0.16, none
    # > 1 -> 0.16: 1 - 0.16 + 0.1 = 0.94; (2,3): d_ap = 0.01, negatives d = 0.25, 0.25 are
    # semi-hard -> max(0.01 - 0.25 + 0.1, 0) = 0; (3,2): negatives d = 0.36, 0.16 -> 0.16: 0.
    # Mean over the 4 (anchor, positive) pairs.
    assert float(loss(labels, emb)) == pytest.approx((0.85 + 0.94) / 4, abs=1e-6)
    assert brute_force_triplet_loss(labels, emb, 0.1, "semihard", "squared_l2") == pytest.approx(
        (0.85 + 0.94) / 4
    )


def test_triplet_loss_config_round_trip_and_errors():
    loss = TripletLoss(margin=0.5, mining="all", distance="squared_l2")
    again = TripletLoss.from_config(loss.get_config())
    labels, emb = _batch(1)
    assert (again.margin, again.mining, again.distance) == (0.5, "all", "squared_l2")
    assert float(again(labels, emb)) == pytest.approx(float(loss(labels, emb)))
    with pytest.raises(InputValueError, match="mining='batch'"):
        TripletLoss(mining="batch")
    with pytest.raises(InputValueError, match="distance='l1'"):
        TripletLoss(distance="l1")
    with pytest.raises(InputValueError, match="margin=-0.1"):
        TripletLoss(margin=-0.1)


def _unit(deg: float, norm: float = 1.0):
    return [norm * math.cos(math.radians(deg)), norm * math.sin(math.radians(deg))]


def test_arcface_logits_by_hand():
    s, m = 10.0, 0.5
    head = ArcFaceHead(2, scale=s, margin=m)
    head.build([tf.TensorShape([None, 2]), tf.TensorShape([None])])
    head.set_weights([np.array([[2.0, 0.0], [0.0, 3.0]], np.float32)])  # centres at 0 and 90 deg
    emb = np.array([_unit(60, 3.0), _unit(60), _unit(170)], np.float32)
    logits = head([emb, tf.constant([0, 1, 0])]).numpy()
    c60, c30 = math.cos(math.radians(60)), math.cos(math.radians(30))
    # item 0: theta_0 = 60 deg (true class), theta_1 = 30 deg; the norm 3 does not matter
    assert logits[0] == pytest.approx([s * math.cos(math.radians(60) + m), s * c30], abs=1e-4)
    # item 1: true class 1 at theta_1 = 30 deg
    assert logits[1] == pytest.approx([s * c60, s * math.cos(math.radians(30) + m)], abs=1e-4)
    # item 2: theta_0 = 170 deg > pi - m (151.4 deg): cos(theta) - m sin(m); theta_1 = 80 deg
    c170 = math.cos(math.radians(170))
    assert logits[2] == pytest.approx(
        [s * (c170 - m * math.sin(m)), s * math.cos(math.radians(80))], abs=1e-4
    )
    cos = head.cosine(emb).numpy()
    assert cos[0] == pytest.approx([c60, c30], abs=1e-6)
    assert head(emb).numpy() == pytest.approx(s * cos, abs=1e-5)

    easy = ArcFaceHead(2, scale=s, margin=m, easy_margin=True)
    easy.build(tf.TensorShape([None, 2]))
    easy.set_weights(head.get_weights())
    # theta_0 = 100 deg: cos < 0, no margin; theta_0 = 60 deg: the margin as before
    out = easy([np.array([_unit(100), _unit(60)], np.float32), tf.constant([0, 0])]).numpy()
    assert out[:, 0] == pytest.approx(
        [s * math.cos(math.radians(100)), s * math.cos(math.radians(60) + m)], abs=1e-4
    )


def test_arcface_config_round_trip_and_errors():
    head = ArcFaceHead(5, scale=16.0, margin=0.3, easy_margin=True, name="h")
    again = ArcFaceHead.from_config(head.get_config())
    assert (again.num_classes, again.scale, again.margin, again.easy_margin) == (5, 16.0, 0.3, True)
    emb = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    labels = tf.constant([0, 4, 2])
    head([emb, labels])
    again([emb, labels])
    again.set_weights(head.get_weights())
    np.testing.assert_allclose(again([emb, labels]), head([emb, labels]), atol=1e-6)
    with pytest.raises(InputValueError, match="num_classes=1"):
        ArcFaceHead(1)
    with pytest.raises(InputValueError, match="scale=0"):
        ArcFaceHead(3, scale=0)
    with pytest.raises(InputValueError, match="margin=2"):
        ArcFaceHead(3, margin=2)


def test_arcface_training_model_fits_and_the_embedder_is_exported(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 8)
    x = (rng.normal(size=(4, 8))[y] + 0.3 * rng.normal(size=(32, 8))).astype(np.float32)
    inputs = keras.Input((8,))
    embedder = keras.Model(
        inputs, keras.layers.UnitNormalization()(keras.layers.Dense(6)(inputs)), name="embedder"
    )
    model = arcface_training_model(embedder, num_classes=4, scale=16.0, margin=0.3)
    model.compile(keras.optimizers.Adam(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    history = model.fit((x, y), y, batch_size=16, epochs=6, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert model.get_layer("embedder") is embedder
    np.testing.assert_allclose(np.linalg.norm(embedder(x).numpy(), axis=1), 1.0, atol=1e-5)

    path = str(tmp_path / "train.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict((x, y), verbose=0),
                               model.predict((x, y), verbose=0), atol=1e-5)  # fmt: skip
    with pytest.raises(InputValueError, match="one image input"):
        arcface_training_model(keras.layers.Dense(3), num_classes=3)
