"""deploy.tools.convert and deploy.tools.inspect_tflite (`kvision convert|inspect`)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deploy.tools import convert, inspect_tflite

ROOT = Path(__file__).resolve().parents[1]

REF = ROOT / "tflite_models"


def test_inspect_reports_ops_quantization_and_builtin_only(capsys):
    info = inspect_tflite.inspect_tflite(REF / "classifier_int8.tflite")
    assert info["builtin_only"] and info["loadable"] and info["flex_ops"] == []
    assert "CONV_2D" in info["ops"] and info["op_counts"]["CONV_2D"] >= 1
    (inp,) = info["inputs"]
    assert inp["dtype"] == "int8" and inp["shape"] == [None, 28, 28, 1]
    assert inp["quantization"]["scales"][0] > 0
    assert any(t["quantization"]["per_channel"] for t in info["tensors"])
    assert info["size_bytes"] > info["gzip_bytes"] > 0
    assert inspect_tflite.main([str(REF / "classifier_int8.tflite")]) == 0
    out = capsys.readouterr().out
    assert "builtin ops only: yes" in out and "zero_point" in out
    assert inspect_tflite.main([str(REF / "classifier_float32.tflite"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"][0]["dtype"] == "float32"


def test_inspect_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    assert inspect_tflite.main([str(bad)]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err
    assert inspect_tflite.main([str(tmp_path / "missing.tflite")]) == 2


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    from kvision.models import build_model

    d = tmp_path_factory.mktemp("conv")
    model = build_model("compact_mobilenet", (28, 28, 1), 4, width=0.25)
    model.save(d / "tiny.keras")
    calib = d / "calib" / "a"
    calib.mkdir(parents=True)
    from PIL import Image

    pixels = np.load(REF / "golden_input.npy")
    for i, p in enumerate(pixels):
        Image.fromarray(p[:, :, 0]).save(calib / f"{i}.png")
    return d / "tiny.keras", d / "calib"


def test_convert_keras_to_float32_and_int8_verified(keras_model, tmp_path, capsys):
    path, calib = keras_model
    code = convert.main(
        ["--model", str(path), "--variant", "float32", "int8", "--calibration", str(calib),
         "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "convert_report.json").read_text())
    arts = {a["name"]: a for a in report["artifacts"]}
    assert set(arts) == {"float32", "int8"} and all(a["status"] == "ok" for a in arts.values())
    assert arts["float32"]["checks"]["max_abs_diff"] <= 1e-4
    assert arts["int8"]["checks"]["input_dtype"] == "int8" and report["n_samples"] == 8
    assert (tmp_path / "tiny_int8.contract.json").is_file()


def test_convert_saved_model_and_argument_errors(keras_model, tmp_path, capsys):
    from kvision._keras import load_model
    from kvision.export.saved_model import export_saved_model

    path, calib = keras_model
    sm = export_saved_model(load_model(path), tmp_path / "sm", "tiny", 1)
    report = convert.convert(sm.parent, ["float16"], tmp_path / "out")
    (art,) = report["artifacts"]
    assert art["status"] == "ok" and Path(art["path"]).name == "tiny_float16.tflite"
    assert convert.main(["--model", str(path), "--variant", "int8", "--out", str(tmp_path)]) == 2
    assert "--calibration" in capsys.readouterr().err
    assert convert.main(["--model", str(path), "--variant", "int4", "--out", str(tmp_path)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No images"):
        convert.calibration_images(empty, None)
    shutil.rmtree(empty)
