"""oneDNN's heap corruption in the gradient of 1x1 strided convolutions (kvision issue 8).

oneDNN stays on (it trains the default model 2-3x faster). kvision's own models have no such
layer; ``fit`` and ``compress`` refuse one while oneDNN is on, and the ``kvision`` command then
restarts itself with TF_ENABLE_ONEDNN_OPTS=0. Whatever depends on the process's TensorFlow import
runs in a subprocess, so that a crash is a failed test, not a dead pytest.
"""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from kvision import _env
from kvision._keras import keras
from kvision.errors import UnsafeTrainingError

X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_x86 = pytest.mark.skipif(not X86, reason="TensorFlow enables oneDNN by default on x86 only")


def _env_without(*names, **values):
    env = {k: v for k, v in os.environ.items() if k not in names and k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(values)
    return env


def _run(args, env, timeout=420):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)


def _reporters_model(path):
    """The field report's model: Input(64,64,1) -> Conv2D(8,3) -> Conv2D(8,1,strides=2) -> GAP
    -> Dense, saved as a user's .keras file. With oneDNN on, its training died by SIGSEGV."""
    i = keras.Input((64, 64, 1), name="images")
    x = keras.layers.Conv2D(8, 3, name="c3")(i)
    x = keras.layers.Conv2D(8, 1, strides=2, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(4, activation="softmax", name="probabilities")(x))
    model.save(path)
    return path


def _compress_cmd(model, tiny_npz, tmp_path):
    return [
        sys.executable, "-m", "deploy.cli", "compress", "--model", str(model),
        "data.dataset=npz", f"data.path={tiny_npz}", "data.batch_size=16",
        "data.val_split=0.25", f"runs_dir={tmp_path / 'runs'}", "name=onednn",
        "compress.techniques=[qat]", "compress.qat.outputs=[int8]", "augment.enabled=false",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "name, shape, options",
    [
        ("compact_mobilenet", (28, 28, 1), {}),
        ("compact_mobilenet", (64, 64, 3), {"width": 0.6}),
        ("lenet", (28, 28, 1), {}),
        ("small_resnet", (62, 62, 1), {"width": 8, "blocks_per_stage": (1, 1)}),
        ("small_resnet", (64, 64, 3), {}),
    ],
)
def test_kvisions_own_models_have_no_risky_layer(name, shape, options):
    from kvision.models import build_model

    assert _env.onednn_risky_layers(build_model(name, shape, 4, **options)) == []


def test_importing_kvision_changes_no_environment():
    code = "import os, kvision; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))"
    out = _run([sys.executable, "-c", code], _env_without())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["unset"]


@needs_x86
def test_kvision_compress_restarts_itself_without_onednn(tiny_npz, tmp_path):
    """The reporter's case (a third-party model with a 1x1 stride-2 conv, fine-tuned by
    `kvision compress`): with the variable unset, the command meets the refusal before the
    first step, runs itself again with oneDNN off, and the QAT row is made and verified."""
    model = _reporters_model(tmp_path / "risky.keras")
    out = _run(_compress_cmd(model, tiny_npz, tmp_path), _env_without())
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-3000:]}"
    assert "restarting with TF_ENABLE_ONEDNN_OPTS=0" in out.stderr
    assert "c1 (Conv2D 1x1, stride 2, 62x62 map)" in out.stderr
    assert out.stderr.count("restarting with") == 1
    assert "| qat_int8 " in out.stdout and "Traceback" not in out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| qat_int8 "))
    assert "| ok " in row, row


@needs_x86
def test_a_users_explicit_onednn_choice_is_kept_and_refused(tiny_npz, tmp_path):
    model = _reporters_model(tmp_path / "risky.keras")
    out = _run(_compress_cmd(model, tiny_npz, tmp_path), _env_without(TF_ENABLE_ONEDNN_OPTS="1"))
    assert out.returncode == 2, f"exit {out.returncode}: {out.stderr[-3000:]}"
    assert "restarting" not in out.stderr
    assert "error: Refusing" in out.stderr and "TF_ENABLE_ONEDNN_OPTS=1 was set" in out.stderr
    assert "Traceback" not in out.stderr


