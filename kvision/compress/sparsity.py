"""Measure what compression left in the weights: zeros and distinct values, in Keras and in TFLite.

Sparsity and clustering only matter if they survive into the deployed file, so besides the Keras
kernels (:func:`keras_weight_stats`) the weight tensors of a ``.tflite`` are read straight from its
flatbuffer (:func:`tflite_weight_stats`): the constant weight input of every ``CONV_2D``,
``DEPTHWISE_CONV_2D`` and ``FULLY_CONNECTED`` op. For quantized tensors a weight is zero when its
integer equals the zero point of its channel; distinct values are counted per output channel
(int8 per-channel quantization maps k shared float values to at most k integers per channel).

Example::

    stats = tflite_weight_stats("out/classifier_pqat_int8.tflite")
    overall_sparsity(stats)                      # zero fraction over all weight tensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.export.converter import layer_of_tensor

_WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
_KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _array_stats(values: np.ndarray, channel_axis: int | None, zero=0) -> dict:
    values = np.asarray(values)
    zeros = (
        values == zero if np.ndim(zero) == 0 else values == _broadcast(zero, values, channel_axis)
    )
    if channel_axis is None or values.ndim == 0:
        per_channel = [np.unique(values).size]
    else:
        moved = np.moveaxis(values, channel_axis, 0).reshape(values.shape[channel_axis], -1)
        per_channel = [np.unique(row).size for row in moved]
    return {
        "size": int(values.size),
        "zero_fraction": float(zeros.mean()) if values.size else 0.0,
        "unique_values": int(np.unique(values).size),
        "max_unique_per_channel": int(max(per_channel)),
    }


def _broadcast(zero, values, axis):
    shape = [1] * values.ndim
    shape[axis] = -1
    return np.asarray(zero).reshape(shape)


def keras_weight_stats(model) -> dict:
    """``{layer_name: stats}`` for every layer with a kernel (Conv, DepthwiseConv, Dense ...).

    ``stats``: ``size``, ``zero_fraction``, ``unique_values`` (whole kernel) and
    ``max_unique_per_channel`` (over output channels, the last axis; the channel axis of a
    depthwise kernel is the third). Works on plain and on tfmot-wrapped models.

    Example:
        >>> keras_weight_stats(stripped)["stem_conv"]["zero_fraction"]
        0.8
    """
    from kvision.compress._models import flat_layers

    out = {}
    for layer in flat_layers(model):
        inner = getattr(layer, "layer", layer)  # tfmot wrappers keep the layer as `.layer`
        for attr in _KERNEL_ATTRS:
            kernel = getattr(inner, attr, None)
            if kernel is None:
                continue
            values = np.asarray(kernel.numpy() if hasattr(kernel, "numpy") else kernel)
            axis = values.ndim - 2 if attr == "depthwise_kernel" else values.ndim - 1
            out[inner.name] = {"weight": attr, **_array_stats(values, axis)}
            break
    return out


def tflite_weight_stats(path, layer_names=None, with_values: bool = False) -> list[dict]:
    """Stats of the weight tensor of each conv / fully-connected op of a ``.tflite`` file.

    Args:
        path: ``.tflite`` file (or its bytes).
        layer_names: Keras layer names to attribute tensors to (by name match); optional.
        with_values: also return each tensor's stored values (``values``, a NumPy array in the
            TFLite layout: ``[out, h, w, in]`` for convolutions, ``[out, in]`` for dense).

    Returns:
        One dict per weight tensor: ``tensor``, ``op``, ``dtype``, ``shape``, ``layer`` (matched
        Keras layer name or ``None``), ``size``, ``zero_fraction``, ``unique_values``,
        ``max_unique_per_channel``.

    Raises:
        ValueError: not a readable TFLite flatbuffer (names the file).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    label = "model bytes" if isinstance(path, bytes | bytearray) else str(path)
    data = bytes(path) if isinstance(path, bytes | bytearray) else Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputValueError(f"{label} is not a TFLite flatbuffer (no 'TFL3' identifier).")
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    try:
        root = schema.Model.GetRootAs(data, 0)
        graph = root.Subgraphs(0)
        codes = []
        for i in range(root.OperatorCodesLength()):
            code = root.OperatorCodes(i)
            codes.append(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), ""))
        rows, seen = [], set()
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            name = codes[op.OpcodeIndex()]
            if name not in _WEIGHT_OPS or op.InputsLength() <= _WEIGHT_OPS[name]:
                continue
            index = op.Inputs(_WEIGHT_OPS[name])
            if index < 0 or index in seen:
                continue
            values, tensor = _tensor_values(root, graph, index, data, type_names)
            if values is None:
                continue  # a dynamic input, not a constant weight
            seen.add(index)
            rows.append(_tensor_row(tensor, name, values, type_names, layer_names))
            if with_values:
                rows[-1]["values"] = values
    except (IndexError, ValueError, TypeError) as exc:
        raise InputValueError(f"{label} is not a readable TFLite flatbuffer: {exc}") from exc
    return rows


def _tensor_values(root, graph, index, data, type_names):
    tensor = graph.Tensors(index)
    buffer = root.Buffers(tensor.Buffer())
    offset = buffer.Offset() if hasattr(buffer, "Offset") else 0
    if offset > 1:
        raw = data[offset : offset + buffer.Size()]
    else:
        raw = buffer.DataAsNumpy()
        if isinstance(raw, int) or raw is None or len(raw) == 0:
            return None, tensor
        raw = raw.tobytes()
    dtype = np.dtype(type_names[tensor.Type()])
    values = np.frombuffer(raw, dtype=dtype).reshape(tensor.ShapeAsNumpy())
    return values, tensor


