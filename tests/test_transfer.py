"""Transfer learning: new head on a kvision-trained classifier, block freezing, two-phase fit."""

import json

import numpy as np
import pytest
import tensorflow as tf

from kvision._keras import keras, load_model
from kvision.config import TrainConfig
from kvision.models import InputContract, build_model
from kvision.models.transfer import (
    backbone_blocks,
    build_transfer_model,
    classifier_head,
    set_trainable_blocks,
)
from kvision.train.fit import fit
from kvision.train.transfer import fit_transfer

QUICK = TrainConfig(epochs=1, learning_rate=1e-2, warmup_epochs=0.0, optimizer="adam")


def _dataset(images, labels, batch=8):
    x = images.astype(np.float32) / 255.0
    return tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch)


def _weights(model) -> dict:
    return {
        f"{layer.name}/{i}": np.array(w)
        for layer in model.layers
        for i, w in enumerate(layer.get_weights())
    }


def _changed(before: dict, after: dict) -> set:
    return {k for k in before if not np.array_equal(before[k], after[k])}


_TRAINED = {}


@pytest.fixture
def trained_file(tmp_path_factory, tiny_images):
    """A 4-class lenet trained 2 steps with kvision's fit: its best.keras (+ contract.json).

    Trained once per test run; tests load it and never write to it.
    """
    if "checkpoint" not in _TRAINED:
        images, labels = tiny_images
        model = build_model("lenet", (28, 28, 1), 4, filters=(8, 16), dense_units=32)
        ds = _dataset(images, labels)
        run_dir = tmp_path_factory.mktemp("source")
        result = fit(model, ds, ds.take(1), QUICK, run_dir, steps_per_epoch=2, verbose=0)
        model.kvision_contract.save(run_dir / "checkpoints")
        _TRAINED["checkpoint"] = result.checkpoint
    return _TRAINED["checkpoint"]


@pytest.fixture
def three_class_data(tiny_images):
    images, labels = tiny_images
    return images, labels % 3


class _Snapshots(keras.callbacks.Callback):
    """Weights of the model at the start and the end of each ``fit`` (each phase)."""

    def __init__(self):
        super().__init__()
        self.begun, self.taken = [], []

    def on_train_begin(self, logs=None):
        self.begun.append(_weights(self.model))

    def on_train_end(self, logs=None):
        self.taken.append(_weights(self.model))


def test_transfer_model_replaces_head_and_freezes_backbone(trained_file):
    source = load_model(trained_file)
    model = build_transfer_model(trained_file, 3, labels=["a", "b", "c"], dropout=0.1)
    assert model.output_shape == (None, 3)
    assert model.input_names == ["images"]
    assert model.get_layer("probabilities").units == 3
    assert model.get_layer("dropout").rate == pytest.approx(0.1)
    contract = model.kvision_contract
    assert contract.labels == ["a", "b", "c"]
    assert contract.scale == pytest.approx(InputContract.load(trained_file.rsplit("/", 1)[0]).scale)
    np.testing.assert_array_equal(
        model.get_layer("fc1").get_weights()[0], source.get_layer("fc1").get_weights()[0]
    )
    assert [name for name, _ in backbone_blocks(model)] == ["conv1", "conv2", "fc1"]
    trainable = {v.name.split("/")[0] for v in model.trainable_variables}
    assert trainable == {"probabilities"}


def test_fit_transfer_phases_train_only_what_they_should(tmp_path, trained_file, three_class_data):
    model = build_transfer_model(trained_file, 3)
    ds = _dataset(*three_class_data)
    before = _weights(model)
    snapshots = _Snapshots()
    cfg = TrainConfig(epochs=7, learning_rate=1e-2, warmup_epochs=0.0, optimizer="adam")
    head, tuned = fit_transfer(
        model,
        ds,
        ds.take(1),
        cfg,
        tmp_path / "run",
        head_epochs=1,
        finetune_epochs=1,
        unfreeze_blocks=2,
        steps_per_epoch=2,
        callbacks=[snapshots],
        verbose=0,
    )
    after_head, after_tune = snapshots.taken
    bn_stats = {k for k in before if "_bn/" in k}
    assert bn_stats  # lenet has batch norm: its statistics must not move

    # Phase 1: only the new head changes.
    assert _changed(before, after_head) == {"probabilities/0", "probabilities/1"}
    # Phase 2: the top two blocks (conv2, fc1) and the head change; conv1 and every BN don't.
    changed = _changed(after_head, after_tune)
    assert {"conv2/0", "fc1/0", "probabilities/0"} <= changed
    assert not {k for k in changed if k.startswith(("conv1", "pool1"))}
    assert not changed & bn_stats

    assert head.epochs_run == 1 and tuned.epochs_run == 1
    assert (tmp_path / "run" / "phase1" / "checkpoints" / "best.keras").is_file()
    assert (tmp_path / "run" / "phase2" / "history.csv").is_file()
    report = json.loads((tmp_path / "run" / "transfer.json").read_text())
    assert report["unfrozen"] == ["conv2", "fc1"]
    assert report["finetune_learning_rate"] == pytest.approx(1e-3)


