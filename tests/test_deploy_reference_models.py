"""tflite_models/: the reference artifacts load, match their metadata and reproduce the goldens;
measured on the Fashion-MNIST test set they were made for, int8 is smaller and as accurate."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from deploy.runtimes import artifact_contract, open_runtime
from kvision.data import DatasetError, find_idx_dir, read_idx
from kvision.models import InputContract

REF = Path(__file__).resolve().parents[1] / "tflite_models"
META = json.loads((REF / "metadata.json").read_text())
FLOAT, INT8 = "classifier_float32.tflite", "classifier_int8.tflite"

# int8 vs float32, measured on the files and on the whole test split through LiteRT (1 thread).
INT8_SIZE_RATIO_MAX = 0.7  # bytes on disk, int8 / float32 (measured 0.585)
ACCURACY_GAP_MAX = 0.01  # |int8 - float32| test accuracy: kvision's default 1-point floor
TOP1_AGREEMENT_MIN = 0.97  # same top-1 class on the same images (measured 0.987)
TRAINED_ACCURACY_MIN = 0.7  # chance is 0.1; the brief reference training reaches ~0.79


def test_reference_folder_is_small_and_complete():
    total = sum(f.stat().st_size for f in REF.iterdir() if f.is_file())
    assert total < 1_000_000, f"tflite_models/ is {total} bytes; keep it under 1 MB"
    assert sorted(META["files"]) == [FLOAT, INT8]
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
    # field by field, with the defaults of fields newer than metadata.json
    assert source == "file" and contract == InputContract.from_dict(META["contract"])
    assert y.shape == golden.shape == (META["golden"]["n"], 10)
    np.testing.assert_allclose(y, golden, atol=info["golden_atol"])
    np.testing.assert_array_equal(y.argmax(-1), golden.argmax(-1))


@pytest.fixture(scope="module")
def fashion_mnist_test():
    """The test split of the references' training dataset: uint8 [N, 28, 28, 1] and labels."""
    dataset = META["training"]["dataset"]
    try:
        root = find_idx_dir(dataset)
    except DatasetError as exc:
        pytest.skip(f"the reference models are measured on {dataset}, not installed here: {exc}")
    images = read_idx(next(root.glob("t10k-images-idx3-ubyte*")))[..., None]
    labels = read_idx(next(root.glob("t10k-labels-idx1-ubyte*"))).astype(np.int64)
    return images, labels


@pytest.fixture(scope="module")
def measured(fashion_mnist_test):
    """Per file: size on disk, LiteRT input dtype and top-1 predictions on the whole test split."""
    images, _ = fashion_mnist_test
    out = {}
    for name in (FLOAT, INT8):
        path = REF / name
        with open_runtime(path, "litert", threads=1) as rt:
            contract, _ = artifact_contract(path, rt.input_spec)
            top1 = rt.predict(contract.normalize(images)).argmax(-1)
            dtype = rt.input_spec.dtype
        out[name] = {"size": path.stat().st_size, "dtype": str(dtype), "top1": top1}
    return out


def test_int8_reference_is_smaller_and_as_accurate(fashion_mnist_test, measured):
    _, labels = fashion_mnist_test
    f, q = measured[FLOAT], measured[INT8]
    assert q["size"] < INT8_SIZE_RATIO_MAX * f["size"], (q["size"], f["size"])
    assert (f["dtype"], q["dtype"]) == ("float32", "int8")
    acc_f = float(np.mean(f["top1"] == labels))
    acc_q = float(np.mean(q["top1"] == labels))
    assert acc_f > TRAINED_ACCURACY_MIN, f"float32 test accuracy {acc_f:.4f}: not trained"
    assert abs(acc_q - acc_f) < ACCURACY_GAP_MAX, (acc_q, acc_f)
    assert np.mean(q["top1"] == f["top1"]) >= TOP1_AGREEMENT_MIN


def test_metadata_states_the_measured_sizes_and_accuracies(fashion_mnist_test, measured):
    images, labels = fashion_mnist_test
    n = META["training"]["n_test"]
    # the goldens are the first test images: the references were made on this data
    np.testing.assert_array_equal(
        np.load(REF / META["golden"]["input"]), images[: META["golden"]["n"]]
    )
    for name, info in META["files"].items():
        assert info["size_bytes"] == measured[name]["size"], name
        accuracy = float(np.mean(measured[name]["top1"][:n] == labels[:n]))
        assert info["test_accuracy"] == pytest.approx(accuracy, abs=0.5 / n), name
