"""Decode TF Serving REST predict bodies into model inputs (with precise errors), and encode
the outputs the way TF Serving answers.

Accepted for a model with one input (``images`` for kvision models; any name for foreign ones)::

    {"instances": [IMAGE, ...]}                      row format -> {"predictions": [...]}
    {"instances": [{"images": IMAGE}, ...]}
    {"inputs": [IMAGE, ...]} or {"inputs": {"images": [IMAGE, ...]}}
                                                     columnar -> {"outputs": ...}
    IMAGE = nested lists [H][W][C] of numbers in model scale (for a model whose integer input
            has no quantization parameters, contract input_domain "uint8": whole pixel values
            0..255; anything else is a 400, never rounded), or {"b64": "<base64 PNG/JPEG>"}
            (decoded by kvision.preprocess, the path training and predict use: EXIF orientation,
            mode conversion with 16-bit high byte, Pillow bilinear resize to the contract's
            size, then normalized with its scale/offset)
    optional "signature_name": must be the served signature (default "serving_default")

A model with several inputs takes them by name, as TF Serving does::

    {"instances": [{"image": ROW, "meta": ROW}, ...]}
    {"inputs": {"image": [ROW, ...], "meta": [ROW, ...]}}

each value a nested list of numbers in its tensor's domain (whole numbers in range for an
integer input without quantization parameters).

Anything else raises :class:`BadRequest` whose message names the field, what was received and
what is expected; the server turns it into HTTP 400 ``{"error": ...}``.

Example:
    >>> x, columnar = decode_predict(b'{"instances": [[[[0.0]]]]}', spec, contract)
    >>> feeds, columnar = decode_request(body, served.inputs, served.contract)
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

MAX_INSTANCES = 1024
SIGNATURE = "serving_default"


class BadRequest(ValueError):
    """A malformed request; the message is returned to the client as ``{"error": ...}``."""


def decode_predict(
    body: bytes,
    spec,
    contract,
    signature: str = SIGNATURE,
    max_instances: int = MAX_INSTANCES,
) -> tuple[np.ndarray, bool]:
    """``(float32 inputs [N, H, W, C], columnar)`` from a predict request body (one input).

    Args:
        body: the raw request body.
        spec: the model's input ``TensorInfo`` (its name and shape are the contract).
        contract: ``InputContract`` used to decode ``b64`` images.
        signature: the only accepted ``signature_name``.
        max_instances: largest accepted batch (default 1024).
    """
    feeds, columnar = decode_request(body, [spec], contract, signature, max_instances)
    return feeds[spec.name], columnar


def decode_request(
    body: bytes,
    inputs,
    contract=None,
    signature: str = SIGNATURE,
    max_instances: int = MAX_INSTANCES,
) -> tuple[dict[str, np.ndarray], bool]:
    """``({input name: array [N, ...]}, columnar)`` from a predict request body.

    Args:
        body: the raw request body.
        inputs: the model's input ``TensorInfo`` list (names, shapes, dtypes).
        contract: ``InputContract`` of a one-image-input model (decodes ``b64`` images and
            states the input's domain), or ``None`` (numbers only, each in its tensor's domain;
            default).
        signature: the only accepted ``signature_name`` (default ``"serving_default"``).
        max_instances: largest accepted batch (default 1024).

    Raises:
        BadRequest: a malformed body; the message names the field, what was received and what
            is expected.

    Example:
        >>> feeds, columnar = decode_request(b'{"inputs": {"a": [[1]], "b": [[2]]}}', inputs)
    """
    doc = _parse(body, signature)
    inputs = list(inputs)
    names = [i.name for i in inputs]
    codec = _Codec(inputs, contract)
    if "instances" in doc:
        items = doc["instances"]
        if not isinstance(items, list) or not items:
            raise BadRequest("'instances' should be a non-empty list of images")
        _check_count(len(items), max_instances)
        rows = [codec.instance(item, f"instances[{i}]") for i, item in enumerate(items)]
        return {n: np.stack([r[n] for r in rows]) for n in names}, False
    value = doc["inputs"]
    if len(inputs) == 1:
        if isinstance(value, dict):
            if set(value) != set(names):
                raise BadRequest(
                    f"'inputs' should name the model's one input {names[0]!r}. Received keys: "
                    f"{sorted(value)}"
                )
            value = value[names[0]]
        return {names[0]: codec.column(inputs[0], value, "inputs", max_instances)}, True
    if not isinstance(value, dict) or set(value) != set(names):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise BadRequest(
            f"'inputs' should be an object naming the model's inputs {sorted(names)}. "
            f"Received: {got}"
        )
    feeds = {
        i.name: codec.column(i, value[i.name], f"inputs[{i.name!r}]", max_instances) for i in inputs
    }
    rows = {k: len(v) for k, v in feeds.items()}
    if len(set(rows.values())) > 1:
        raise BadRequest(f"Every input in 'inputs' needs the same number of rows. Received: {rows}")
    return feeds, True


def encode_predict(outputs: dict, names, n: int, columnar: bool) -> dict:
    """The response body for ``outputs`` (``{name: array [n, ...]}``), as TF Serving writes it.

    One output: ``{"predictions": [...]}`` (row format) or ``{"outputs": [...]}`` (columnar).
    Several: ``{"predictions": [{name: value, ...}, ...]}`` (one object per instance) or
    ``{"outputs": {name: [...], ...}}``.

    Args:
        outputs: every output by name.
        names: the output names, in the model's order.
        n: the instances in the request.
        columnar: the request used ``inputs`` (columnar) rather than ``instances``.

    Raises:
        BadRequest: the row format asked of a model with an output that has no row per
            instance (TF Serving refuses it too); the columnar format works.
    """
    names = list(names)
    if len(names) == 1:
        return {"outputs" if columnar else "predictions": np.asarray(outputs[names[0]]).tolist()}
    if columnar:
        return {"outputs": {k: np.asarray(outputs[k]).tolist() for k in names}}
    arrays = {k: np.asarray(outputs[k]) for k in names}
    for k, v in arrays.items():
        if v.ndim == 0 or len(v) != n:
            raise BadRequest(
                f"Output {k!r} has shape {list(v.shape)}, not one row per instance ({n}): the "
                "row format ('instances') cannot split it; send 'inputs' (columnar) instead"
            )
    return {"predictions": [{k: v[i].tolist() for k, v in arrays.items()} for i in range(n)]}


def decode_outputs(outputs: dict, contract) -> list[dict]:
    """The ``:decode`` answer: the raw named outputs of a batch decoded by the contract's task
    (``Task.decode`` then ``Task.prediction_json``), one JSON object per instance.

    Raises:
        BadRequest: the model has no contract naming a task (decode with ``:predict`` and your
            own code, or export the model with kvision).
    """
    from kvision.tasks import get_task

    if contract is None or not getattr(contract, "task", None):
        raise BadRequest(
            ":decode needs the model's task, read from its input contract, and this model has "
            "none; use :predict for the raw outputs"
        )
    from kvision.errors import InputValueError

    task = get_task(contract.task)
    try:
        task.check_outputs(outputs, "the model's outputs")
    except InputValueError as exc:  # a model whose outputs are not its task's: the caller's 400
        raise BadRequest(f":decode cannot decode this model: {exc}") from None
    return [task.prediction_json(p, contract) for p in task.decode(outputs, contract)]


def _parse(body: bytes, signature: str) -> dict:
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"Malformed JSON: the body is not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(doc, dict):
        raise BadRequest(
            'The body should be a JSON object like {"instances": [...]}. '
            f"Received: a JSON {type(doc).__name__}"
        )
    unknown = sorted(set(doc) - {"instances", "inputs", "signature_name"})
    if unknown:
        raise BadRequest(
            f"Unknown field(s) {unknown}; allowed: 'instances' or 'inputs', and 'signature_name'"
        )
    sig = doc.get("signature_name", signature)
    if sig != signature:
        raise BadRequest(
            f"Serving signature name: {sig!r} not found in signature def; available: "
            f"[{signature!r}]"
        )
    if ("instances" in doc) == ("inputs" in doc):
        raise BadRequest("The request should have exactly one of 'instances' or 'inputs'")
    return doc


class _Codec:
    """Decodes one model's instances and columns; ``contract`` applies to a one-input model."""

    def __init__(self, inputs, contract):
        self.inputs = inputs
        self.contract = contract if len(inputs) == 1 else None

    def instance(self, item, where: str) -> dict:
        names = [i.name for i in self.inputs]
        if len(self.inputs) == 1:
            (info,) = self.inputs
            if isinstance(item, dict) and not _is_b64(item):
                if set(item) != {info.name}:
                    raise BadRequest(
                        f"{where} should be an image or {{{info.name!r}: image}}. Received keys: "
                        f"{sorted(item)}"
                    )
                item = item[info.name]
            return {info.name: self.value(info, item, where)}
        if not isinstance(item, dict) or set(item) != set(names):
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise BadRequest(
                f"{where} should be an object naming the model's inputs {sorted(names)}. "
                f"Received: {got}"
            )
        return {i.name: self.value(i, item[i.name], f"{where}[{i.name!r}]") for i in self.inputs}

    def value(self, info, item, where: str) -> np.ndarray:
        if _is_b64(item):
            return _b64_image(item, where, self._image_contract(info, where))
        x = _numbers(item, where)
        want = tuple(info.shape[1:])
        if not _shape_ok(x.shape, want):
            what = 'one image in model scale, or {"b64": ...}' if self.contract else "one row"
            raise BadRequest(
                f"{where} has shape {list(x.shape)}; expected [{_dims(want)}] ({what})"
            )
        self._check_domain(x, where, info)
        return x

    def column(self, info, value, where: str, max_instances: int) -> np.ndarray:
        if isinstance(value, list) and value and all(_is_b64(v) for v in value):
            _check_count(len(value), max_instances)
            contract = self._image_contract(info, where)
            return np.stack([_b64_image(v, f"{where}[{i}]", contract) for i, v in enumerate(value)])
        x = _numbers(value, where)
        want = tuple(info.shape[1:])
        if x.ndim != len(want) + 1 or not _shape_ok(x.shape[1:], want):
            what = "a batch of images in model scale" if self.contract else "a batch of rows"
            label = f"'{where}'" if where == "inputs" else where
            raise BadRequest(
                f"{label} has shape {list(x.shape)}; expected [N, {_dims(want)}] ({what})"
            )
        _check_count(len(x), max_instances)
        self._check_domain(x, where, info)
        return x

    def _image_contract(self, info, where: str):
        if self.contract is None:
            raise BadRequest(
                f"{where}: b64 images need a model with one image input; input {info.name!r} "
                f"is {info.dtype} {list(info.shape)}: send numbers"
            )
        return self.contract

    def _check_domain(self, x: np.ndarray, where: str, info) -> None:
        """A 400 when numbers sent for a raw integer input are not whole values in range."""
        from kvision.models.contract import input_domain, to_input_tensor

        try:
            if self.contract is not None:
                self.contract.check_values(x, f"{where}: the model")
                return
            try:
                domain = input_domain(info.dtype, info.quantized)
            except ValueError:
                return
            if domain != "float":
                to_input_tensor(x, domain, where=f"{where}: input {info.name!r}")
        except ValueError as exc:
            raise BadRequest(str(exc)) from None


