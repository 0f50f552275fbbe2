"""deploy.serving: TF Serving layout, models.config, batching, warm-up, signature, client."""

import shutil
import subprocess
import time

import numpy as np
import pytest

from deploy.serving import (
    BatchingParameters,
    ServedModel,
    ServingClient,
    models_config_text,
    package_for_serving,
    read_serving_signature,
)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from kvision.export.saved_model import export_saved_model
    from kvision.models import build_model

    out = tmp_path_factory.mktemp("sm")
    model = build_model("compact_mobilenet", (28, 28, 1), 3, width=0.25)
    return export_saved_model(model, out, "classifier", 1)


def test_signature_as_tf_serving_reads_it(saved_model):
    sig = read_serving_signature(saved_model)
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["images"]["shape"] == [-1, 28, 28, 1]
    assert sig["outputs"]["probabilities"]["shape"] == [-1, 3]
    with pytest.raises(ValueError, match="no signature 'predict'.*serving_default"):
        read_serving_signature(saved_model, "predict")


def test_package_layout_config_and_warmup(saved_model, tmp_path):
    import tensorflow as tf
    from google.protobuf import text_format

    models = [
        ServedModel(
            "fashion", {1: saved_model, 2: saved_model}, labels={"stable": 1, "canary": 2},
            policy="specific",
        )
    ]  # fmt: skip
    pkg = package_for_serving(tmp_path, models, warmup_records=3)
    for v in (1, 2):
        assert (tmp_path / "fashion" / str(v) / "saved_model.pb").is_file()
    text = pkg["config"].read_text()
    try:
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        pytest.skip("tensorflow-serving-api not installed: cannot parse models.config")
    cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (entry,) = cfg.model_config_list.config
    assert entry.name == "fashion" and entry.base_path == "/models/fashion"
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}

    from tensorflow_serving.apis import prediction_log_pb2

    warm = tmp_path / "fashion" / "1" / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(warm))
    ]
    assert len(logs) == 3
    req = logs[0].predict_log.request
    assert req.model_spec.name == "fashion" and req.model_spec.signature_name == "serving_default"
    x = tf.make_ndarray(req.inputs["images"])
    assert x.shape == (1, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1

    compose = pkg["compose"].read_text()
    assert '"127.0.0.1:8501:8501"' in compose and '"127.0.0.1:8500:8500"' in compose
    assert "--batching_parameters_file=/models/batching_parameters.txt" in compose
    assert "max_batch_size { value: 32 }" in pkg["batching"].read_text()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        package_for_serving(tmp_path, models, warmup_records=0)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="Label 'stable' should name one of the versions"):
        ServedModel("m", {1: "a"}, labels={"stable": 3})
    with pytest.raises(ValueError, match="policy 'latest'"):
        ServedModel("m", {1: "a", 2: "b"}, labels={"old": 1})
    with pytest.raises(ValueError, match="no slashes"):
        ServedModel("a/b", {1: "a"})
    with pytest.raises(ValueError, match="unique"):
        models_config_text([ServedModel("m", {1: "a"}), ServedModel("m", {2: "b"})])
    text = models_config_text([ServedModel("m", {1: "a", 4: "b"}, num_latest=2)])
    assert "latest { num_versions: 2 }" in text
    with pytest.raises(ValueError, match="largest of `allowed_batch_sizes`"):
        BatchingParameters(max_batch_size=16, allowed_batch_sizes=(4, 8)).to_text()
    assert "allowed_batch_sizes: 8" in BatchingParameters(8, allowed_batch_sizes=(4, 8)).to_text()


def test_client_urls():
    c = ServingClient("127.0.0.1", rest_port=9000)
    assert c.url("m") == "http://127.0.0.1:9000/v1/models/m"
    assert c.url("m", version=2, verb=":predict").endswith("/v1/models/m/versions/2:predict")
    assert c.url("m", label="stable", verb="/metadata").endswith("/labels/stable/metadata")
    with pytest.raises(ValueError, match="not both"):
        c.url("m", version=1, label="x")


def test_real_tensorflow_model_server(saved_model, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip(
            "tensorflow_model_server is not on PATH (not on PyPI or Debian; use the "
            "tensorflow/serving Docker image): TF Serving integration test skipped"
        )
    package_for_serving(
        tmp_path, [ServedModel("fashion", {1: saved_model})], config_root=str(tmp_path)
    )
    rest, grpc = 18501, 18500
    proc = subprocess.Popen(
        [binary, f"--port={grpc}", f"--rest_api_port={rest}", "--rest_api_bind_address=127.0.0.1",
         f"--model_config_file={tmp_path / 'models.config'}"],
    )  # fmt: skip
    try:
        client = ServingClient("127.0.0.1", rest, grpc)
        deadline = time.time() + 60
        while True:
            try:
                if client.status("fashion")["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except Exception:
                if time.time() > deadline:
                    raise
            time.sleep(0.5)
        x = np.zeros((2, 28, 28, 1), np.float32)
        rest_y = client.predict("fashion", x)
        grpc_y = client.grpc_predict("fashion", x)
        np.testing.assert_allclose(rest_y, grpc_y, atol=1e-6)
        assert client.grpc_status("fashion")["modelVersionStatus"][0]["state"] == "AVAILABLE"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
