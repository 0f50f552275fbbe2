"""``kvision benchmark``'s exit status: broken artifacts exit 1, user errors 2, bugs say so."""

import json
from pathlib import Path

import numpy as np
import pytest

from deploy.benchmark.cli import exit_status
from deploy.cli import main

REF = Path(__file__).resolve().parents[1] / "tflite_models"
FAST = ["--runs", "2", "--warmup", "1", "--throughput-runs", "1", "--batch-size", "2"]
FAST += ["--no-progress"]


def _row(status, artifact="a", runtime="litert"):
    return {"artifact": artifact, "runtime": runtime, "status": status, "reason": status}


@pytest.mark.parametrize(
    "statuses, strict, code",
    [
        (["ok"], False, 0),
        (["ok", "unavailable"], False, 0),
        (["unavailable"], False, 0),
        (["unavailable"], True, 1),
        (["ok", "unavailable"], True, 0),
        (["failed_load"], False, 1),
        (["failed_run", "failed_load"], False, 1),
        (["ok", "failed_validation"], False, 1),
        (["ok", "below_floor"], False, 1),
    ],
)
def test_exit_status(statuses, strict, code, capsys):
    assert exit_status([_row(s) for s in statuses], strict=strict) == code
    err = capsys.readouterr().err
    for s in statuses:
        if s.startswith("failed"):
            assert f"FAIL: a / litert: {s}" in err


def test_every_row_broken_exits_1(tmp_path, capsys):
    """The reporter's case: nothing could be loaded or run, and the command said 0."""
    bad_tflite = tmp_path / "broken.tflite"
    bad_tflite.write_bytes(b"\x00" * 64)
    bad_keras = tmp_path / "broken.keras"
    bad_keras.write_bytes(b"not a zip")
    code = main(["benchmark", str(bad_tflite), str(bad_keras), "--out", str(tmp_path / "b"), *FAST])
    assert code == 1
    rows = json.loads((tmp_path / "b" / "benchmark.json").read_text())["rows"]
    statuses = {r["artifact"]: r["status"] for r in rows}
    assert statuses["broken"] in ("failed_validation", "failed_load")
    assert {r["status"] for r in rows} <= {"failed_validation", "failed_load", "failed_run"}
    assert "FAIL: broken" in capsys.readouterr().err


def test_a_good_artifact_exits_0(capsys):
    args = [str(REF / "classifier_int8.tflite"), "--runtimes", "litert", *FAST]
    assert main(["benchmark", *args]) == 0
    assert "| classifier_int8 | litert | 1 | ok |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.tflite"], "Artifact not found: missing.tflite"),
        ([str(REF / "classifier_int8.tflite"), "--runtimes", "nope"], "Unknown runtime 'nope'"),
        ([str(REF / "classifier_int8.tflite"), "--runs", "0"], "`runs` should be an integer >= 1"),
        ([str(REF / "classifier_int8.tflite"), "--baseline", "x"], "`baseline` should be one of"),
        ([str(REF / "metadata.json")], "Cannot tell the format"),
    ],
)
def test_user_errors_exit_2_in_one_line(args, message, capsys):
    assert main(["benchmark", *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert f"kvision benchmark: error: {message}" in err and "Traceback" not in err


def test_a_bug_is_an_internal_error_with_its_traceback(monkeypatch, capsys):
    import deploy.benchmark.run as run

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(run, "run_benchmark", broken)
    assert main(["benchmark", str(REF / "classifier_int8.tflite"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in broken" in err
    assert (
        "kvision benchmark: internal error (a bug in kvision, please report it): "
        "ValueError: an internal inconsistency" in err
    )


def test_limit_scores_every_row_and_the_baseline_on_the_same_images(tmp_path, capsys):
    """With --limit, the baseline's accuracy and every delta are on the same first N images."""
    pixels = np.load(REF / "golden_input.npy")
    labels = np.load(REF / "golden_output_float32.npy").argmax(-1)
    labels[::3] = (labels[::3] + 1) % 10  # not every row 100 % right
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=pixels, y_train=labels, x_test=pixels, y_test=labels)
    limit = len(pixels) // 2
    args = [str(REF / "classifier_float32.tflite"), str(REF / "classifier_int8.tflite")]
    args += ["--runtimes", "litert", "--dataset", "npz", "--data-path", str(npz)]
    args += ["--limit", str(limit), "--baseline", "classifier_float32", "--out", str(tmp_path)]
    assert main(["benchmark", *args, *FAST]) == 0
    capsys.readouterr()
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    assert doc["data"]["n"] == limit and doc["baseline"]["n"] == limit
    outputs = {v: np.load(REF / f"golden_output_{v}.npy")[:limit] for v in ("float32", "int8")}
    expected = {v: float(np.mean(o.argmax(-1) == labels[:limit])) for v, o in outputs.items()}
    assert doc["baseline"]["metric"] == pytest.approx(expected["float32"])
    for row in doc["rows"]:
        variant = row["artifact"].removeprefix("classifier_")
        assert row["metric"]["n"] == limit
        assert row["metric"]["value"] == pytest.approx(expected[variant], abs=1 / limit)
        delta = row["metric"]["value"] - doc["baseline"]["metric"]
        assert row["metric"]["delta_vs_baseline"] == pytest.approx(delta)
