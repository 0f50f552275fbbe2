"""``kvision serve``'s ASGI app: TF Serving's REST API on starlette.

Routes (as TF Serving's, plus health and metrics)::

    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata   signature_def (+ "kvision" extras)
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict    {"instances"|"inputs": ...}
                              -> {"predictions"|"outputs": ...}, every named output
    POST /v1/models/{m}[...]:decode     the same request -> {"predictions": [one decoded
                              prediction per instance]} (kvision's extension, below)
    POST /v1/models/{m}[...]:search     the same request, plus "k" (default 5) -> {"results":
                              [[{"id", "score", "payload"}, ...] per instance]}: the nearest
                              vectors of the index attached to an embedding model
                              (``kvision serve --index NAME=DIR``; cosine, best first)
    GET  /healthz                                             {"status": "ok", "models": {...}}
    GET  /metrics                                             Prometheus text format

Every failure is ``{"error": "..."}`` with a 4xx code for client mistakes (400 bad body or
shape, 404 unknown model / version / label / route, 405 wrong method, 413 body too large) and
500 for a runtime failure; the process never dies on a request. Inference runs in a worker
thread through each version's runtime pool (never two threads on one interpreter), optionally
through a :class:`DynamicBatcher`. A model with several inputs takes them by name and one with
several outputs answers them all by name (``deploy.server.codec``).

``:decode`` (not in TF Serving) runs ``:predict`` and decodes the raw outputs outside the graph
with the task named by the model's contract (``kvision.tasks``), exactly as ``kvision predict``
and the benchmark do: a detector answers ``{"predictions": [{"detections": [{"label",
"class_index", "score", "box": [x_min, y_min, x_max, y_max]}, ...]}, ...]}`` after the score
threshold and per-class NMS of its contract, boxes in pixels of the model input (scale by the
original image's width / input width to map them back: a stretch resize); a classifier answers
``{"label", "class", "top_k"}`` per instance. A model without a task contract gets a 400.

Example:
    >>> store = ModelStore(); store.add("fashion", "tflite_models/classifier_float32.tflite")
    >>> app = create_app(store)
    >>> from starlette.testclient import TestClient
    >>> TestClient(app).get("/v1/models/fashion").json()["model_version_status"][0]["state"]
    'AVAILABLE'
"""

from __future__ import annotations

import re
import time

from deploy.server.codec import (
    MAX_INSTANCES,
    SIGNATURE,
    BadRequest,
    decode_outputs,
    decode_request,
    encode_predict,
)
from deploy.server.metrics import Metrics
from deploy.server.store import ModelStore, NotFound

DEFAULT_MAX_BODY = 16 * 1024 * 1024
_ROUTE = re.compile(
    r"^(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:[A-Za-z]+)?$"
)
_DTYPES = {"float32": "DT_FLOAT", "float16": "DT_HALF", "int8": "DT_INT8", "uint8": "DT_UINT8"}


