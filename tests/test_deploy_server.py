"""deploy.server (`kvision serve`): TF Serving REST API, bad requests, concurrency, batching."""

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from deploy.runtimes import TensorInfo  # noqa: E402
from deploy.server import ModelStore, create_app, load_store  # noqa: E402
from deploy.server.store import RuntimePool, ServedVersion  # noqa: E402

REF = Path(__file__).resolve().parents[1] / "tflite_models"
FLOAT, INT8 = REF / "classifier_float32.tflite", REF / "classifier_int8.tflite"


@pytest.fixture(scope="module")
def store():
    s = ModelStore()
    s.add("fashion", FLOAT, version=1)
    s.add("fashion", INT8, version=2, threads=1)
    s.set_label("fashion", "stable", 1)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(store):
    return TestClient(create_app(store, max_body_bytes=200_000, max_instances=16))


@pytest.fixture(scope="module")
def golden():
    return np.load(REF / "golden_input.npy")


def _png(pixels: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_status_metadata_health(client):
    status = client.get("/v1/models/fashion").json()["model_version_status"]
    assert [s["version"] for s in status] == ["2", "1"] and status[0]["state"] == "AVAILABLE"
    assert (
        client.get("/v1/models/fashion/labels/stable").json()["model_version_status"][0]["version"]
        == "1"
    )
    meta = client.get("/v1/models/fashion/versions/2/metadata").json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["images"]["tensor_shape"]["dim"]] == [
        "-1", "28", "28", "1"
    ]  # fmt: skip
    assert meta["kvision"]["artifact_input"]["dtype"] == "int8"
    assert meta["kvision"]["labels"][0] == "T-shirt/top"
    assert client.get("/healthz").json() == {"status": "ok", "models": {"fashion": [1, 2]}}


def test_predict_row_columnar_b64_match_the_runtime(client, store, golden):
    served = store.resolve("fashion", 1)
    x = served.contract.normalize(golden[:3])
    expected = served.predict(x)
    row = client.post("/v1/models/fashion/versions/1:predict", json={"instances": x.tolist()})
    assert row.status_code == 200
    np.testing.assert_allclose(row.json()["predictions"], expected, atol=1e-6)
    col = client.post(
        "/v1/models/fashion/labels/stable:predict", json={"inputs": {"images": x.tolist()}}
    )
    np.testing.assert_allclose(col.json()["outputs"], expected, atol=1e-6)
    named = client.post(
        "/v1/models/fashion/versions/1:predict",
        json={"instances": [{"images": x[0].tolist()}], "signature_name": "serving_default"},
    )
    np.testing.assert_allclose(named.json()["predictions"][0], expected[0], atol=1e-6)
    b64 = client.post(
        "/v1/models/fashion/versions/1:predict",
        json={"instances": [{"b64": _png(golden[i, :, :, 0])} for i in range(3)]},
    )
    np.testing.assert_allclose(b64.json()["predictions"], expected, atol=1e-6)
    big_rgb = np.repeat(np.repeat(golden[0], 2, 0), 2, 1).repeat(3, -1)  # 56x56 RGB
    resized = client.post(
        "/v1/models/fashion:predict", json={"instances": [{"b64": _png(big_rgb)}]}
    )
    assert resized.status_code == 200 and len(resized.json()["predictions"][0]) == 10


BAD = [
    ("malformed json", b'{"instances": [1,', 400, "Malformed JSON"),
    ("not utf-8", b"\xff\xfe", 400, "Malformed JSON"),
    ("json list", b"[1, 2]", 400, "should be a JSON object"),
    ("empty body", b"", 400, "Empty body"),
    ("neither key", b'{"foo": 1}', 400, "Unknown field(s) ['foo']"),
    ("both keys", b'{"instances": [], "inputs": []}', 400, "exactly one of"),
    ("empty instances", b'{"instances": []}', 400, "non-empty list"),
    ("wrong shape", b'{"instances": [[1, 2, 3]]}', 400, "has shape [3]; expected [28, 28, 1]"),
    ("wrong dtype", b'{"instances": [[[["x"]]]]}', 400, "should hold numbers"),
    ("booleans", b'{"instances": [[[[true]]]]}', 400, "Received: booleans"),
    ("ragged", b'{"instances": [[[1], [1, 2]]]}', 400, "ragged"),
    ("nan", b'{"instances": [[[[NaN]]]]}', 400, "NaN"),
    ("bad b64", b'{"instances": [{"b64": "***"}]}', 400, "not valid base64"),
    ("b64 not image", b'{"instances": [{"b64": "aGVsbG8="}]}', 400, "not a decodable image"),
    ("wrong input name", b'{"inputs": {"pixels": []}}', 400, "one input 'images'"),
    ("columnar shape", b'{"inputs": [[1, 2]]}', 400, "expected [N, 28, 28, 1]"),
    ("bad signature", b'{"signature_name": "x", "instances": [1]}', 400, "'x' not found"),
    ("too many", json.dumps({"instances": [{"b64": "x"}] * 17}).encode(), 400, "17 > 16"),
]


