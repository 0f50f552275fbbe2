"""`kvision benchmark | inspect | serve | convert` on artifacts kvision did not make: several
named inputs or outputs, int8 / uint8 / float16 tensors, .keras / .h5 / .hdf5 files, a custom op.

The artifacts come from tests/runtime/zoo.py (a two-output "detector": ``boxes`` [N, 4] and
``scores`` [N, 3]; a two-input model: ``image`` and ``meta`` -> ``value``). Served and converted
outputs are compared with the Keras models' own outputs, within zoo.TOLERANCE.
"""

import base64
import csv
import io
import json

import numpy as np
import pytest

from deploy.benchmark import EvalData, run_benchmark, validate_benchmark
from deploy.cli import main

FAST = dict(warmup=1, runs=3, batch_size=4, throughput_runs=2, progress=False)
CLI_FAST = ["--runs", "2", "--warmup", "1", "--throughput-runs", "1", "--batch-size", "2"]
CLI_FAST += ["--no-progress"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from runtime.zoo import build_zoo

    return build_zoo(tmp_path_factory.mktemp("foreign"))


def _tol(kind, reference):
    from runtime.zoo import tolerance

    return tolerance(kind, reference)


# -- benchmark ---------------------------------------------------------------------------------


def test_benchmark_rows_without_a_task_say_not_done(zoo, tmp_path):
    p = zoo["paths"]
    kinds = ["keras", "h5", "hdf5", "saved_model", "float32", "float16", "int8", "uint8"]
    kinds += ["two_in_float32", "two_in_int8", "custom_op"]
    doc = run_benchmark(
        {k: p[k] for k in kinds}, out_dir=tmp_path, runtimes=["keras", "tf_cpu", "litert"], **FAST
    )
    validate_benchmark(doc)
    rows = {r["artifact"]: r for r in doc["rows"]}
    assert set(rows) == set(kinds) and doc["baseline"]["artifact"] == "keras"
    for name, row in rows.items():
        if name == "custom_op":
            continue
        assert row["status"] == "ok", (name, row["reason"])
        assert row["load_s"] >= 0 and row["size_mb"] > 0, name
        assert 0 < row["latency"]["p50_ms"] <= row["latency"]["p99_ms"], name
        assert row["throughput"]["images_per_s"] > 0 and len(row["latency_samples_ms"]) == 3
        # no task known: no number for the metric or the agreement, and the reason
        assert row["task"] is None and row["metric"] is None and row["agreement"] is None, name
        assert set(row["not_done"]) == {"metric", "agreement"}
        assert row["not_done"]["metric"].startswith("no task known"), row["not_done"]
    int8 = rows["int8"]
    assert {o["name"]: o["dtype"] for o in int8["outputs"]} == {"boxes": "int8", "scores": "int8"}
    assert int8["input"]["dtype"] == "int8" and int8["input"]["scale"] > 0
    assert rows["float16"]["input"]["dtype"] == "float16"
    assert sorted(i["name"] for i in rows["two_in_int8"]["inputs"]) == ["image", "meta"]
    assert rows["two_in_int8"]["contract_source"] is None
    assert "CONV_2D" in int8["ops"] and rows["hdf5"]["ops"] is None
    custom = rows["custom_op"]
    assert custom["status"] == "failed_load" and custom["ops"] == ["MatrixDeterminant"]
    assert "needs custom ops ['MatrixDeterminant']" in custom["reason"]
    md = (tmp_path / "benchmark.md").read_text()
    assert md.count("metric not done: no task known") == len(kinds) - 1
    with open(tmp_path / "benchmark.csv", newline="") as fh:
        table = {r["artifact"]: r for r in csv.DictReader(fh)}
    assert table["int8"]["accuracy"] == "not done" and table["int8"]["agreement"] == "not done"
    assert table["int8"]["outputs"] == "boxes scores"


def test_a_dataset_never_scores_an_unknown_task_and_a_known_one_without_scorer(zoo, tmp_path):
    from kvision.models import InputContract

    det = tmp_path / "det.tflite"
    det.write_bytes(zoo["paths"]["float32"].read_bytes())
    InputContract(12, 12, 3, task="detection").save(tmp_path / "det.contract.json")
    pixels = np.random.default_rng(3).integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    data = EvalData(np.zeros(4), images=pixels)
    doc = run_benchmark(
        {"foreign": zoo["paths"]["float32"], "det": det}, runtimes=["litert"], data=data, **FAST
    )
    rows = {r["artifact"]: r for r in doc["rows"]}
    assert all(r["status"] == "ok" and r["metric"] is None for r in rows.values())
    assert rows["foreign"]["contract_source"] == "derived" and rows["foreign"]["task"] is None
    assert rows["det"]["task"] == "detection" and rows["det"]["contract_source"] == "file"
    assert "no scorer for task 'detection'" in rows["det"]["not_done"]["metric"]


def test_benchmark_cli_on_foreign_artifacts(zoo, tmp_path, capsys):
    npz = tmp_path / "d.npz"
    pixels = np.random.default_rng(4).integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    np.savez(npz, x_train=pixels, y_train=np.zeros(4, int), x_test=pixels, y_test=np.zeros(4, int))
    args = [str(zoo["paths"]["uint8"]), str(zoo["paths"]["two_in_float32"]), "--runtimes"]
    args += ["litert", "--dataset", "npz", "--data-path", str(npz), *CLI_FAST]
    assert main(["benchmark", *args]) == 0
    out = capsys.readouterr().out
    assert "| detector_uint8 | litert | 1 | ok |" in out and "| two_in_float32 | litert" in out
    assert "metric not done: no task known" in out
    assert main(["benchmark", str(zoo["paths"]["custom_op"]), *CLI_FAST]) == 1
    assert "MatrixDeterminant" in capsys.readouterr().err


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_lists_every_input_and_output(zoo, capsys):
    from deploy.tools.inspect_tflite import inspect_artifact

    p = zoo["paths"]
    int8 = inspect_artifact(p["int8"])
    assert [t["key"] for t in int8["inputs"]] == ["image"]
    assert sorted(t["key"] for t in int8["outputs"]) == ["boxes", "scores"]
    assert all(t["dtype"] == "int8" and t["quantization"]["scales"] for t in int8["outputs"])
    two = inspect_artifact(p["two_in_float32"])
    assert sorted(t["key"] for t in two["inputs"]) == ["image", "meta"]
    for kind, fmt in (("saved_model", "saved_model"), ("hdf5", "keras"), ("h5", "keras")):
        info = inspect_artifact(p[kind])
        assert info["format"] == fmt and info["loadable"] and info["size_bytes"] > 0
        assert [t["key"] for t in info["inputs"]] == ["image"]
        assert sorted(t["key"] for t in info["outputs"]) == ["boxes", "scores"], kind
    assert main(["inspect", str(p["uint8"])]) == 0
    out = capsys.readouterr().out
    assert "(key 'boxes')" in out and "(key 'scores')" in out and "uint8" in out
    assert main(["inspect", str(p["saved_model"])]) == 0
    out = capsys.readouterr().out
    assert "boxes  float32 [None, 4]" in out and "scores  float32 [None, 3]" in out
    assert main(["inspect", str(p["custom_op"])]) == 1
    out = capsys.readouterr().out
    assert "custom ['MatrixDeterminant']" in out and "cannot load with LiteRT" in out


# -- serve -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(zoo):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from deploy.server import ModelStore, create_app

    store = ModelStore()
    store.add("det", zoo["paths"]["int8"])
    store.add("det_sm", zoo["paths"]["saved_model"])
    store.add("two", zoo["paths"]["two_in_float32"])
    yield TestClient(create_app(store))
    store.close()


@pytest.mark.parametrize("model,kind", [("det", "int8"), ("det_sm", "saved_model")])
def test_serve_answers_every_output_in_row_and_columnar_formats(zoo, client, model, kind):
    x, reference = zoo["x"], zoo["reference"]
    row = client.post(f"/v1/models/{model}:predict", json={"instances": x.tolist()})
    assert row.status_code == 200, row.text
    predictions = row.json()["predictions"]
    assert len(predictions) == len(x) and all(set(p) == {"boxes", "scores"} for p in predictions)
    col = client.post(f"/v1/models/{model}:predict", json={"inputs": {"image": x.tolist()}})
    assert col.status_code == 200, col.text
    outputs = col.json()["outputs"]
    assert set(outputs) == {"boxes", "scores"}
    for name, ref in reference.items():
        rows = np.array([p[name] for p in predictions], np.float32)
        np.testing.assert_array_equal(rows, np.array(outputs[name], np.float32))
        assert np.abs(rows - ref).max() <= _tol(kind, ref), name


def test_serve_takes_several_inputs_by_name(zoo, client):
    feeds, ref = zoo["two_in_feeds"], zoo["two_in_reference"]["value"]
    instances = [{"image": feeds["image"][i].tolist(), "meta": feeds["meta"][i].tolist()}
                 for i in range(len(ref))]  # fmt: skip
    row = client.post("/v1/models/two:predict", json={"instances": instances})
    assert row.status_code == 200, row.text
    np.testing.assert_allclose(row.json()["predictions"], ref, atol=1e-5)  # one output: bare
    columns = {k: v.tolist() for k, v in feeds.items()}
    col = client.post("/v1/models/two:predict", json={"inputs": columns})
    np.testing.assert_allclose(col.json()["outputs"], ref, atol=1e-5)
    bad = [
        ({"instances": [{"image": instances[0]["image"]}]}, "naming the model's inputs"),
        ({"inputs": {"image": columns["image"]}}, "['image', 'meta']"),
        ({"instances": [{"image": {"b64": "aGk="}, "meta": [0] * 5}]}, "b64 images need"),
        ({"inputs": {**columns, "meta": columns["meta"][:2]}}, "same number of rows"),
        ({"instances": [{"image": [[1]], "meta": [0] * 5}]}, "has shape [1, 1]; expected"),
    ]
    for body, message in bad:
        r = client.post("/v1/models/two:predict", json=body)
        assert r.status_code == 400 and message in r.json()["error"], (body, r.text)


def test_serve_metadata_and_b64_for_foreign_models(client):
    from PIL import Image

    meta = client.get("/v1/models/det/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sig["outputs"]) == {"boxes", "scores"} and set(sig["inputs"]) == {"image"}
    assert sig["inputs"]["image"]["dtype"] == "DT_FLOAT"  # quantized: floats, quantized inside
    assert [o["dtype"] for o in meta["kvision"]["artifact_outputs"]] == ["int8", "int8"]
    assert meta["kvision"]["contract_source"] == "derived" and meta["kvision"]["labels"] == []
    two = client.get("/v1/models/two/metadata").json()
    assert two["kvision"]["contract"] is None
    assert set(two["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]) == {
        "image",
        "meta",
    }
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 16, 3), 90, np.uint8)).save(buf, "PNG")
    b64 = {"b64": base64.b64encode(buf.getvalue()).decode()}
    r = client.post("/v1/models/det:predict", json={"instances": [b64]})
    assert r.status_code == 200 and set(r.json()["predictions"][0]) == {"boxes", "scores"}


