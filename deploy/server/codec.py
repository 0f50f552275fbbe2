"""Decode TF Serving REST predict bodies into model inputs, with precise errors.

Accepted (one named input, ``images`` for kvision models; any name for foreign ones)::

    {"instances": [IMAGE, ...]}                      row format -> {"predictions": [...]}
    {"instances": [{"images": IMAGE}, ...]}
    {"inputs": [IMAGE, ...]} or {"inputs": {"images": [IMAGE, ...]}}
                                                     columnar -> {"outputs": [...]}
    IMAGE = nested lists [H][W][C] of numbers in model scale (for a model whose integer input
            has no quantization parameters, contract input_domain "uint8": whole pixel values
            0..255; anything else is a 400, never rounded), or {"b64": "<base64 PNG/JPEG>"}
            (decoded by kvision.preprocess, the path training and predict use: EXIF orientation,
            mode conversion with 16-bit high byte, Pillow bilinear resize to the contract's
            size, then normalized with its scale/offset)
    optional "signature_name": must be the served signature (default "serving_default")

Anything else raises :class:`BadRequest` whose message names the field, what was received and
what is expected; the server turns it into HTTP 400 ``{"error": ...}``.

Example:
    >>> x, columnar = decode_predict(b'{"instances": [[[[0.0]]]]}', spec, contract)
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
    """``(float32 inputs [N, H, W, C], columnar)`` from a predict request body.

    Args:
        body: the raw request body.
        spec: the model's input ``TensorInfo`` (its name and shape are the contract).
        contract: ``InputContract`` used to decode ``b64`` images.
        signature: the only accepted ``signature_name``.
        max_instances: largest accepted batch (default 1024).
    """
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
    name = spec.name
    if "instances" in doc:
        items = doc["instances"]
        if not isinstance(items, list) or not items:
            raise BadRequest("'instances' should be a non-empty list of images")
        _check_count(len(items), max_instances)
        rows = [
            _instance(item, f"instances[{i}]", name, spec, contract) for i, item in enumerate(items)
        ]
        return np.stack(rows), False
    value = doc["inputs"]
    if isinstance(value, dict):
        if set(value) != {name}:
            raise BadRequest(
                f"'inputs' should name the model's one input {name!r}. Received keys: "
                f"{sorted(value)}"
            )
        value = value[name]
    if isinstance(value, list) and value and all(_is_b64(v) for v in value):
        _check_count(len(value), max_instances)
        return np.stack(
            [_b64_image(v, f"inputs[{i}]", contract) for i, v in enumerate(value)]
        ), True
    x = _numbers(value, "inputs")
    want = tuple(spec.shape[1:])
    if x.ndim != len(want) + 1 or not _shape_ok(x.shape[1:], want):
        raise BadRequest(
            f"'inputs' has shape {list(x.shape)}; expected [N, {_dims(want)}] (a batch of "
            "images in model scale)"
        )
    _check_count(len(x), max_instances)
    _check_domain(x, "inputs", contract)
    return x, True


def _instance(item, where: str, name: str, spec, contract) -> np.ndarray:
    if isinstance(item, dict) and not _is_b64(item):
        if set(item) != {name}:
            raise BadRequest(
                f"{where} should be an image or {{{name!r}: image}}. Received keys: {sorted(item)}"
            )
        item = item[name]
    if _is_b64(item):
        return _b64_image(item, where, contract)
    x = _numbers(item, where)
    want = tuple(spec.shape[1:])
    if x.shape != want and not _shape_ok(x.shape, want):
        raise BadRequest(
            f"{where} has shape {list(x.shape)}; expected [{_dims(want)}] (one image in model "
            'scale, or {"b64": ...})'
        )
    _check_domain(x, where, contract)
    return x


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
        pixels = decode_pixels(raw, contract.channels, size, source=f"{where}.b64")
    except ImageError as exc:
        raise BadRequest(
            f"{where}.b64 is not a decodable image (PNG, JPEG, BMP ...): {exc.reason}"
        ) from None
    return contract.normalize(pixels).astype(np.float32)


def _check_domain(x: np.ndarray, where: str, contract) -> None:
    """A 400 when numbers sent for a raw integer input are not whole pixel values."""
    try:
        contract.check_values(x, f"{where}: the model")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _check_count(n: int, limit: int) -> None:
    if n > limit:
        raise BadRequest(f"Too many instances: {n} > {limit} per request; split the batch")


def _shape_ok(got, want) -> bool:
    return len(got) == len(want) and all(
        w is None or w == g for w, g in zip(want, got, strict=True)
    )


def _dims(shape) -> str:
    return ", ".join("?" if d is None else str(d) for d in shape)