def test_fit_transfer_does_not_repeat_a_finished_head_phase(
    tmp_path, trained_file, three_class_data
):
    ds = _dataset(*three_class_data)
    kwargs = {
        "head_epochs": 1,
        "finetune_epochs": 1,
        "unfreeze_blocks": 1,
        "steps_per_epoch": 2,
        "verbose": 0,
    }
    first = _Snapshots()
    head, _ = fit_transfer(
        build_transfer_model(trained_file, 3),
        ds,
        None,
        QUICK,
        tmp_path,
        callbacks=[first],
        **kwargs,
    )
    head_log = tmp_path / "phase1" / "history.csv"
    stamp = head_log.stat().st_mtime_ns

    again = _Snapshots()
    head_again, _ = fit_transfer(
        build_transfer_model(trained_file, 3),
        ds,
        None,
        QUICK,
        tmp_path,
        callbacks=[again],
        **kwargs,
    )
    assert json.dumps(head_again.to_dict()) == json.dumps(head.to_dict())  # NaN != NaN
    assert head_log.stat().st_mtime_ns == stamp
    assert len(again.taken) == 1  # only phase 2 ran ...
    for key, value in first.taken[0].items():  # ... starting from the saved phase-1 weights
        np.testing.assert_array_equal(again.begun[0][key], value)


def test_transfer_model_round_trip_keeps_blocks(tmp_path, trained_file):
    model = build_transfer_model(trained_file, 3)
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    path = tmp_path / "transfer.keras"
    model.save(path)
    reloaded = load_model(path)
    np.testing.assert_allclose(reloaded(x).numpy(), model(x).numpy(), atol=1e-6)
    assert [n for n, _ in backbone_blocks(reloaded)] == [n for n, _ in backbone_blocks(model)]
    assert set_trainable_blocks(reloaded, 1) == ["fc1"]
    assert reloaded.get_layer("fc1").trainable and not reloaded.get_layer("fc1_bn").trainable
    assert not reloaded.get_layer("conv2").trainable


def test_set_trainable_blocks_validates_n_blocks(trained_file):
    model = build_transfer_model(trained_file, 3)
    assert set_trainable_blocks(model, 3) == ["conv1", "conv2", "fc1"]
    assert not any(
        layer.trainable
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    with pytest.raises(ValueError, match=r"at most 3.*conv1, conv2, fc1.*n_blocks=4"):
        set_trainable_blocks(model, 4)
    with pytest.raises(ValueError, match="n_blocks=-1"):
        set_trainable_blocks(model, -1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"head_epochs": 0}, ValueError, "head_epochs=0"),
        ({"finetune_epochs": 1.5}, ValueError, "finetune_epochs=1.5"),
        ({"unfreeze_blocks": 9}, ValueError, "unfreeze_blocks=9"),
        ({"finetune_lr_factor": 1.5}, ValueError, "finetune_lr_factor=1.5"),
        ({"finetune_lr_factor": 0}, ValueError, "finetune_lr_factor=0"),
        ({"epochs": 3}, TypeError, "epochs"),
    ],
)
def test_fit_transfer_validates_arguments(
    tmp_path, trained_file, three_class_data, kwargs, error, match
):
    model = build_transfer_model(trained_file, 3)
    ds = _dataset(*three_class_data)
    args = {"head_epochs": 1, "finetune_epochs": 1, "unfreeze_blocks": 1, **kwargs}
    with pytest.raises(error, match=match):
        fit_transfer(model, ds, None, QUICK, tmp_path / "run", **args)
    assert not (tmp_path / "run").exists()  # nothing trained or written


def test_transfer_from_in_memory_model_leaves_it_untouched(tiny_images):
    source = build_model("small_resnet", (28, 28, 1), 4, blocks_per_stage=(1, 1), width=8)
    model = build_transfer_model(source, 3)
    assert source.output_shape == (None, 4)
    assert all(layer.trainable for layer in source.layers)
    assert not model.get_layer("stem_conv").trainable
    assert [n for n, _ in backbone_blocks(model)] == ["stem", "stage1_block1", "stage2_block1"]
    assert model.kvision_contract.labels == ["0", "1", "2"]


def test_transfer_from_registered_name():
    model = build_transfer_model(
        "lenet", 5, input_shape=(28, 28, 1), labels=list("vwxyz"), filters=(4, 8), dense_units=16
    )
    assert model.output_shape == (None, 5)
    assert model.kvision_contract.labels == list("vwxyz")
    assert [layer.name for layer in classifier_head(model)] == ["probabilities", "dropout"]
    assert {v.name.split("/")[0] for v in model.trainable_variables} == {"probabilities"}


def test_build_transfer_model_errors(tmp_path, trained_file):
    with pytest.raises(ValueError, match="input_shape=None"):
        build_transfer_model("lenet", 3)
    with pytest.raises(FileNotFoundError, match="no_such_model.keras"):
        build_transfer_model(str(tmp_path / "no_such_model.keras"), 3)
    with pytest.raises(TypeError, match="weights"):
        build_transfer_model(trained_file, 3, weights="w.h5")
    with pytest.raises(ValueError, match=r"input_shape=\(32, 32, 1\)"):
        build_transfer_model(trained_file, 3, input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="num_classes=1"):
        build_transfer_model(trained_file, 1)
    with pytest.raises(ValueError, match="labels"):
        build_transfer_model(trained_file, 3, labels=["a", "b"])