def _tensor_row(tensor, op_name, values, type_names, layer_names) -> dict:
    name = tensor.Name().decode("utf-8", "replace")
    q = tensor.Quantization()
    zero, axis = 0, 0  # TFLite weights are [out, ...] (depthwise: [1, h, w, out])
    if op_name == "DEPTHWISE_CONV_2D":
        axis = values.ndim - 1
    if q is not None and q.ZeroPointLength() > 0 and values.dtype.kind in "iu":
        zp = q.ZeroPointAsNumpy()
        axis = q.QuantizedDimension() if q.ZeroPointLength() > 1 else axis
        zero = zp if q.ZeroPointLength() > 1 else int(zp[0])
    return {
        "tensor": name,
        "op": op_name,
        "dtype": type_names[tensor.Type()],
        "shape": [int(d) for d in values.shape],
        "layer": layer_of_tensor(name, layer_names) if layer_names else None,
        **_array_stats(values, axis, zero),
    }


def gzip_budget(path) -> dict:
    """Where the gzip bytes of a ``.tflite`` go: weights, biases and everything else.

    The file is re-serialized three times (flatbuffers object API): unchanged, with every weight
    tensor of a ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` / ``FULLY_CONNECTED`` op set to zeros, and
    with their bias tensors zeroed too. Differences of the gzip sizes are what the weights and the
    biases cost; what is left when both are zero (per-channel quantization scales, the graph,
    tensor names, signatures) is the floor no amount of pruning can go under.

    Returns:
        ``{"gzip_bytes", "repacked_gzip_bytes", "weights_gzip_bytes", "biases_gzip_bytes",
        "floor_gzip_bytes", "weights", "nonzero_weights", "per_channel_scales"}``.

    Example:
        >>> b = gzip_budget("out/classifier_pqat_int8.tflite")
        >>> b["floor_gzip_bytes"] / b["gzip_bytes"]      # share pruning cannot remove
        0.35
    """
    import gzip

    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    data = Path(path).read_bytes()

    def gz(blob: bytes) -> int:
        return len(gzip.compress(blob, 9, mtime=0))

    def load():
        return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))

    def pack(model) -> bytes:
        builder = flatbuffers.Builder(len(data))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def zeroed(inputs: tuple[int, ...]):
        model = load()
        graph = model.subgraphs[0]
        counts = {"weights": 0, "nonzero_weights": 0}
        seen = set()
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) not in _WEIGHT_OPS:
                continue
            for slot in inputs:
                index = int(op.inputs[slot]) if len(op.inputs) > slot else -1
                buffer = model.buffers[graph.tensors[index].buffer] if index >= 0 else None
                if buffer is None or buffer.data is None or index in seen:
                    continue
                seen.add(index)
                raw = np.asarray(buffer.data, np.uint8)
                if slot == 1:
                    counts["weights"] += raw.size
                    counts["nonzero_weights"] += int(np.count_nonzero(raw))
                buffer.data = np.zeros_like(raw)
        return pack(model), counts

    model = load()
    scales = sum(
        len(t.quantization.scale)
        for t in model.subgraphs[0].tensors
        if t.quantization is not None and t.quantization.scale is not None
    )
    repacked = gz(pack(model))
    no_weights, counts = zeroed((1,))
    no_weights = gz(no_weights)
    floor = gz(zeroed((1, 2))[0])
    return {
        "gzip_bytes": gz(data),
        "repacked_gzip_bytes": repacked,
        "weights_gzip_bytes": repacked - no_weights,
        "biases_gzip_bytes": no_weights - floor,
        "floor_gzip_bytes": floor,
        **counts,
        "per_channel_scales": int(scales),
    }


def overall_sparsity(stats, layers=None) -> float:
    """Zero fraction over all weights in ``stats`` (Keras dict or TFLite list), size-weighted.

    Args:
        stats: output of :func:`keras_weight_stats` or :func:`tflite_weight_stats`.
        layers: only count these layer names (default: all).
    """
    items = stats.items() if isinstance(stats, dict) else ((s.get("layer"), s) for s in stats)
    total = zeros = 0
    for name, s in items:
        if layers is not None and name not in layers:
            continue
        total += s["size"]
        zeros += s["zero_fraction"] * s["size"]
    return float(zeros / total) if total else 0.0


def is_m_by_n(values: np.ndarray, m: int = 2, n: int = 4, axis: int = -2) -> bool:
    """True when every group of ``n`` consecutive values along ``axis`` has at least ``m`` zeros.

    ``axis`` is the input-channel axis: ``-2`` for a Keras Conv2D ``[h, w, in, out]`` or Dense
    ``[in, out]`` kernel. A partial last group needs ``m - (n - len)`` zeros.
    """
    v = np.moveaxis(np.asarray(values), axis, -1)
    v = v.reshape(-1, v.shape[-1])
    c = v.shape[-1]
    for start in range(0, c, n):
        group = v[:, start : start + n] == 0
        need = max(0, m - (n - group.shape[1]))
        if (group.sum(axis=1) < need).any():
            return False
    return True
