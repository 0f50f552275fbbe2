"""Keras 3 model files: detected from the file itself, explained by every command that loads one.

The Keras 3 files are made by the real ``keras`` package (installed in the venv) in a
subprocess, so this test process keeps only tf_keras.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kvision._keras import KERAS3_REMEDY, is_keras3_file, load_model, saved_keras_version
from kvision.errors import ModelFileError
from kvision.models import build_model

_MAKE = """
import sys
import keras
inputs = keras.Input((28, 28, 1), name="images")
x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
model.save(sys.argv[1] + "/k3.keras")
model.save(sys.argv[1] + "/k3.h5")
print(keras.__version__)
"""


@pytest.fixture(scope="module")
def keras3_files(tmp_path_factory):
    """``{"keras": Path, "h5": Path, "version": str}`` written by Keras 3."""
    pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("keras3")
    out = subprocess.run(
        [sys.executable, "-c", _MAKE, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    version = out.stdout.split()[-1]
    assert int(version.split(".")[0]) >= 3
    return {"keras": folder / "k3.keras", "h5": folder / "k3.h5", "version": version}


@pytest.fixture(scope="module")
def tf_keras_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfkeras")
    model = build_model("lenet", (28, 28, 1), 4, filters=(4, 8), dense_units=8)
    model.save(folder / "m.keras")
    model.save(folder / "m.h5")
    return {"keras": folder / "m.keras", "h5": folder / "m.h5"}


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_keras3_file_is_recognized_by_its_content(kind, keras3_files, tf_keras_files, tmp_path):
    path = keras3_files[kind]
    assert saved_keras_version(path) == keras3_files["version"]
    assert is_keras3_file(path)
    assert not is_keras3_file(tf_keras_files[kind])
    assert saved_keras_version(tf_keras_files[kind]).startswith("2.")
    # the content decides, not the name: a Keras 3 archive named .h5 and vice versa
    swapped = tmp_path / ("model.h5" if kind == "keras" else "model.keras")
    shutil.copy(path, swapped)
    assert is_keras3_file(swapped)
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("hello")
    assert saved_keras_version(not_a_model) is None and not is_keras3_file(not_a_model)


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_load_model_explains_keras3(kind, keras3_files):
    with pytest.raises(ModelFileError) as info:
        load_model(keras3_files[kind])
    message = str(info.value)
    assert f"is a Keras 3 file (keras_version {keras3_files['version']})" in message
    assert KERAS3_REMEDY in message
    assert "batch_shape" not in message  # not the deserialization error of old
    assert isinstance(info.value, ValueError)


def test_load_model_of_a_tf_keras_file_still_works(tf_keras_files):
    for path in tf_keras_files.values():
        assert load_model(path).output_shape == (None, 4)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 100, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_every_command_that_loads_a_model_explains_keras3(
    kind, keras3_files, tiny_npz, tmp_path, image, capsys
):
    from deploy.cli import main

    model = str(keras3_files[kind])
    data = ["data.dataset=npz", f"data.path={tiny_npz}", f"runs_dir={tmp_path}"]
    commands = [
        ["evaluate", "--model", model, *data],
        ["export", "--model", model, "--out", str(tmp_path / "e"), *data],
        ["compress", "--model", model, "--out", str(tmp_path / "c"), *data],
        ["predict", "--model", model, str(image)],
        ["convert", "--model", model, "--variant", "float32", "--out", str(tmp_path / "v")],
    ]
    for args in commands:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert f"kvision {args[0]}: error:" in err, (args, err)
        assert "Keras 3 file" in err and KERAS3_REMEDY in err, (args, err)
        assert "Traceback" not in err and "internal error" not in err, (args, err)


def test_benchmark_row_keeps_the_whole_keras3_explanation(keras3_files, tmp_path, capsys):
    """A Keras 3 file is a broken artifact: its row says why in full, and the exit is 1."""
    from deploy.cli import main

    out = tmp_path / "bench"
    args = [str(keras3_files["h5"]), "--out", str(out), "--no-progress", "--runs", "2"]
    assert main(["benchmark", *args]) == 1
    capsys.readouterr()
    rows = json.loads((out / "benchmark.json").read_text())["rows"]
    assert rows and all(r["status"] == "failed_load" for r in rows)
    for row in rows:
        assert "Keras 3 file" in row["reason"] and KERAS3_REMEDY in row["reason"]
