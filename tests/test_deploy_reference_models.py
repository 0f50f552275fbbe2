"""tflite_models/: the reference artifacts load, match their metadata and reproduce the goldens."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from deploy.runtimes import artifact_contract, open_runtime

REF = Path(__file__).resolve().parents[1] / "tflite_models"
META = json.loads((REF / "metadata.json").read_text())


def test_reference_folder_is_small_and_complete():
    total = sum(f.stat().st_size for f in REF.iterdir() if f.is_file())
    assert total < 1_000_000, f"tflite_models/ is {total} bytes; keep it under 1 MB"
    assert sorted(META["files"]) == ["classifier_float32.tflite", "classifier_int8.tflite"]
    assert len(META["labels"]) == 10 and META["contract"]["labels"] == META["labels"]


@pytest.mark.parametrize("name", sorted(META["files"]))
def test_reference_model_matches_metadata_and_golden(name):
    info = META["files"][name]
    path = REF / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    x_pixels = np.load(REF / META["golden"]["input"])
    golden = np.load(REF / info["golden_output"])
    with open_runtime(path, "litert", threads=1) as rt:
        assert rt.input_spec.to_dict() == info["input"]
        contract, source = artifact_contract(path, rt.input_spec)
        y = rt.predict(contract.normalize(x_pixels))
    assert source == "file" and contract.to_dict() == META["contract"]
    assert y.shape == golden.shape == (META["golden"]["n"], 10)
    np.testing.assert_allclose(y, golden, atol=info["golden_atol"])
    np.testing.assert_array_equal(y.argmax(-1), golden.argmax(-1))


def test_int8_reference_is_smaller_and_as_accurate():
    f, q = META["files"]["classifier_float32.tflite"], META["files"]["classifier_int8.tflite"]
    assert q["size_bytes"] < 0.7 * f["size_bytes"]
    assert q["input"]["dtype"] == "int8" and q["input"]["scale"] > 0
    assert abs(q["test_accuracy"] - f["test_accuracy"]) < 0.02
    assert f["test_accuracy"] > 0.5  # trained, not random (10 classes)