@pytest.mark.parametrize("body,code,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_request_suite(client, body, code, message):
    r = client.post("/v1/models/fashion:predict", content=body)
    assert r.status_code == code
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    "method,path,code,message",
    [
        ("GET", "/v1/models/nope", 404, "model 'nope' is not served"),
        ("POST", "/v1/models/nope:predict", 404, "served: ['fashion']"),
        ("GET", "/v1/models/fashion/versions/7", 404, "no version 7 (versions: [1, 2])"),
        ("GET", "/v1/models/fashion/versions/x1", 400, "non-negative integer"),
        ("GET", "/v1/models/fashion/labels/beta", 404, "label 'beta'"),
        ("GET", "/v1/models/fashion:predict", 405, "predict expects POST"),
        ("POST", "/v1/models/fashion/metadata", 405, "metadata expects GET"),
        ("POST", "/v1/models/fashion:classify", 400, "Unsupported API ':classify'"),
        ("GET", "/v2/anything", 404, "No such route"),
    ],
)
def test_routes_errors(client, method, path, code, message):
    r = client.request(method, path, content=b'{"instances": [1]}' if method == "POST" else None)
    assert r.status_code == code and message in r.json()["error"]


def test_body_limit_and_server_survives(client, golden):
    r = client.post("/v1/models/fashion:predict", content=b"[" + b"0," * 150_000 + b"0]")
    assert r.status_code == 413 and "limit" in r.json()["error"]
    ok = client.post(
        "/v1/models/fashion:predict", json={"instances": [{"b64": _png(golden[0, :, :, 0])}]}
    )
    assert ok.status_code == 200
    metrics = client.get("/metrics").text
    assert (
        'kvision_requests_total{model="fashion",version="2",endpoint="predict",code="200"}'
        in metrics
    )
    assert 'code="413"' in metrics and "kvision_inflight_requests 0" in metrics


class _SlowRuntime:
    """Counts how many threads are inside predict at once."""

    def __init__(self):
        self.inside = 0
        self.most = 0
        self.calls = []
        self.lock = threading.Lock()

    def load(self):
        pass

    def close(self):
        pass

    def describe(self):
        return {"runtime": "slow"}

    def predict(self, x):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.calls.append(len(x))
        time.sleep(0.02)
        with self.lock:
            self.inside -= 1
        return np.tile(x.reshape(len(x), -1)[:, :1], (1, 2)).astype(np.float32)


def _fake_store(runtime, instances=1):
    from kvision.models.contract import InputContract

    store = ModelStore()
    pool = RuntimePool(lambda: runtime, instances)
    spec = TensorInfo("images", (None, 2, 2, 1), "float32")
    served = ServedVersion(
        "m", 1, Path("fake"), "tflite", pool, InputContract(2, 2, 1), "file", spec,
        TensorInfo("probabilities", (None, 2), "float32"),
    )  # fmt: skip
    store.models["m"] = {1: served}
    return store


def _hammer(app, n_threads=6, per_thread=3):
    results, errors = [], []

    def worker(i):
        with TestClient(app) as c:
            for j in range(per_thread):
                value = float(i * 10 + j)
                r = c.post("/v1/models/m:predict", json={"instances": [[[[value]] * 2] * 2]})
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    results.append((value, r.json()["predictions"][0][0]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_requests_never_share_an_interpreter():
    rt = _SlowRuntime()
    results, errors = _hammer(create_app(_fake_store(rt)))
    assert not errors and len(results) == 18
    assert all(v == got for v, got in results)  # every reply is its own request's
    assert rt.most == 1  # one runtime: never two threads inside predict


def test_dynamic_batching_merges_concurrent_requests():
    rt = _SlowRuntime()
    app = create_app(_fake_store(rt), batching={"max_batch_size": 8, "timeout_ms": 30})
    with TestClient(app) as c:  # one event loop for all threads' requests

        def worker(i):
            r = c.post("/v1/models/m:predict", json={"instances": [[[[float(i)]] * 2] * 2]})
            assert r.status_code == 200 and r.json()["predictions"][0][0] == float(i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = c.get("/metrics").text
    assert sum(rt.calls) == 6 and max(rt.calls) > 1 and rt.most == 1
    assert "kvision_batch_size_bucket" in metrics


def test_load_store_parses_specs(tmp_path):
    with pytest.raises(ValueError, match="NAME=PATH"):
        load_store(["just_a_path"])
    with pytest.raises(ValueError, match="NAME:LABEL=VERSION"):
        load_store([f"m={FLOAT}"], ["m=1"])
    with pytest.raises(ValueError, match="has no version 5"):
        load_store([f"m={FLOAT}"], ["m:stable=5"])
    with pytest.raises(FileNotFoundError):
        load_store([f"m={tmp_path / 'nope.tflite'}"])


def test_rest_client_against_real_uvicorn_on_loopback(store, golden):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from load_test import _free_port, start_server

    from deploy.serving import ServingClient, ServingError

    port = _free_port()
    server, thread = start_server(create_app(store), port)
    try:
        c = ServingClient("127.0.0.1", rest_port=port)
        assert c.status("fashion", version=2)["model_version_status"][0]["version"] == "2"
        served = store.resolve("fashion", 1)
        x = served.contract.normalize(golden[:2])
        np.testing.assert_allclose(
            c.predict("fashion", x, label="stable"), served.predict(x), atol=1e-6
        )
        assert c.metadata("fashion")["model_spec"]["version"] == "2"
        with pytest.raises(ServingError, match="404: .*not served"):
            c.status("other")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