class HTTPError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def create_app(
    store: ModelStore,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_instances: int = MAX_INSTANCES,
    batching: dict | None = None,
):
    """Build the starlette app serving ``store``.

    Args:
        store: the loaded models (:class:`ModelStore`).
        max_body_bytes: largest accepted request body (default 16 MiB) -> 413 beyond.
        max_instances: largest batch per request (default 1024) -> 400 beyond.
        batching: ``{"max_batch_size": 32, "timeout_ms": 2}`` to merge concurrent requests
            (default ``None``: each request runs on its own).
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    metrics = Metrics()
    batchers = {}
    if batching:
        from deploy.server.batching import DynamicBatcher

        for name, versions in store.models.items():
            for v, served in versions.items():
                batchers[(name, v)] = DynamicBatcher(
                    served.run,
                    int(batching.get("max_batch_size", 32)),
                    float(batching.get("timeout_ms", 2.0)),
                    on_batch=lambda n, name=name: metrics.observe_batch(name, n),
                )

    async def models_endpoint(request):
        start = time.perf_counter()
        metrics.add_inflight(1)
        name = version = None
        endpoint, code = "status", 200
        try:
            match = _ROUTE.match(request.path_params["rest"])
            if not match:
                raise HTTPError(404, f"Malformed request: {request.method} {request.url.path}")
            name, suffix = match["name"], match["suffix"] or ""
            endpoint = {"": "status", "/metadata": "metadata"}.get(suffix, suffix.lstrip(":"))
            if endpoint not in ("status", "metadata", "predict", "decode", "search"):
                raise HTTPError(
                    404 if endpoint not in ("classify", "regress") else 400,
                    f"Unsupported API {suffix!r}: kvision serve implements :predict, :decode, "
                    ":search, /metadata and model status",
                )
            want = "POST" if endpoint in ("predict", "decode", "search") else "GET"
            if request.method != want:
                raise HTTPError(405, f"{endpoint} expects {want}. Received: {request.method}")
            version = _version(match["version"])
            if endpoint == "status":
                return JSONResponse(_status(store, name, version, match["label"]))
            served = store.resolve(name, version, match["label"])
            version = served.version
            if endpoint == "metadata":
                return JSONResponse(_metadata(served))
            body = await _read_body(request, max_body_bytes)
            if endpoint == "search":
                index = store.indexes.get(served.model)
                if index is None:
                    raise HTTPError(
                        404, f"Model {served.model!r} has no index to search: start kvision "
                        f"serve with --index {served.model}=DIR (kvision index build)",
                    )  # fmt: skip
                body, k = _search_k(body)
            feeds, columnar = decode_request(
                body, served.inputs, served.contract, SIGNATURE, max_instances
            )
            n = len(next(iter(feeds.values())))
            batcher = batchers.get((served.model, served.version))
            if batcher is not None:
                y = await batcher.submit(feeds)
            else:
                from starlette.concurrency import run_in_threadpool

                metrics.observe_batch(served.model, n)
                y = await run_in_threadpool(served.run, feeds)
            metrics.observe_predict(served.model, served.version, n)
            if endpoint == "decode":
                return JSONResponse({"predictions": decode_outputs(y, served.contract)})
            if endpoint == "search":
                return JSONResponse({"results": _search(index, y, k)})
            names = [o.name for o in served.outputs]
            return JSONResponse(encode_predict(y, names, n, columnar))
        except HTTPError as exc:
            code, message = exc.code, exc.message
        except BadRequest as exc:
            code, message = 400, str(exc)
        except NotFound as exc:
            code, message = 404, str(exc)
        except Exception as exc:  # a runtime failure must not take the server down
            code = 500
            message = f"Internal error running the model: {type(exc).__name__}: {exc}"
        finally:
            metrics.add_inflight(-1)
            metrics.observe_request(name, version, endpoint, code, time.perf_counter() - start)
        return JSONResponse({"error": message}, status_code=code)

    async def health(request):
        models = {name: sorted(versions) for name, versions in store.models.items()}
        return JSONResponse({"status": "ok", "models": models})

    async def metrics_endpoint(request):
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def not_found(request, exc):
        code = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", "") or "Not Found"
        if code == 404:
            detail = f"No such route: {request.method} {request.url.path}"
        return JSONResponse({"error": detail}, status_code=code)

    routes = [
        Route("/v1/models/{rest:path}", models_endpoint, methods=["GET", "POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.store = store
    app.state.metrics = metrics
    return app


def _search_k(body: bytes) -> tuple[bytes, int]:
    """The request body without ``k``, and ``k`` (default 5, 1..1000)."""
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        return body, 5  # decode_request names what is wrong with it
    if not isinstance(doc, dict) or "k" not in doc:
        return body, 5
    k = doc.pop("k")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise BadRequest(f"'k' should be an integer in 1..1000. Received: {k!r}")
    return json.dumps(doc).encode(), k


def _search(index, outputs: dict, k: int) -> list:
    from kvision.index.images import nearest

    if "embedding" not in outputs:
        raise BadRequest(f"The model has no 'embedding' output to search with: {sorted(outputs)}")
    return [[{"id": i, "score": s, "payload": p} for i, s, p in hits]
            for hits in nearest(index, outputs["embedding"], k)]  # fmt: skip


def _version(text):
    if text is None:
        return None
    if not text.isdigit():
        raise HTTPError(
            400, f"Version should be a non-negative integer. Received: version={text!r}"
        )
    return int(text)


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPError(400, f"Invalid Content-Length header: {declared!r}")
        if int(declared) > limit:
            raise HTTPError(413, f"Request body is {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise HTTPError(400, 'Empty body: send JSON like {"instances": [...]}')
    return body


def _status(store: ModelStore, name: str, version, label) -> dict:
    if version is not None or label is not None:
        served = [store.resolve(name, version, label)]
    else:
        store.resolve(name)
        served = [store.models[name][v] for v in sorted(store.models[name], reverse=True)]
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for s in served
        ]
    }


def _tensor(info, dtype=None) -> dict:
    dims = [{"size": str(-1 if d is None else int(d)), "name": ""} for d in info.shape]
    return {
        "dtype": dtype or _DTYPES.get(info.dtype, "DT_FLOAT"),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": info.name,
    }


def _rest_dtype(served, info) -> str:
    """The dtype a REST client sends for input ``info``: ``DT_FLOAT`` for model-scale numbers,
    the integer type for a raw integer input (no quantization parameters)."""
    from kvision.models.contract import input_domain

    if served.contract is not None:
        raw = served.contract.input_domain if served.contract.raw_input else None
    else:
        try:
            domain = input_domain(info.dtype, info.quantized)
        except ValueError:
            return _DTYPES.get(info.dtype, "DT_STRING")
        raw = None if domain == "float" else domain
    return _DTYPES.get(raw, "DT_INT32") if raw else "DT_FLOAT"


def _metadata(served) -> dict:
    if served.signature and SIGNATURE in served.signature:
        sig = served.signature[SIGNATURE]

        def conv(t):
            shape = t["shape"]
            return {
                "dtype": t["dtype"],
                "tensor_shape": {
                    "dim": [{"size": str(d), "name": ""} for d in (shape or [])],
                    "unknown_rank": shape is None,
                },
                "name": t["name"],
            }

        sig_def = {
            "inputs": {k: conv(v) for k, v in sig["inputs"].items()},
            "outputs": {k: conv(v) for k, v in sig["outputs"].items()},
            "method_name": sig["method_name"],
        }
    else:  # a .tflite / .keras: the REST inputs are numbers in model scale, quantized inside;
        # raw integer pixels (whole numbers 0..255) for an integer input without quantization
        sig_def = {
            "inputs": {i.name: _tensor(i, _rest_dtype(served, i)) for i in served.inputs},
            "outputs": {o.name: _tensor(o, "DT_FLOAT") for o in served.outputs},
            "method_name": "tensorflow/serving/predict",
        }
    return {
        "model_spec": {"name": served.model, "signature_name": "", "version": str(served.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: sig_def}}},
        "kvision": {
            "format": served.format,
            "runtime": served.runtime.describe(),
            "artifact_input": served.input_spec.to_dict(),
            "artifact_inputs": [i.to_dict() for i in served.inputs],
            "artifact_outputs": [o.to_dict() for o in served.outputs],
            "contract": served.contract.to_dict() if served.contract is not None else None,
            "contract_source": served.contract_source,
            "labels": served.labels,
        },
    }
