"""oneDNN's heap corruption in the gradient of 1x1 strided convolutions (kvision issue 8).

Importing kvision sets TF_ENABLE_ONEDNN_OPTS=0 unless it is set; when TensorFlow runs oneDNN
anyway, training a model with such a layer is refused. Whatever depends on the process's
TensorFlow import runs in a subprocess, so that a crash is a failed test, not a dead pytest.
"""

import os
import platform
import subprocess
import sys

import pytest

from kvision import _env
from kvision._keras import keras
from kvision.errors import UnsafeTrainingError

X86 = platform.machine().lower() in ("x86_64", "amd64")
# small_resnet at width 8 on 62x62 images: its stage-2 shortcut is a 1x1 stride-2 Conv2D on a
# 62x62 map with 8 input channels, the field report's shape. With oneDNN on (and this module's
# refusal bypassed) `kvision train` with it died by SIGSEGV; at 28x28 it ran on silently, which
# is why the test also checks that oneDNN was off.
RISKY_MODEL = [
    "model.name=small_resnet",
    "model.options.width=8",
    "model.options.blocks_per_stage=[1,1]",
    "model.input_size=[62,62]",
]


def _env_without(*names, **values):
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(values)
    return env


def _run(args, env, timeout=420):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)


def _train_cmd(tiny_npz, tmp_path, *flags):
    return [
        sys.executable, "-m", "kvision.cli", *flags, "train", "data.dataset=npz",
        f"data.path={tiny_npz}", "data.batch_size=16", "data.val_split=0.25",
        f"runs_dir={tmp_path / 'runs'}", "name=onednn", "train.epochs=1",
        "augment.enabled=false", *RISKY_MODEL,
    ]  # fmt: skip


def test_the_regression_model_has_the_risky_layer():
    """Keeps the CLI test below about the layer kind it claims to cover."""
    from kvision.models import build_model

    model = build_model("small_resnet", (62, 62, 1), 4, width=8, blocks_per_stage=(1, 1))
    risky = _env.onednn_risky_layers(model)
    assert risky == ["stage2_block1_shortcut_conv (Conv2D 1x1, stride 2, 62x62 map)"]
    assert model.get_layer("stage2_block1_shortcut_conv").input_shape[-1] == 8


def test_kvision_train_trains_through_a_strided_1x1_conv(tiny_npz, tmp_path):
    """The reporter's kind of model trains through the kvision entry, with the variable unset,
    and TensorFlow did not turn oneDNN on (it says so at start-up, shown by --verbose)."""
    env = _env_without("TF_ENABLE_ONEDNN_OPTS")
    out = _run(_train_cmd(tiny_npz, tmp_path, "--verbose"), env)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-3000:]}"
    assert "best val accuracy" in out.stdout
    assert "oneDNN custom operations are on" not in out.stderr
    assert (tmp_path / "runs" / "onednn" / "checkpoints" / "best.keras").is_file()


def test_importing_kvision_turns_onednn_off_and_keeps_a_users_choice():
    code = (
        "import os, kvision; from kvision._env import onednn_enabled; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], onednn_enabled())"
    )
    out = _run([sys.executable, "-c", code], _env_without("TF_ENABLE_ONEDNN_OPTS"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "False"]
    out = _run([sys.executable, "-c", code], _env_without(TF_ENABLE_ONEDNN_OPTS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "1"  # the user's choice is kept
    if X86:
        assert out.stdout.split()[1] == "True"


@pytest.mark.skipif(not X86, reason="TensorFlow enables oneDNN by default on x86 only")
def test_fit_refuses_when_tensorflow_was_imported_first(tmp_path):
    """TensorFlow imported before kvision: oneDNN is on, so kvision's fit refuses the
    reporter's model (Input(64,64,1) -> Conv2D(8,3) -> Conv2D(8,1,strides=2)) instead of
    corrupting the heap; a model without such a layer still trains."""
    code = f"""
import numpy as np
import tensorflow as tf
import tf_keras as keras
from kvision.config import TrainConfig
from kvision.errors import UnsafeTrainingError
from kvision.train import fit

def model(stride):
    i = keras.Input((64, 64, 1))
    x = keras.layers.Conv2D(8, 3, name="c3")(i)
    x = keras.layers.Conv2D(8, 1, strides=stride, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(2, activation="softmax")(x))

x = np.random.default_rng(0).random((8, 64, 64, 1), dtype=np.float32)
ds = tf.data.Dataset.from_tensor_slices((x, np.arange(8) % 2)).batch(4)
cfg = TrainConfig(epochs=1, label_smoothing=0.0)
try:
    fit(model(2), ds, None, cfg, r"{tmp_path / "a"}", verbose=0)
    print("TRAINED")
except UnsafeTrainingError as exc:
    print("REFUSED", exc)
fit(model(1), ds, None, cfg, r"{tmp_path / "b"}", verbose=0)
print("STRIDE1 TRAINED")
"""
    out = _run([sys.executable, "-c", code], _env_without("TF_ENABLE_ONEDNN_OPTS"))
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-3000:]}"
    lines = out.stdout.splitlines()
    assert lines[0].startswith("REFUSED") and "TRAINED" not in lines
    assert "c1 (Conv2D 1x1, stride 2, 62x62 map)" in lines[0]
    assert "TensorFlow was imported before kvision" in lines[0]
    assert lines[-1] == "STRIDE1 TRAINED"


@pytest.mark.skipif(not X86, reason="TensorFlow enables oneDNN by default on x86 only")
def test_cli_refuses_with_onednn_forced_on(tiny_npz, tmp_path):
    env = _env_without(TF_ENABLE_ONEDNN_OPTS="1")
    out = _run(_train_cmd(tiny_npz, tmp_path, "--verbose"), env)
    assert out.returncode == 2, f"exit {out.returncode}: {out.stderr[-3000:]}"
    assert "oneDNN custom operations are on" in out.stderr  # what the test above rules out
    assert "kvision train: error: Refusing training" in out.stderr
    assert "TF_ENABLE_ONEDNN_OPTS=1 was set" in out.stderr
    assert "stage2_block1_shortcut_conv" in out.stderr and "Traceback" not in out.stderr


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