def test_dynamic_batching_splits_named_outputs(zoo):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from deploy.server import ModelStore, create_app

    store = ModelStore()
    store.add("det", zoo["paths"]["float32"])
    try:
        app = create_app(store, batching={"max_batch_size": 8, "timeout_ms": 1})
        with TestClient(app) as c:
            r = c.post("/v1/models/det:predict", json={"instances": zoo["x"][:3].tolist()})
        got = np.array([p["scores"] for p in r.json()["predictions"]], np.float32)
        np.testing.assert_allclose(got, zoo["reference"]["scores"][:3], atol=1e-5)
    finally:
        store.close()


# -- convert -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(5)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_convert_verifies_every_output(zoo, calibration, tmp_path, capsys):
    from deploy.tools.convert import convert
    from kvision.runtime import open_runtime

    report = convert(zoo["paths"]["hdf5"], ["float32", "int8"], tmp_path, calibration=calibration)
    assert report["outputs"] == ["boxes", "scores"]
    arts = {a["name"]: a for a in report["artifacts"]}
    assert all(a["status"] == "ok" for a in arts.values()), [a["reason"] for a in arts.values()]
    for art in arts.values():
        assert set(art["checks"]["outputs"]) == {"boxes", "scores"}
    assert max(o["max_abs_diff"] for o in arts["float32"]["checks"]["outputs"].values()) <= 1e-4
    # the converted int8 file, run independently of the verification, against Keras
    with open_runtime(tmp_path / "detector_int8.tflite") as rt:
        assert [(i.name, i.dtype) for i in rt.inputs] == [("images", "int8")]  # kvision's name
        out = rt.run(zoo["x"])
    for name, ref in zoo["reference"].items():
        assert np.abs(out[name] - ref).max() <= 0.1 * np.ptp(ref), name
    out = tmp_path / "from_saved_model"
    code = main(["convert", "--model", str(zoo["paths"]["saved_model"]), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "boxes max|diff|" in text and "scores max|diff|" in text
    sm = json.loads((out / "convert_report.json").read_text())
    assert sm["outputs"] == ["boxes", "scores"] and sm["artifacts"][0]["status"] == "ok"


def test_convert_names_the_output_that_failed(zoo, tmp_path, capsys):
    from deploy.tools.convert import convert
    from deploy.tools.output_parity import verify_outputs

    convert(zoo["paths"]["keras"], ["float32"], tmp_path, name="d")
    path = tmp_path / "d_float32.tflite"
    reference = dict(zoo["reference"])
    ok = verify_outputs(path, "float32", zoo["x"], reference)
    assert ok.status == "ok", ok.reason
    reference["scores"] = reference["scores"] + 0.01  # the source disagrees on one output
    bad = verify_outputs(path, "float32", zoo["x"], reference)
    assert bad.status == "failed" and "output 'scores'" in bad.reason and "boxes" not in bad.reason
    assert bad.checks["outputs"]["boxes"]["ok"] and not bad.checks["outputs"]["scores"]["ok"]
    two = ["convert", "--model", str(zoo["paths"]["two_in_keras"]), "--out", str(tmp_path)]
    assert main(two) == 2
    assert "has inputs ['image', 'meta']" in capsys.readouterr().err


# -- package for TF Serving --------------------------------------------------------------------


def test_warmup_records_name_every_input(zoo, tmp_path):
    pytest.importorskip("tensorflow_serving")
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from deploy.serving import ServedModel, package_for_serving

    models = [ServedModel("two", {1: zoo["paths"]["two_in_saved_model"]})]
    package_for_serving(tmp_path, models, warmup_records=2)
    warm = tmp_path / "two" / "1" / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(warm))
    ]
    assert len(logs) == 2
    for log in logs:
        inputs = log.predict_log.request.inputs
        assert sorted(inputs) == ["image", "meta"]
        assert tf.make_ndarray(inputs["image"]).shape == (1, 12, 12, 3)
        meta = tf.make_ndarray(inputs["meta"])
        assert meta.shape == (1, 5) and meta.dtype == np.float32 and 0 <= meta.min() < 1
