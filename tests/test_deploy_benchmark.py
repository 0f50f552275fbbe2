"""deploy.benchmark: rows for every artifact x runtime x threads, statuses, outputs, CLI."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deploy.benchmark import EvalData, main, run_benchmark, validate_benchmark
from deploy.benchmark.cli import expand_artifacts
from deploy.benchmark.html import pareto_front

REF = Path(__file__).resolve().parents[1] / "tflite_models"
FAST = dict(warmup=1, runs=5, batch_size=4, throughput_runs=2, progress=False)
# each reference model's top-1 classes on the golden images, stored beside it
TOP1 = {v: np.load(REF / f"golden_output_{v}.npy").argmax(-1) for v in ("float32", "int8")}


@pytest.fixture(scope="module")
def data():
    """The golden images, labelled so that every model gets the first two wrong.

    Accuracy (against these labels) and agreement (against the float model's predictions) are
    then different numbers, so a row cannot report one for the other.
    """
    pixels = np.load(REF / "golden_input.npy")
    labels = TOP1["float32"].copy()
    labels[:2] = (labels[:2] + 1) % 10
    return EvalData(labels, images=pixels, source="golden")


def _accuracy(variant, data):
    return float(np.mean(TOP1[variant] == data.labels))


@pytest.fixture(scope="module")
def doc(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("bench")
    broken = out / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    arts = [REF / "classifier_float32.tflite", REF / "classifier_int8.tflite", broken]
    return run_benchmark(
        arts, out_dir=out, threads=[1, 2], delegates=["gpu"], data=data, **FAST
    ), out


def _rows(doc, **match):
    return [r for r in doc["rows"] if all(r[k] == v for k, v in match.items())]


def test_every_artifact_runtime_thread_is_a_row(doc, data):
    d, _ = doc
    validate_benchmark(d)
    float_rows = _rows(d, artifact="classifier_float32")
    combos = {(r["runtime"], r["threads"]) for r in float_rows}
    assert combos == {
        (rt, t) for rt in ("litert", "litert_no_xnnpack", "litert_delegate:gpu") for t in (1, 2)
    }
    ok = _rows(d, artifact="classifier_float32", runtime="litert", threads=1)[0]
    assert ok["status"] == "ok" and ok["metric"]["value"] == _accuracy("float32", data) == 0.75
    assert ok["metric"]["delta_vs_baseline"] == 0.0 and ok["agreement"] == 1.0
    lat = ok["latency"]
    assert lat["runs"] == 5 and len(ok["latency_samples_ms"]) == 5
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert ok["throughput"]["batch_size"] == 4 and ok["throughput"]["images_per_s"] > 0
    assert ok["load_s"] >= 0 and ok["memory"]["peak_rss_mb"] > 0
    assert ok["size_mb"] > ok["gzip_mb"] > 0 and ok["input"]["dtype"] == "float32"
    assert d["baseline"]["artifact"] == "classifier_float32"


def test_int8_rows_report_delta_and_agreement(doc, data):
    d, _ = doc
    accuracy = _accuracy("int8", data)
    agreement = float(np.mean(TOP1["int8"] == TOP1["float32"]))
    assert (accuracy, agreement) == (0.75, 1.0)  # the fixture keeps them apart
    rows = [r for r in _rows(d, artifact="classifier_int8") if r["status"] == "ok"]
    assert {(r["runtime"], r["threads"]) for r in rows} == {
        (rt, t) for rt in ("litert", "litert_no_xnnpack") for t in (1, 2)
    }
    for row in rows:
        assert row["input"]["dtype"] == "int8"
        assert row["metric"]["value"] == pytest.approx(accuracy)
        assert row["metric"]["delta_vs_baseline"] == pytest.approx(
            accuracy - _accuracy("float32", data)
        )
        assert row["agreement"] == pytest.approx(agreement)


def test_unavailable_and_broken_rows_carry_reasons(doc):
    d, _ = doc
    gpu = [r for r in _rows(d, runtime="litert_delegate:gpu") if r["artifact"] != "broken"]
    assert gpu and all(
        r["status"] == "unavailable" and "not available here" in r["reason"] for r in gpu
    )
    broken = _rows(d, artifact="broken")
    assert broken and all(r["status"] == "failed_validation" for r in broken)
    assert "not a TFLite flatbuffer" in broken[0]["reason"]


def test_outputs_are_written_from_the_json(doc):
    d, out = doc
    assert json.loads((out / "benchmark.json").read_text())["rows"] == d["rows"]
    with open(out / "benchmark.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(d["rows"]) and rows[0]["status"] == d["rows"][0]["status"]
    md = (out / "benchmark.md").read_text()
    assert md.count("\n| classifier_") + md.count("\n| broken") == len(d["rows"])
    html = (out / "benchmark.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Pareto" not in html.split("<img")[0]


def test_floor_and_min_agreement_change_status(data, tmp_path):
    d = run_benchmark(
        [REF / "classifier_int8.tflite"], runtimes=["litert"], data=data, floor=1.01, **FAST
    )
    assert [r["status"] for r in d["rows"]] == ["below_floor"]
    assert "< floor 1.0100" in d["rows"][0]["reason"]
    labels = (data.labels + 1) % 10  # every prediction wrong
    wrong = EvalData(labels, images=data.images)
    d = run_benchmark(
        [REF / "classifier_float32.tflite", REF / "classifier_int8.tflite"],
        runtimes=["litert"], data=wrong, min_agreement=1.01, **FAST,
    )  # fmt: skip
    assert d["rows"][0]["status"] == "ok" and d["rows"][0]["metric"]["value"] == 0.0
    assert d["rows"][1]["status"] == "failed_validation"
    assert "agreement with the baseline 100.00% < 101.00%" in d["rows"][1]["reason"]
    # agreement, not accuracy, is held to min_agreement: 0.75 accurate, 100 % in agreement
    d = run_benchmark(
        [REF / "classifier_float32.tflite", REF / "classifier_int8.tflite"],
        runtimes=["litert"], data=data, min_agreement=0.9, **FAST,
    )  # fmt: skip
    assert [(r["status"], r["metric"]["value"]) for r in d["rows"]] == [("ok", 0.75)] * 2


def test_cli_exit_codes(tmp_path, capsys):
    args = [
        str(REF / "classifier_int8.tflite"),
        "--runtimes",
        "litert",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--throughput-runs",
        "1",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    assert main(args + ["--out", str(tmp_path)]) == 0
    assert (tmp_path / "benchmark.html").is_file()
    assert "| classifier_int8 | litert | 1 | ok |" in capsys.readouterr().out
    npz = tmp_path / "d.npz"
    pixels = np.load(REF / "golden_input.npy")
    np.savez(
        npz,
        x_train=pixels,
        y_train=np.zeros(len(pixels), int),
        x_test=pixels,
        y_test=np.zeros(len(pixels), int),
    )
    assert main(args + ["--dataset", "npz", "--data-path", str(npz), "--floor", "0.99"]) == 1
    assert main([str(tmp_path / "nothing.tflite")]) == 2


def test_expand_artifacts_and_names(tmp_path):
    shutil.copy(REF / "classifier_int8.tflite", tmp_path / "a.tflite")
    (tmp_path / "sub").mkdir()
    shutil.copy(REF / "classifier_int8.tflite", tmp_path / "sub" / "b.tflite")
    found = expand_artifacts([str(tmp_path), f"mine={REF / 'classifier_float32.tflite'}"])
    assert [p.name for _, p in found] == ["a.tflite", "b.tflite", "classifier_float32.tflite"]
    assert found[-1][0] == "mine"
    with pytest.raises(ValueError, match="No artifacts"):
        expand_artifacts([str(_empty(tmp_path))])


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_pareto_front():
    pts = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (0.5, 0.10), (2.0, 0.95)]
    assert pareto_front(pts) == [3, 0, 4]


def test_bad_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="`threads`"):
        run_benchmark([REF / "classifier_int8.tflite"], threads=[0], progress=False)
    with pytest.raises(ValueError, match="`baseline` should be one of"):
        run_benchmark([REF / "classifier_int8.tflite"], baseline="nope", progress=False)
    with pytest.raises(ValueError, match="Unknown runtime"):
        run_benchmark([REF / "classifier_int8.tflite"], runtimes=["tpu"], progress=False)
    with pytest.raises(ValueError, match="labels"):
        EvalData(np.zeros(3), images=np.zeros((2, 4, 4, 1), np.uint8))
