"""Defaults chosen from the data (``augment.transforms: auto``, ``train.epochs: auto``)."""

import numpy as np
import pytest

from kvision import auto, workflow
from kvision.config import load_config


def _names(specs):
    return [s["name"] if isinstance(s, dict) else s for s in specs]


@pytest.mark.parametrize("dataset", ["folder", "npz", "mnist"])
def test_unknown_datasets_get_no_flip(dataset):
    choice = auto.choose_transforms(dataset)
    assert "flip" not in _names(choice.value)
    assert {"translate", "rotate", "zoom"} == set(_names(choice.value))
    assert "no flips" in choice.reason


def test_fashion_mnist_keeps_its_measured_flip():
    choice = auto.choose_transforms("fashion_mnist")
    assert _names(choice.value) == ["flip"]
    assert choice.value[0]["mode"] == "horizontal"


@pytest.mark.parametrize(
    ("n_train", "batch", "expected"),
    [
        (54_000, 128, 16),  # Fashion-MNIST's training split: the measured main job
        (60_000 * 10, 128, 16),  # larger sets never go below the minimum
        (4_000, 128, 60),  # 31 steps an epoch: capped at 60 epochs
        (20_000, 128, 20),  # 156 steps an epoch -> ceil(3000 / 156) = 20
        (10, 128, 60),  # a tiny split: one step an epoch, capped
    ],
)
def test_epochs_scale_with_the_training_split(n_train, batch, expected):
    choice = auto.choose_epochs(n_train, batch)
    assert choice.value == expected
    steps = max(1, n_train // batch)
    # enough optimizer steps, unless the cap or the floor decides
    assert choice.value * steps >= auto.MIN_STEPS or choice.value == auto.MAX_EPOCHS
    assert str(choice.value) in choice.reason


def test_choose_epochs_rejects_empty_input():
    with pytest.raises(ValueError, match="n_train"):
        auto.choose_epochs(0, 128)


def test_workflow_resolves_auto_and_says_why(tmp_path, tiny_npz):
    cfg = load_config(overrides=["data.dataset=npz", f"data.path={tiny_npz}",
                                 f"runs_dir={tmp_path}", "augment.preview=false"])  # fmt: skip
    splits = workflow.load_data(cfg)
    train_cfg, reason = workflow.training_config(cfg, splits)
    assert train_cfg.epochs == auto.choose_epochs(len(splits.train), cfg.data.batch_size).value
    assert cfg.train.epochs == "auto"  # the saved config keeps `auto`
    assert "epochs" in reason

    from kvision.models import InputContract

    contract = InputContract(28, 28, 1, labels=["0", "1", "2", "3"])
    augmenter, info = workflow.augmentation(cfg, splits, contract, None)
    assert _names(info["transforms"]) == ["translate", "rotate", "zoom"]
    assert "no flips" in info["reason"]
    # the augmenter it built really moves pixels (not an identity)
    x = np.zeros((8, 28, 28, 1), np.float32)
    x[:, 10:18, 4:8] = 1.0
    y, _ = augmenter(x, np.zeros(8, np.int64))
    assert np.abs(np.asarray(y) - x).max() > 0.5


def test_explicit_settings_are_kept(tmp_path, tiny_npz):
    cfg = load_config(overrides=["data.dataset=npz", f"data.path={tiny_npz}",
                                 "train.epochs=3", "augment.transforms=[flip]"])  # fmt: skip
    splits = workflow.load_data(cfg)
    train_cfg, reason = workflow.training_config(cfg, splits)
    assert (train_cfg.epochs, reason) == (3, None)