@needs_x86
def test_fit_refuses_with_onednn_on_and_trains_with_it_off(tmp_path):
    """Python API: kvision's fit refuses the reporter's model while oneDNN is on (TensorFlow's
    default) instead of corrupting the heap, and trains it in a process started with oneDNN
    off; a model without such a layer trains with oneDNN on."""
    code = f"""
import numpy as np
import tensorflow as tf
import tf_keras as keras
from kvision._env import onednn_enabled
from kvision.config import TrainConfig
from kvision.errors import UnsafeTrainingError
from kvision.train import fit

def model(stride):
    i = keras.Input((64, 64, 1))
    x = keras.layers.Conv2D(8, 3, name="c3")(i)
    x = keras.layers.Conv2D(8, 1, strides=stride, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(2, activation="softmax")(x))

x = np.random.default_rng(0).random((32, 64, 64, 1), dtype=np.float32)
ds = tf.data.Dataset.from_tensor_slices((x, np.arange(32) % 2)).batch(4)
cfg = TrainConfig(epochs=2, label_smoothing=0.0)
print("ONEDNN", onednn_enabled())
try:
    fit(model(2), ds, None, cfg, r"{tmp_path / "a"}", verbose=0)
    print("TRAINED")
except UnsafeTrainingError as exc:
    print("REFUSED", exc)
fit(model(1), ds, None, cfg, r"{tmp_path / "b"}", verbose=0)
print("STRIDE1 TRAINED")
"""
    out = _run([sys.executable, "-c", code], _env_without())
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-3000:]}"
    lines = out.stdout.splitlines()
    assert lines[0] == "ONEDNN True"
    assert lines[1].startswith("REFUSED") and "TRAINED" not in lines
    assert "c1 (Conv2D 1x1, stride 2, 62x62 map)" in lines[1]
    assert lines[-1] == "STRIDE1 TRAINED"

    out = _run([sys.executable, "-c", code], _env_without(TF_ENABLE_ONEDNN_OPTS="0"))
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-3000:]}"
    assert out.stdout.splitlines()[:2] == ["ONEDNN False", "TRAINED"]


def test_small_resnet_shortcut_is_resnet_d():
    from kvision.models import build_model

    model = build_model("small_resnet", (32, 32, 3), 4, blocks_per_stage=(1, 1), width=8)
    pool = model.get_layer("stage2_block1_shortcut_pool")
    conv = model.get_layer("stage2_block1_shortcut_conv")
    assert isinstance(pool, keras.layers.AveragePooling2D) and pool.strides == (2, 2)
    assert conv.strides == (1, 1) and conv.kernel_size == (1, 1)
    assert model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0).shape == (1, 4)


def _conv(layer, shape):
    i = keras.Input(shape)
    return keras.Model(i, layer(i))


@pytest.mark.parametrize(
    "layer, shape, risky",
    [
        (lambda: keras.layers.Conv2D(8, 1, strides=2), (62, 62, 8), True),
        (lambda: keras.layers.Conv2D(8, 1, strides=2, padding="same"), (14, 14, 64), True),
        (lambda: keras.layers.Conv2D(8, 1, strides=3), (63, 63, 8), True),
        (lambda: keras.layers.Conv2D(8, 1, strides=(2, 1)), (62, 63, 8), True),
        (lambda: keras.layers.Conv2D(8, 1, strides=2), (None, None, 8), True),
        (lambda: keras.layers.Conv2DTranspose(8, 1, strides=2), (63, 63, 8), True),
        (lambda: keras.layers.Conv2D(8, 1, strides=2), (63, 63, 8), False),
        (lambda: keras.layers.Conv2D(8, 1, strides=3), (62, 62, 8), False),
        (lambda: keras.layers.Conv2D(8, 3, strides=2), (62, 62, 8), False),
        (lambda: keras.layers.Conv2D(8, (1, 3), strides=2), (62, 62, 8), False),
        (lambda: keras.layers.Conv2D(8, 1), (62, 62, 8), False),
        (lambda: keras.layers.DepthwiseConv2D(1, strides=2), (62, 62, 8), False),
        (lambda: keras.layers.SeparableConv2D(8, 1, strides=2), (62, 62, 8), False),
    ],
)
def test_risky_layer_kind(layer, shape, risky):
    assert bool(_env.onednn_risky_layers(_conv(layer(), shape))) is risky


def test_risky_layers_inside_nested_models_and_tfmot_wrappers():
    inner = _conv(keras.layers.Conv2D(8, 1, strides=2, name="shortcut"), (28, 28, 8))
    i = keras.Input((28, 28, 8))
    outer = keras.Model(i, keras.layers.Conv2D(4, 3)(inner(i)))
    assert [r.split()[0] for r in _env.onednn_risky_layers(outer)] == ["shortcut"]

    tfmot = pytest.importorskip("tensorflow_model_optimization")
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        keras.Sequential([keras.Input((28, 28, 8)), keras.layers.Conv2D(8, 1, strides=2, name="c")])
    )
    assert [r.split()[0] for r in _env.onednn_risky_layers(pruned)] == ["prune_low_magnitude_c"]


def test_check_trainable_refuses_only_with_onednn_on(monkeypatch):
    model = _conv(keras.layers.Conv2D(8, 1, strides=2, name="c"), (28, 28, 8))
    safe = _conv(keras.layers.Conv2D(8, 3, strides=2), (28, 28, 8))
    monkeypatch.setattr(_env, "onednn_enabled", lambda: False)
    _env.check_trainable(model)
    monkeypatch.setattr(_env, "onednn_enabled", lambda: True)
    _env.check_trainable(safe)
    with pytest.raises(UnsafeTrainingError, match=r"c \(Conv2D 1x1, stride 2, 28x28 map\)"):
        _env.check_trainable(model)
