"""Data stage: IDX reading, dataset loading and splitting, the tf.data pipeline."""

import gzip
import struct

import numpy as np
import pytest

from kvision.config import DataConfig
from kvision.data import (
    DatasetError,
    Split,
    build_dataset,
    from_arrays,
    load_dataset,
    model_inputs,
    read_idx,
    split_train_val,
)
from kvision.models import InputContract


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _fake_mnist(root, n_train=40, n_test=20):
    rng = np.random.default_rng(1)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(
            root / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        )
        _write_idx(root / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "a.gz", a)), a)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "a", a)), a)


def test_read_idx_errors_name_the_file(tmp_path):
    a = np.zeros((4, 5, 5), np.uint8)
    p = _write_idx(tmp_path / "t", a)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="t is truncated or corrupt"):
        read_idx(p)
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="junk.gz"):
        read_idx(junk)
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x01\x02\x03\x04" + b"\0" * 20)
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(bad_magic)


def test_load_idx_dataset_from_path(tmp_path):
    _fake_mnist(tmp_path)
    splits = load_dataset(DataConfig(dataset="mnist", path=str(tmp_path), val_split=0.25), seed=3)
    assert splits.num_classes == 10 and splits.channels == 1
    assert len(splits.train) + len(splits.val) == 40 and len(splits.test) == 20
    assert splits.train.images.shape[1:] == (28, 28, 1) and splits.train.images.dtype == np.uint8


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(DataConfig(dataset="fashion_mnist", path=str(tmp_path / "nowhere")))
    assert "apt-get install -y dataset-fashion-mnist" in str(err.value)
    assert "nowhere" in str(err.value)


def test_labels_out_of_range(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x_train=np.zeros((10, 8, 8), np.uint8),
        y_train=np.array([0, 1] * 5),
        x_test=np.zeros((2, 8, 8), np.uint8),
        y_test=np.array([0, 7]),
    )
    with pytest.raises(DatasetError, match="test label\\(s\\) out of range 0..1"):
        load_dataset(DataConfig(dataset="npz", path=str(tmp_path / "d.npz")))


def test_npz_missing_key(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8)))
    with pytest.raises(DatasetError, match="has no array `x_train`"):
        load_dataset(DataConfig(dataset="npz", path=str(tmp_path / "d.npz")))


def test_split_is_deterministic_and_stratified():
    labels = np.repeat(np.arange(4), 25)
    split = Split(labels, images=np.zeros((100, 4, 4, 1), np.uint8))
    a_train, a_val = split_train_val(split, 0.2, seed=7)
    b_train, b_val = split_train_val(split, 0.2, seed=7)
    np.testing.assert_array_equal(a_val.labels, b_val.labels)
    assert len(a_val) == 20 and np.bincount(a_val.labels).tolist() == [5, 5, 5, 5]
    assert len(a_train) + len(a_val) == 100


def test_split_indices_differ_by_seed():
    labels = np.repeat(np.arange(2), 50)
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
    _, v1 = split_train_val(Split(labels, images=images), 0.1, seed=1)
    _, v2 = split_train_val(Split(labels, images=images), 0.1, seed=2)
    assert sorted(v1.images.ravel()) != sorted(v2.images.ravel())


def test_pipeline_shapes_scale_and_order(tiny_images):
    images, labels = tiny_images
    contract = InputContract(28, 28, 1, labels=list("abcd"))
    ds = build_dataset(Split(labels, images=images), contract, batch_size=16)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    x = np.concatenate(xs)
    assert x.shape == (64, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x, images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(ys), labels)


@pytest.mark.parametrize("scale, offset", [(1 / 255.0, 0.0), (2 / 255.0, -1.0)])
def test_pipeline_training_shuffles_and_augments(tiny_images, scale, offset):
    images, labels = tiny_images
    contract = InputContract(28, 28, 1, scale=scale, offset=offset, labels=list("abcd"))

    def augmenter(x, y):  # works on [0, 1] images, as build_augmenter's do
        return 1.0 - x, y

    split = Split(labels, images=images)
    ds = build_dataset(split, contract, batch_size=10, training=True, augmenter=augmenter, seed=0)
    batches = list(ds)
    assert len(batches) == 6  # drop_remainder on training
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    # every output is the augmented image (inverted in [0, 1], then put on the contract's
    # scale) of one distinct input image, with that image's label
    expected = (1.0 - images / 255.0) * 255.0 * scale + offset
    diff = np.abs(x[:, None] - expected[None]).max(axis=(2, 3, 4))  # [outputs, inputs]
    source = diff.argmin(axis=1)
    assert diff[np.arange(len(x)), source].max() < 1e-5
    assert len(set(source.tolist())) == 60
    np.testing.assert_array_equal(y, labels[source])
    assert not np.array_equal(source, np.arange(60))  # shuffled
    again = np.concatenate([b[0].numpy() for b in ds])
    assert not np.array_equal(again, x)  # reshuffled every epoch
    # the augmenter is for training only
    plain = np.concatenate(
        [b[0].numpy() for b in build_dataset(split, contract, 16, augmenter=augmenter)]
    )
    np.testing.assert_allclose(plain, model_inputs(images, contract), rtol=0, atol=1e-6)


def test_pipeline_resizes_and_converts_channels(tiny_images):
    images, labels = tiny_images
    contract = InputContract(32, 32, 3, scale=2 / 255.0, offset=-1.0, labels=list("abcd"))
    x = model_inputs(images[:4], contract)
    assert x.shape == (4, 32, 32, 3)
    assert -1.0 - 1e-6 <= x.min() and x.max() <= 1.0 + 1e-6
    ds = build_dataset(Split(labels, images=images), contract, batch_size=4)
    np.testing.assert_allclose(next(iter(ds))[0].numpy(), x, atol=1e-5)


def test_from_arrays_validates():
    with pytest.raises(DatasetError, match="x_train.shape"):
        from_arrays(np.zeros((2, 3, 3, 2)), np.array([0, 1]))
    with pytest.raises(DatasetError, match="0..255"):
        from_arrays(np.full((2, 3, 3), 300.0), np.array([0, 1]))


def test_npz_with_fractional_pixels_is_refused_not_truncated(tmp_path):
    """Float images in [0, 1] would become 0s and 1s (black images) if cast to uint8."""
    from kvision.config import DataConfig
    from kvision.data import DatasetError, load_dataset

    x = np.random.default_rng(0).random((40, 28, 28)).astype(np.float32)
    path = tmp_path / "floats.npz"
    np.savez(path, x_train=x, y_train=np.arange(40) % 2)
    with pytest.raises(DatasetError, match="whole pixel values.*scale"):
        load_dataset(DataConfig(dataset="npz", path=str(path)))
    np.savez(path, x_train=np.round(x * 255), y_train=np.arange(40) % 2)  # whole values: fine
    assert load_dataset(DataConfig(dataset="npz", path=str(path))).train.images.max() > 1
