"""Config-driven stages: run-directory reuse rules, transfer learning from a kvision checkpoint."""

import numpy as np
import pytest

from kvision._keras import load_model
from kvision.config import ConfigError, load_config
from kvision.data import model_inputs
from kvision.workflow import prepare_run_dir, train


def _cfg(tmp_path, npz, *extra):
    return load_config(overrides=[
        "data.dataset=npz", f"data.path={npz}", "data.batch_size=16", "data.val_split=0.25",
        f"runs_dir={tmp_path / 'runs'}", "augment.preview=false", "train.epochs=1", *extra,
    ])  # fmt: skip


def test_run_dir_refuses_a_different_config(tmp_path, tiny_npz):
    cfg = _cfg(tmp_path, tiny_npz, "name=a")
    prepare_run_dir(cfg)
    prepare_run_dir(cfg)  # same config: fine
    other = _cfg(tmp_path, tiny_npz, "name=a", "train.epochs=2")
    with pytest.raises(ConfigError, match="different data/model/training config.*--fresh"):
        prepare_run_dir(other)
    prepare_run_dir(other, fresh=True)
    assert "epochs: 2" in (cfg.run_dir / "config.yaml").read_text()


def test_transfer_from_a_kvision_checkpoint(tmp_path, tiny_npz, tiny_images, capsys):
    source = train(_cfg(tmp_path, tiny_npz, "name=source", "model.name=lenet"), verbose=0)
    checkpoint = source.fit.checkpoint
    images, labels = tiny_images
    three = tmp_path / "three.npz"
    keep = labels < 3  # a new task: 3 classes instead of 4
    np.savez(
        three,
        x_train=images[keep],
        y_train=labels[keep],
        x_test=images[keep][:9],
        y_test=labels[keep][:9],
    )
    cfg = _cfg(
        tmp_path,
        three,
        "name=target",
        f"model.transfer_from={checkpoint}",
        "train.head_epochs=1",
        "train.unfreeze_blocks=1",
    )
    run = train(cfg, verbose=0)
    assert run.model.output_shape == (None, 3)
    assert run.contract.labels == ["0", "1", "2"]
    # the backbone is the source's: conv1 and conv2 stay frozen in both phases
    trained = load_model(checkpoint)
    for name in ("conv1", "conv2"):
        kernel = run.model.get_layer(name).get_weights()[0]
        np.testing.assert_array_equal(kernel, trained.get_layer(name).get_weights()[0])
    run_dir = cfg.run_dir
    assert (run_dir / "phase1" / "history.csv").is_file()
    assert (run_dir / "phase2" / "checkpoints" / "best.keras").is_file()
    # the same command again reuses the finished training instead of repeating it
    again = train(cfg, verbose=0)
    assert "already finished" in capsys.readouterr().out
    x = model_inputs(images[:8], run.contract)
    np.testing.assert_allclose(
        again.model.predict(x, verbose=0), run.model.predict(x, verbose=0), atol=1e-6
    )


def test_transfer_from_missing_file(tmp_path, tiny_npz):
    cfg = _cfg(tmp_path, tiny_npz, "name=t", f"model.transfer_from={tmp_path / 'nope.keras'}")
    with pytest.raises(FileNotFoundError, match="`model.transfer_from` file not found"):
        train(cfg, verbose=0)


def test_mixed_precision_without_gpu_trains_in_float32(tmp_path, tiny_npz, capsys):
    cfg = _cfg(
        tmp_path, tiny_npz, "name=mp", "train.mixed_precision=true", "model.options.width=0.25"
    )
    run = train(cfg, verbose=0)
    assert "mixed_precision ignored: no GPU" in capsys.readouterr().out
    assert run.model.dtype_policy.name == "float32"


def test_mixed_precision_model_is_exported_as_float32():
    from kvision._keras import keras
    from kvision.models import build_model
    from kvision.workflow import _float32_model

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_model("lenet", (28, 28, 1), 4)
        assert mixed.layers[-1].compute_dtype == "float16"
        x = np.random.default_rng(0).random((3, 28, 28, 1), np.float32)
        expected = mixed.predict(x, verbose=0)
        plain = _float32_model(mixed)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(layer.compute_dtype == "float32" for layer in plain.layers)
    assert plain.kvision_contract is mixed.kvision_contract
    np.testing.assert_allclose(plain.predict(x, verbose=0), expected, atol=2e-2)


def test_image_folder_with_bad_files_end_to_end(tmp_path, tiny_images):
    """Bad files are skipped, listed with their reason and counted; training still runs."""
    import csv

    from PIL import Image

    from kvision.workflow import evaluate

    images, labels = tiny_images
    root = tmp_path / "images"
    for i, (img, label) in enumerate(zip(images[:32], labels[:32], strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(folder / f"{i}.png")
    (root / "class_0" / "empty.png").write_bytes(b"")
    (root / "class_1" / "notes.txt").write_text("not an image")
    good = (root / "class_2" / "2.png").read_bytes()
    (root / "class_2" / "cut.png").write_bytes(good[: len(good) // 2])
    cfg = load_config(overrides=[
        "data.dataset=folder", f"data.path={root}", "data.batch_size=8", "data.val_split=0.25",
        f"runs_dir={tmp_path / 'runs'}", "name=folder", "train.epochs=1", "model.name=lenet",
    ])  # fmt: skip
    run = train(cfg, verbose=0)
    assert len(run.splits.train) + len(run.splits.val) == 32
    assert run.contract.labels == ["class_0", "class_1", "class_2", "class_3"]
    with (cfg.run_dir / "bad_files.csv").open() as fh:
        reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in csv.DictReader(fh)}
    assert reasons == {
        "empty.png": "zero-byte file",
        "notes.txt": "unsupported extension .txt",
        "cut.png": "truncated PNG file",
    }
    assert run.splits.summary()["bad_files"] == 3
    assert (cfg.run_dir / "augment_preview.png").is_file()
    metrics = evaluate(run.model, run.splits, run.contract, cfg.run_dir)
    assert metrics["split"] == "val" and metrics["n"] == len(run.splits.val)
