"""The embedding task's own parts: ``train.loss`` parsing, unseen-class splits, parity by cosine
and nearest neighbours (ties included), the retrieval metric, training-only heads sharing the
embedder's weights, balanced verification pairs, and a tiny ``kvision pipeline task=embedding``
with triplet and ArcFace training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_SPINE_OVERRIDES, write_bars_npz

from kvision._keras import keras
from kvision.config import load_config
from kvision.errors import InputValueError
from kvision.tasks import get_task
from kvision.tasks.embedding.model import (
    EMBEDDING_OUTPUT,
    LOGITS_OUTPUT,
    build_embedder,
    training_model,
)
from kvision.tasks.embedding.stages import balanced_pairs, pk_shape, unseen_classes
from kvision.tasks.embedding.task import (
    NEIGHBOUR_TIE,
    RetrievalMetric,
    loss_spec,
    neighbour_agreement,
)

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]  # fmt: skip


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------------------- train.loss
def test_loss_spec_defaults_options_and_errors():
    assert loss_spec(SimpleNamespace(loss="auto")) == (
        "triplet",
        {"margin": 0.2, "mining": "semihard"},
    )
    assert loss_spec(SimpleNamespace(loss="arcface")) == ("arcface", {"scale": 30.0, "margin": 0.5})
    kind, opts = loss_spec(SimpleNamespace(loss={"type": "triplet", "mining": "hard"}))
    assert (kind, opts) == ("triplet", {"margin": 0.2, "mining": "hard"})
    assert loss_spec(SimpleNamespace(loss="softmax")) == ("softmax", {})
    with pytest.raises(InputValueError, match="train.loss.*focal"):
        loss_spec(SimpleNamespace(loss="focal"))
    with pytest.raises(InputValueError, match=r"arcface has no option\(s\) \['mining'\]"):
        loss_spec(SimpleNamespace(loss={"type": "arcface", "mining": "hard"}))


# -------------------------------------------------------------------------- unseen classes
def test_unseen_classes_auto_names_indices_and_errors():
    assert unseen_classes("auto", FASHION) == [6, 7, 8, 9]  # the last 40 %
    assert unseen_classes("auto", ["a", "b", "c"]) == []  # too few classes to hold any out
    assert unseen_classes(["Bag", 0, "Bag"], FASHION) == [0, 8]
    assert unseen_classes("Trouser", FASHION) == [1]
    assert unseen_classes(None, FASHION) == []
    with pytest.raises(InputValueError, match="data.unseen_classes.*'Hat'"):
        unseen_classes(["Hat"], FASHION)
    with pytest.raises(InputValueError, match="Received: 10"):
        unseen_classes([10], FASHION)
    with pytest.raises(InputValueError, match="at least 2 classes to train on"):
        unseen_classes(list(range(9)), FASHION)


def _npz_config(path):
    return load_config(overrides=["task=embedding", "data.dataset=npz", f"data.path={path}",
                                  "data.val_split=0.2", "data.unseen_classes=[1, 3]"])  # fmt: skip


def test_load_splits_relabels_seen_classes_and_tests_on_unseen_ones(tmp_path):
    from kvision.tasks.embedding.stages import load_splits

    rng = np.random.default_rng(0)
    y, yt = rng.integers(0, 5, 60), rng.integers(0, 5, 30)
    x, xt = np.zeros((60, 8, 8, 1), np.uint8), np.zeros((30, 8, 8, 1), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    cfg = _npz_config(tmp_path / "d.npz")
    splits = get_task("embedding").load_splits(cfg.data, 0)
    assert splits.seen == [0, 2, 4] and splits.unseen == [1, 3]
    assert set(np.unique(splits.train.labels)) <= {0, 1, 2}  # relabelled 0..S-1
    assert set(np.unique(splits.val.labels)) <= {0, 1, 2}
    assert len(splits.train) + len(splits.val) == int(np.isin(y, [0, 2, 4]).sum())
    assert set(np.unique(splits.test.labels)) == {1, 3}  # original labels, unseen only
    assert len(splits.test) == int(np.isin(yt, [1, 3]).sum())
    summary = splits.summary()
    assert summary["unseen_classes"] == ["1", "3"] and summary["seen_classes"] == ["0", "2", "4"]
    # no test split: every unseen image (train and val) is retrieved among
    np.savez(tmp_path / "n.npz", x_train=x, y_train=y)
    cfg = _npz_config(tmp_path / "n.npz")
    splits = load_splits(cfg.data, 0)
    assert splits.test_name == "unseen" and len(splits.test) == int(np.isin(y, [1, 3]).sum())
    assert any("no test split" in n for n in splits.notes)


def test_pk_shape():
    assert pk_shape(6, 64) == (6, 10)
    assert pk_shape(20, 64) == (8, 8)
    assert pk_shape(3, 4) == (3, 2)  # K is at least 2: a positive for every anchor


# ------------------------------------------------------------------------------------ parity
def test_neighbour_agreement_counts_swaps_and_tolerates_ties():
    ref = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1]])
    assert neighbour_agreement(ref, ref) == 1.0
    swapped = ref[[0, 2, 1, 3]]  # samples 1 and 2 trade places: every nearest is now wrong
    assert neighbour_agreement(ref, swapped) == 0.0
    half = ref[[1, 0, 2, 3]]  # a pair's members trade places: still each other's nearest
    assert neighbour_agreement(ref, half) == 1.0
    # sample 0 has two neighbours tied (within NEIGHBOUR_TIE) under the reference: either is fine
    a, b = np.array([1.0, 0.0]), np.array([np.cos(0.5), np.sin(0.5)])
    c = np.array([np.cos(0.5 + 1e-4), -np.sin(0.5 + 1e-4)])
    tied = _unit([a, b, c])
    assert (tied[0] @ tied[1]) - (tied[0] @ tied[2]) < NEIGHBOUR_TIE
    flipped = _unit([a, [np.cos(0.6), np.sin(0.6)], [np.cos(0.45), -np.sin(0.45)]])
    assert neighbour_agreement(tied, flipped) == 1.0


def test_parity_passes_a_faithful_artifact_and_names_each_failure():
    task = get_task("embedding")
    rng = np.random.default_rng(0)
    ref = _unit(rng.normal(size=(40, 16)))
    close = _unit(ref + 1e-5 * rng.normal(size=ref.shape))
    p = task.parity({EMBEDDING_OUTPUT: ref}, {EMBEDDING_OUTPUT: close}, "float32")
    assert p.ok, p.reasons
    assert p.checks["mean_cosine"] > 0.9999 and p.checks["neighbour_agreement"] == 1.0
    other = _unit(rng.normal(size=ref.shape))
    p = task.parity({EMBEDDING_OUTPUT: ref}, {EMBEDDING_OUTPUT: other}, "ptq_int8")
    assert not p.ok
    assert any("mean cosine" in r for r in p.reasons)
    assert any("nearest neighbours agree" in r for r in p.reasons)
    p = task.parity({EMBEDDING_OUTPUT: ref}, {EMBEDDING_OUTPUT: ref[:, :8]}, "float32")
    assert not p.ok and "shape" in p.reasons[0]
    bad = ref.copy()
    bad[3, 0] = np.nan
    assert not task.parity({EMBEDDING_OUTPUT: ref}, {EMBEDDING_OUTPUT: bad}, "float32").ok
    zero = ref.copy()
    zero[5] = 0
    p = task.parity({EMBEDDING_OUTPUT: ref}, {EMBEDDING_OUTPUT: zero}, "float16")
    assert not p.ok and "zero vectors" in p.reasons[0]


def test_retrieval_metric_streams_like_a_hand_count():
    metric = RetrievalMetric(ks=(1, 2))
    emb = _unit([[1, 0], [0.9, 0.1], [0, 1], [0.8, 0.3]])
    labels = np.array([0, 0, 1, 1])
    metric.update({EMBEDDING_OUTPUT: emb[:2]}, labels[:2])
    metric.update({EMBEDDING_OUTPUT: emb[2:]}, labels[2:])
    out = metric.result()
    # nearest others: 0 -> 1 (hit), 1 -> 3? cos(1,3) vs cos(1,0): by hand below
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    hits = labels[np.argmax(sims, 1)] == labels
    assert out["recall@1"] == pytest.approx(hits.mean())
    assert out["n"] == 4


def test_decode_and_prediction_json():
    task = get_task("embedding")
    vec = _unit([[3, 4]])
    (pred,) = task.decode({EMBEDDING_OUTPUT: vec}, None)
    out = task.prediction_json(pred, None)
    assert out == {"embedding": [0.6, 0.8], "dim": 2, "norm": 1.0}


# -------------------------------------------------------------------- training-only heads
@pytest.mark.parametrize("embedding", ["pool", "projection"])
@pytest.mark.parametrize("loss", ["triplet", "arcface", "softmax"])
def test_training_model_shares_the_embedders_weights(loss, embedding):
    from kvision.tasks.embedding.losses import TripletLoss

    keras.utils.set_random_seed(0)
    embedder = build_embedder((16, 16, 1), "compact_mobilenet", {"width": 0.25}, dim=8,
                              embedding=embedding)  # fmt: skip
    width = embedder.output_shape[EMBEDDING_OUTPUT][-1]
    post = embedder.kvision_contract.postprocess
    assert post["dim"] == width and post["projection_dim"] == 8
    assert (width == 8) == (embedding == "projection")  # pool: the backbone's width
    trainer = training_model(embedder, loss, num_classes=3)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 16, 16, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    before = embedder(x)[EMBEDDING_OUTPUT].numpy()
    if loss == "triplet":
        assert (trainer is embedder) == (embedding == "projection")
        assert trainer.output_shape[EMBEDDING_OUTPUT][-1] == 8  # the loss acts on the projection
        trainer.compile(keras.optimizers.SGD(0.5), {EMBEDDING_OUTPUT: TripletLoss(mining="all")})
        trainer.fit(x, {EMBEDDING_OUTPUT: y}, epochs=1, verbose=0)
    else:
        xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        trainer.compile(keras.optimizers.SGD(0.5), {LOGITS_OUTPUT: xent})
        trainer.fit((x, y) if loss == "arcface" else x, {LOGITS_OUTPUT: y}, epochs=1, verbose=0)
    after = embedder(x)[EMBEDDING_OUTPUT].numpy()
    assert not np.allclose(before, after)  # training the head's model trained the embedder
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    assert {w.ref() for w in embedder.weights} <= {w.ref() for w in trainer.weights}
    if loss != "triplet":
        with pytest.raises(InputValueError, match=">= 2 training classes"):
            training_model(embedder, loss, num_classes=1)
    with pytest.raises(InputValueError, match="triplet, arcface or softmax"):
        training_model(embedder, "focal", num_classes=3)


def test_qat_fine_tunes_towards_the_float_embeddings():
    task = get_task("embedding")
    cfg = SimpleNamespace(loss=task.fine_tune_loss(SimpleNamespace(loss="arcface")))
    assert loss_spec(cfg) == ("distill", {})
    teacher = build_embedder((16, 16, 1), "compact_mobilenet", {"width": 0.25}, dim=8)
    import tensorflow as tf

    x = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(4))).batch(4)
    ((xb, target),) = list(task.fine_tune_targets(ds, cfg, None, teacher))
    np.testing.assert_allclose(target[EMBEDDING_OUTPUT].numpy(),
                               teacher(x)[EMBEDDING_OUTPUT].numpy(), atol=1e-5)  # fmt: skip
    loss = task.compile_args(cfg, 0)["loss"][EMBEDDING_OUTPUT]
    assert float(loss(target[EMBEDDING_OUTPUT], target[EMBEDDING_OUTPUT])) == pytest.approx(-1.0)
    with pytest.raises(InputValueError, match="QAT's loss"):
        task.training_targets(ds, cfg, teacher)
    with pytest.raises(InputValueError, match="model.head.embedding"):
        build_embedder((16, 16, 1), "compact_mobilenet", {"width": 0.25}, embedding="gap")


# --------------------------------------------------------------------- verification pairs
def test_balanced_pairs_are_half_same_and_never_self():
    labels = np.repeat(np.arange(5), [1, 4, 6, 2, 7])
    i, j = balanced_pairs(labels, 200, seed=3)
    assert len(i) == 200 and np.all(i != j)
    same = labels[i] == labels[j]
    assert same.sum() == 100
    assert not np.any(labels[i][same] == 0)  # a class with one image gives no same pair
    j2 = balanced_pairs(labels, 200, seed=3)[1]
    np.testing.assert_array_equal(j, j2)  # deterministic per seed
    assert len(balanced_pairs(np.zeros(5, int), 10)[0]) == 0  # one class: no different pairs


# --------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from kvision.workflow import run_pipeline

    root = tmp_path_factory.mktemp("emb")
    data = write_bars_npz(root / "bars.npz", classes=5, n=120, n_test=40)
    out = {}
    for loss in ("triplet", "arcface"):
        cfg = load_config(overrides=[
            "task=embedding", "data.dataset=npz", f"data.path={data}", "data.val_split=0.25",
            "data.unseen_classes=[3, 4]", f"runs_dir={root / 'runs'}", f"name={loss}",
            *TINY_SPINE_OVERRIDES, "model.head.dim=8", f"train.loss={loss}", "train.epochs=2",
            "compress.techniques=[ptq]", "benchmark.runs=3",
        ])  # fmt: skip
        out[loss] = (run_pipeline(cfg, verbose=0), root / "runs" / loss)
    return out


@pytest.mark.parametrize("loss", ["triplet", "arcface"])
def test_tiny_pipeline_reports_retrieval_on_unseen_classes(tiny_runs, loss):
    rep, run_dir = tiny_runs[loss]
    task = rep["task"]
    assert task["name"] == "embedding" and task["primary_metric"] == "recall@1"
    m = task["metrics"]
    for key in ("recall@1", "recall@5", "recall@10", "mAP@R"):
        assert 0 <= m[key] <= 1, key
    assert m["recall@1"] <= m["recall@5"] <= m["recall@10"]
    assert 0 <= m["verification_accuracy"] <= 1 and -1 <= m["verification_threshold"] <= 1
    assert rep["data"]["unseen_classes"] == ["3", "4"]
    assert "P x K" in rep["augmentation"]["sampling"]
    rows = {a["name"]: a for a in rep["artifacts"]}
    assert list(rows) == ["keras", "saved_model", "float32", "ptq_int8"]
    for name in ("saved_model", "float32"):
        assert rows[name]["status"] == "ok", rows[name]["reason"]
        assert rows[name]["checks"]["mean_cosine"] > 0.9999
        assert rows[name]["checks"]["neighbour_agreement"] == 1.0
        # scored on the same test images (a 2-epoch model's near-ties may still reorder them)
        assert rows[name]["metrics"]["n"] == m["n"] and 0 <= rows[name]["metrics"]["recall@1"] <= 1
    checks = rows["ptq_int8"]["checks"]
    assert "mean_cosine" in checks and "neighbour_agreement" in checks
    assert not any("L2" in o and "Flex" in o for o in rows["float32"]["checks"]["ops"])
    assert "L2_NORMALIZATION" in rows["float32"]["checks"]["ops"]
    for file in ("report.md", "predictions.png", "embedding_projection.png", "metrics.json"):
        assert (run_dir / file).is_file(), file
    md = (run_dir / "report.md").read_text()
    assert "recall@1" in md and "Pair verification" in md
