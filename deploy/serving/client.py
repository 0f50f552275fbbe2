"""A TF Serving client: REST (standard library ``urllib``) and gRPC (tensorflow-serving-api).

The REST half also talks to ``kvision serve``, which implements the same API.

Example:
    >>> c = ServingClient("127.0.0.1", rest_port=8501, grpc_port=8500)
    >>> c.status("classifier")["model_version_status"][0]["state"]
    'AVAILABLE'
    >>> probs = c.predict("classifier", x[:4])             # REST, row format
    >>> probs = c.grpc_predict("classifier", x[:4])        # gRPC PredictionService.Predict
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np

from kvision.errors import MissingDependencyError

_GRPC_HINT = "pip install tensorflow-serving-api==2.21.0"


class ServingError(RuntimeError):
    """The server answered with an error; ``status`` is the HTTP / gRPC code."""

    def __init__(self, status, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ServingClient:
    """Talk to TF Serving (or ``kvision serve``) on ``host``.

    Args:
        host: server host (default ``"127.0.0.1"``).
        rest_port: REST port (default 8501).
        grpc_port: gRPC port (default 8500).
        timeout: seconds per request (default 10).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        rest_port: int = 8501,
        grpc_port: int = 8500,
        timeout: float = 10.0,
    ):
        self.host, self.rest_port, self.grpc_port, self.timeout = (
            host,
            rest_port,
            grpc_port,
            timeout,
        )
        self._channel = None

    # -- REST -----------------------------------------------------------------------------
    def url(self, model: str, version=None, label=None, verb: str = "") -> str:
        """``http://host:port/v1/models/<model>[/versions/<v>|/labels/<l>][:verb]``."""
        if version is not None and label is not None:
            raise ValueError("Pass `version` or `label`, not both.")
        path = f"/v1/models/{model}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{label}"
        return f"http://{self.host}:{self.rest_port}{path}{verb}"

    def status(self, model: str, version=None, label=None) -> dict:
        """``GET /v1/models/<model>``: ``{"model_version_status": [...]}``."""
        return self._request("GET", self.url(model, version, label))

    def metadata(self, model: str, version=None, label=None) -> dict:
        """``GET .../metadata``: the signature definitions."""
        return self._request("GET", self.url(model, version, label, "/metadata"))

    def predict(
        self,
        model: str,
        x=None,
        version=None,
        label=None,
        signature: str | None = None,
        columnar: bool = False,
        body: dict | None = None,
    ):
        """``POST ...:predict``; returns the predictions as a NumPy array.

        Args:
            model: model name.
            x: model inputs (array-like); sent as ``instances`` (or ``inputs`` if ``columnar``).
            version, label: pick a version (default: the server's default).
            signature: ``signature_name`` (default: the server's default).
            columnar: send ``{"inputs": ...}`` instead of ``{"instances": ...}``.
            body: send this JSON body as is (``x`` is ignored); the raw reply is returned.
        """
        if body is None:
            key = "inputs" if columnar else "instances"
            body = {key: np.asarray(x).tolist()}
            if signature:
                body["signature_name"] = signature
            reply = self._request("POST", self.url(model, version, label, ":predict"), body)
            return np.asarray(reply["outputs" if columnar else "predictions"], dtype=np.float32)
        return self._request("POST", self.url(model, version, label, ":predict"), body)

    def predict_outputs(self, model: str, x, version=None, label=None) -> dict:
        """``:predict`` in the columnar format: every output by name as a float32 array
        ``[N, ...]`` (what a model with several outputs, e.g. a detector, needs)."""
        reply = self._request(
            "POST", self.url(model, version, label, ":predict"), {"inputs": np.asarray(x).tolist()}
        )
        outputs = reply["outputs"]
        if not isinstance(outputs, dict):
            outputs = {"probabilities": outputs}
        return {k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}

    def decode(self, model: str, x, contract=None, image_sizes=None, version=None, label=None):
        """Decoded predictions, decoded here, outside the server and the graph: ``:predict``'s
        raw outputs through the task of ``contract`` (default: the contract the server reports
        in ``/metadata``), e.g. a detector's boxes after score threshold and NMS.

        Args:
            model: model name.
            x: model inputs ``[N, H, W, C]`` in model scale.
            contract: an ``InputContract`` (or its dict); default: the server's.
            image_sizes: ``(width, height)`` of each original image (or one for all) to express
                boxes in; default: the model input's size.
            version, label: pick a version.

        Returns:
            One decoded prediction per input (detection: ``Detections`` with ``boxes``,
            ``scores``, ``classes``); ``task.prediction_json`` makes them JSON.

        Raises:
            ServingError: an HTTP error, or no ``contract`` given and none in ``/metadata``
                (TF Serving itself has none: pass the artifact's ``contract.json``).
        """
        from kvision.models import InputContract
        from kvision.tasks import get_task

        if contract is None:
            contract = (self.metadata(model, version, label).get("kvision") or {}).get("contract")
            if contract is None:  # TF Serving itself, or a model served without a contract
                raise ServingError(None, f"Model {model!r} reports no contract: pass `contract`")
        if isinstance(contract, dict):
            contract = InputContract.from_dict(contract)
        task = get_task(contract.task)
        outputs = self.predict_outputs(model, x, version, label)
        if image_sizes is None:
            return task.decode(outputs, contract)
        return task.decode(outputs, contract, image_sizes)

    def _request(self, method: str, url: str, body=None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text
            raise ServingError(exc.code, message) from None

    # -- gRPC -----------------------------------------------------------------------------
    def _grpc(self):
        try:
            import grpc
            from tensorflow_serving.apis import (
                get_model_metadata_pb2,
                get_model_status_pb2,
                model_pb2,
                model_service_pb2_grpc,
                predict_pb2,
                prediction_service_pb2_grpc,
            )
        except ImportError as exc:
            raise MissingDependencyError(
                f"The gRPC client needs tensorflow-serving-api: {_GRPC_HINT}"
            ) from exc
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}")
        return {
            "grpc": grpc,
            "predict_pb2": predict_pb2,
            "metadata_pb2": get_model_metadata_pb2,
            "status_pb2": get_model_status_pb2,
            "model_pb2": model_pb2,
            "prediction": prediction_service_pb2_grpc.PredictionServiceStub(self._channel),
            "model": model_service_pb2_grpc.ModelServiceStub(self._channel),
        }

    def _spec(self, g, model, version, label, signature=None):
        spec = g["model_pb2"].ModelSpec(name=model)
        if signature:
            spec.signature_name = signature
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        return spec

    def _call(self, g, fn, request):
        try:
            return fn(request, timeout=self.timeout)
        except g["grpc"].RpcError as exc:
            raise ServingError(exc.code().name, exc.details()) from None

    def grpc_predict(
        self,
        model: str,
        x,
        input_name: str = "images",
        output_name: str = "probabilities",
        version=None,
        label=None,
        signature: str = "serving_default",
    ) -> np.ndarray:
        """``PredictionService.Predict`` with one float32 input tensor."""
        import tensorflow as tf

        g = self._grpc()
        request = g["predict_pb2"].PredictRequest(
            model_spec=self._spec(g, model, version, label, signature)
        )
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.asarray(x, dtype=np.float32)))
        reply = self._call(g, g["prediction"].Predict, request)
        if output_name not in reply.outputs:
            raise ServingError("OUTPUT", f"no output {output_name!r}; got {list(reply.outputs)}")
        return tf.make_ndarray(reply.outputs[output_name]).astype(np.float32)

    def grpc_metadata(self, model: str, version=None, label=None) -> dict:
        """``PredictionService.GetModelMetadata`` (signature_def) as a dict."""
        from google.protobuf import json_format
        from tensorflow.core.protobuf import meta_graph_pb2

        g = self._grpc()
        request = g["metadata_pb2"].GetModelMetadataRequest(
            model_spec=self._spec(g, model, version, label), metadata_field=["signature_def"]
        )
        reply = self._call(g, g["prediction"].GetModelMetadata, request)
        defs = meta_graph_pb2.SignatureDefMap()
        reply.metadata["signature_def"].Unpack(defs)
        return {
            "model_spec": json_format.MessageToDict(reply.model_spec),
            "signature_def": json_format.MessageToDict(defs),
        }

    def grpc_status(self, model: str, version=None, label=None) -> dict:
        """``ModelService.GetModelStatus`` as a dict."""
        from google.protobuf import json_format

        g = self._grpc()
        request = g["status_pb2"].GetModelStatusRequest(
            model_spec=self._spec(g, model, version, label)
        )
        return json_format.MessageToDict(self._call(g, g["model"].GetModelStatus, request))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
