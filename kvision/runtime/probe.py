"""Deterministic probe inputs for an artifact, each in its own input tensor's domain.

Used where there is no data to feed (a benchmark without a dataset, a conversion without
calibration images): latency and load checks still run, never on values the artifact would
not get in deployment.

Example:
    >>> feeds = probe_feeds(rt.inputs, n=4)          # {"image": ..., "mask": ...}
    >>> rt.run(feeds)["scores"].shape
    (4, 3)
"""

from __future__ import annotations

import numpy as np

from kvision.errors import InputValueError


def probe_feeds(inputs, n: int = 16, contract=None, seed: int = 0) -> dict[str, np.ndarray]:
    """``{input name: array [n, ...]}`` of seeded noise that each input accepts.

    * one input with an ``InputContract``: pixel noise 0..255 normalized by the contract;
    * a float input: uniform in [0, 1);
    * a quantized integer input: floats uniform over the range its scale / zero point can hold;
    * an integer input without quantization: whole numbers in ``[max(min, 0), min(max, 255)]``
      (raw pixels for ``uint8``);
    * a bool input: random booleans.

    Args:
        inputs: the artifact's input ``TensorInfo`` list.
        n: rows (default 16).
        contract: the artifact's ``InputContract`` for a one-image-input artifact (default
            ``None``: per-tensor noise).
        seed: random seed (default 0).

    Raises:
        InputValueError: an input with free non-batch dimensions, or of a non-numeric dtype
            (the message names it): no probe can be made for it.
    """
    inputs = list(inputs)
    rng = np.random.default_rng(seed)
    if contract is not None and len(inputs) == 1:
        pixels = rng.integers(0, 256, size=(n, *contract.shape), dtype=np.uint8)
        return {inputs[0].name: contract.normalize(pixels)}
    return {info.name: _noise(info, n, rng) for info in inputs}


def _noise(info, n: int, rng) -> np.ndarray:
    dims = tuple(info.shape[1:])
    if any(d is None for d in dims):
        raise InputValueError(
            f"Input {info.name!r} has free dimensions {list(info.shape)}: no probe input can be "
            "made for it; feed real data (or save a contract.json with the image size)."
        )
    shape = (n, *dims)
    try:
        dtype = np.dtype("float32" if info.dtype == "bfloat16" else info.dtype)
    except TypeError:
        dtype = np.dtype(object)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32)
    if dtype.kind in "iu":
        q = np.iinfo(dtype)
        if info.scale:
            lo = (q.min - info.zero_point) * info.scale
            hi = (q.max - info.zero_point) * info.scale
            return rng.uniform(lo, hi, shape).astype(np.float32)
        return rng.integers(max(q.min, 0), min(q.max, 255) + 1, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    raise InputValueError(
        f"Input {info.name!r} is {info.dtype}: no probe input can be made for it; feed real data."
    )