def _numbers(value, where: str) -> np.ndarray:
    if not isinstance(value, list):
        raise BadRequest(
            f"{where} should be a nested list of numbers. Received: {type(value).__name__}"
        )
    try:
        x = np.asarray(value)
    except ValueError:
        raise BadRequest(f"{where} is ragged: every row should have the same length") from None
    if x.dtype == object:
        raise BadRequest(f"{where} is ragged or mixes lists and numbers")
    if x.dtype.kind not in "iuf":
        kind = {"b": "booleans", "U": "strings", "S": "bytes"}.get(x.dtype.kind, str(x.dtype))
        raise BadRequest(f"{where} should hold numbers (DT_FLOAT). Received: {kind}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise BadRequest(f"{where} contains NaN, Infinity or a number too large for float32")
    return x


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _b64_image(value, where: str, contract) -> np.ndarray:
    from kvision.preprocess import ImageError, decode_pixels

    data = value["b64"]
    if not isinstance(data, str):
        raise BadRequest(f"{where}.b64 should be a base64 string. Received: {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{where}.b64 is not valid base64: {exc}") from None
    size = (contract.height, contract.width)
    try:
        pixels = decode_pixels(raw, contract.channels, size, source=f"{where}.b64",
                               resize=contract.resize)  # fmt: skip
    except ImageError as exc:
        raise BadRequest(
            f"{where}.b64 is not a decodable image (PNG, JPEG, BMP ...): {exc.reason}"
        ) from None
    return contract.normalize(pixels).astype(np.float32)


def _check_count(n: int, limit: int) -> None:
    if n > limit:
        raise BadRequest(f"Too many instances: {n} > {limit} per request; split the batch")


def _shape_ok(got, want) -> bool:
    return len(got) == len(want) and all(
        w is None or w == g for w, g in zip(want, got, strict=True)
    )


def _dims(shape) -> str:
    return ", ".join("?" if d is None else str(d) for d in shape)
