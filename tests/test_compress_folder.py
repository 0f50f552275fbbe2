"""Compression on an image-folder dataset, whose tf.data pipeline has an unknown length.

The folder pipeline filters out files that fail to decode, so ``cardinality()`` is unknown; the
fine-tuning schedules (QAT, pruning) need the number of steps per epoch. It is derived from the
file list (``workflow.compression_data``), or counted once (``compress`` on any dataset).
"""

import json

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")

CLASSES, PER_CLASS, BATCH = 3, 7, 4


def _images():
    """3 classes x 7 28x28 gray images: a bright band whose row gives the class."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for c in range(CLASSES):
        for _ in range(PER_CLASS):
            image = rng.integers(0, 60, size=(28, 28), dtype=np.uint8)
            image[c * 9 : c * 9 + 9] = 220
            images.append(image)
            labels.append(c)
    return np.stack(images), np.array(labels, dtype=np.int64)


@pytest.fixture
def image_folder(tmp_path):
    """The images as PNG files, one sub-folder per class."""
    root = tmp_path / "images"
    for i, (image, label) in enumerate(zip(*_images(), strict=True)):
        (root / f"class_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"class_{label}" / f"{i}.png")
    return root


@pytest.fixture
def model_file(tmp_path):
    """A LeNet trained on the images (confident predictions: int8 agrees with it on top-1)."""
    from kvision._keras import keras
    from kvision.compress.finetune import finetune
    from kvision.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("lenet", (28, 28, 1), CLASSES, filters=(4, 8), dense_units=16)
    x, y = _images()
    ds = tf.data.Dataset.from_tensor_slices((x[..., None] / 255.0, y)).shuffle(32, seed=0)
    finetune(model, ds.batch(8), epochs=15, learning_rate=5e-3)
    assert np.mean(model.predict(x[..., None] / 255.0, verbose=0).argmax(-1) == y) == 1.0
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def _overrides(folder):
    return [
        "data.dataset=folder",
        f"data.path={folder}",
        f"data.batch_size={BATCH}",
        "data.val_split=0.25",
        "augment.enabled=false",
    ]


def _count(ds) -> int:
    return sum(1 for _ in ds)


def test_compression_data_knows_the_length_of_a_folder_pipeline(image_folder):
    from kvision import workflow
    from kvision.config import load_config
    from kvision.models import build_model

    cfg = load_config(overrides=_overrides(image_folder))
    splits = workflow.load_data(cfg)
    contract = build_model("lenet", (28, 28, 1), CLASSES).kvision_contract
    train_ds, val_ds, _ = workflow.compression_data(cfg, splits, contract)
    n_train, n_val = len(splits.train), len(splits.val)
    assert n_train + n_val == CLASSES * PER_CLASS
    # the training pipeline drops the last partial batch; validation keeps it
    assert int(train_ds.cardinality()) == n_train // BATCH == _count(train_ds)
    assert int(val_ds.cardinality()) == -(-n_val // BATCH) == _count(val_ds)


def test_compress_command_on_an_image_folder(tmp_path, image_folder, model_file, capsys):
    """`kvision compress` with QAT and pruning on a folder dataset: rows ok, real step counts."""
    from kvision.cli import main

    out = tmp_path / "c"
    code = main([
        "compress", "--model", str(model_file), "--out", str(out), *_overrides(image_folder),
        "compress.techniques=[qat,prune]", "compress.qat.outputs=[int8]",
        "compress.prune.epochs=2", "compress.accuracy_floor=100", "compress.verify_samples=8",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "compress_report.json").read_text())
    rows = {a["name"]: a for a in report["artifacts"]}
    assert rows["qat_int8"]["status"] == "ok", rows["qat_int8"]["reason"]
    assert rows["pruned_float32"]["status"] == "ok", rows["pruned_float32"]["reason"]
    assert report["errors"] == {}
    from kvision import workflow
    from kvision.config import load_config

    splits = workflow.load_data(load_config(overrides=_overrides(image_folder)))
    assert report["schedule"]["total_steps"] == 2 * (len(splits.train) // BATCH)


def test_compress_counts_a_dataset_of_unknown_length(tmp_path):
    """Any unknown-length training pipeline (here: a filter) is counted once, not refused."""
    from kvision._keras import keras
    from kvision.compress import CompressConfig, compress
    from kvision.compress.finetune import with_known_length

    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1)).astype(np.float32)
    y = (np.arange(40) % 2).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b >= 0).batch(8)
    assert int(ds.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    known = with_known_length(ds)
    assert int(known.cardinality()) == 5 == _count(known)
    with pytest.raises(ValueError, match="repeats forever.*steps_per_epoch"):
        with_known_length(ds.repeat())

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(i)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(i, keras.layers.Dense(2, activation="softmax", name="head")(h))
    cfg = CompressConfig(techniques=["prune"], accuracy_floor=100, verify_samples=8)
    cfg.prune.epochs = 2
    result = compress(model, ds, None, cfg, tmp_path, test=(x, y), resume=False)
    assert result.errors == {}
    assert result.schedule["total_steps"] == 2 * 5


@pytest.mark.slow
def test_pipeline_compresses_an_image_folder(tmp_path, image_folder):
    """`kvision pipeline data.dataset=folder` with QAT and pruning: both rows are produced."""
    from kvision import workflow
    from kvision.cli import main
    from kvision.config import load_config

    main([
        "pipeline", *_overrides(image_folder), f"runs_dir={tmp_path / 'runs'}", "name=folder",
        "model.name=lenet", "train.epochs=2", "benchmark.enabled=false",
        "compress.techniques=[qat,prune]", "compress.qat.outputs=[int8]",
        "compress.prune.epochs=1", "compress.accuracy_floor=100", "compress.verify_samples=8",
    ])  # fmt: skip
    report = json.loads((tmp_path / "runs" / "folder" / "report.json").read_text())
    assert report["compression"]["errors"] == {}, report["compression"]["errors"]
    rows = {a["name"]: a for a in report["artifacts"]}
    assert {"qat_int8", "pruned_float32"} <= set(rows)
    assert "unknown length" not in json.dumps(report)
    splits = workflow.load_data(load_config(overrides=_overrides(image_folder)))
    assert report["compression"]["schedule"]["total_steps"] == len(splits.train) // BATCH
