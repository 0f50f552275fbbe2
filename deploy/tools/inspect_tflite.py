#!/usr/bin/env python
"""Inspect an artifact: every named input and output (shape, dtype, quantization) and its size.

A ``.tflite`` file also gets its ops (with counts), every tensor with quantization, its
signatures, and whether it uses only builtin ops (no Flex / custom ops, so any LiteRT build runs
it); a model that needs a custom op is listed with the op named even when LiteRT cannot load
it. A SavedModel folder or a ``.keras`` / ``.h5`` / ``.hdf5`` / ``.onnx`` file is loaded by
``kvision.runtime`` and its inputs and outputs listed by the names ``serve`` and ``benchmark``
use. Each input/output entry's ``key`` is that name.

Usage::

    python tools/inspect_tflite.py tflite_models/classifier_int8.tflite
    python tools/inspect_tflite.py model.tflite --json          # machine-readable
    python tools/inspect_tflite.py model.tflite --tensors       # every tensor, not just I/O
    kvision inspect runs/x/export/saved_model/classifier

Exit status: 0 loadable and builtin-only, 1 when a ``.tflite`` needs Flex / custom ops or
cannot be loaded, 2 unreadable file or bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np


def inspect_tflite(path) -> dict:
    """Everything :func:`main` prints, as a JSON-ready dict.

    Keys: ``path``, ``size_bytes``, ``gzip_bytes``, ``ops`` (sorted names), ``op_counts``
    (``{name: n}`` in the graph, ``None`` when the interpreter cannot load it), ``flex_ops``,
    ``custom_ops``, ``builtin_only``, ``loadable``, ``load_error``, ``inputs`` / ``outputs`` /
    ``tensors`` (``{index, name, shape, dtype, quantization: {scales, zero_points, axis}}``),
    ``signatures``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a TFLite flatbuffer.
    """
    from kvision.export.artifact import gzip_size
    from kvision.export.litert import LiteRTModel, split_ops, tflite_op_names

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"TFLite file not found: {p}")
    ops = tflite_op_names(p)
    flex, custom = split_ops(ops)
    info = {
        "path": str(p),
        "size_bytes": p.stat().st_size,
        "gzip_bytes": gzip_size(p),
        "ops": ops,
        "op_counts": None,
        "flex_ops": flex,
        "custom_ops": custom,
        "builtin_only": not flex and not custom,
        "loadable": False,
        "load_error": "",
        "inputs": [],
        "outputs": [],
        "tensors": [],
        "signatures": {},
    }
    try:
        model = LiteRTModel(p, use_xnnpack=False)
    except ValueError as exc:
        info["load_error"] = str(exc)
        return info
    interp = model.interpreter
    info["loadable"] = True
    info["op_counts"] = dict(
        sorted(Counter(o["op_name"] for o in interp._get_ops_details()).items())
    )
    keys = {model.tensor_index(t.name): t.name for t in model.inputs + model.outputs}
    info["inputs"] = [_tensor(d, keys) for d in model.input_details]
    info["outputs"] = [_tensor(d, keys) for d in model.output_details]
    info["tensors"] = [_tensor(d) for d in interp.get_tensor_details()]
    info["signatures"] = model.signature
    model.close()
    return info


def inspect_artifact(path) -> dict:
    """:func:`inspect_tflite` for a ``.tflite``; for a SavedModel, Keras or ONNX artifact the
    same keys where they apply (``format``, ``size_bytes``, ``gzip_bytes``, ``loadable``,
    ``inputs`` / ``outputs`` as ``{key, name, shape, dtype, quantization}``, ``signatures``
    of a SavedModel; ``ops``, ``flex_ops``, ``custom_ops`` empty and ``builtin_only`` ``None``).

    Raises:
        FileNotFoundError: no such artifact.
        ValueError: not an artifact format, or a model that cannot be loaded (e.g. a Keras 3
            file; the message says what to do).

    Example:
        >>> [t["key"] for t in inspect_artifact("export/saved_model/detector")["outputs"]]
        ['boxes', 'scores']
    """
    from kvision.export.artifact import gzip_size, path_size
    from kvision.runtime import detect_format, open_runtime, saved_model_version_dir
    from kvision.runtime.tflite_ops import is_tflite_buffer

    if Path(path).is_file():
        with open(path, "rb") as fh:
            if is_tflite_buffer(fh.read(8)) or Path(path).suffix.lower() == ".tflite":
                return {"format": "tflite", **inspect_tflite(path)}
    fmt = detect_format(path)
    p = saved_model_version_dir(path) if fmt == "saved_model" else Path(path)
    with open_runtime(p) as rt:
        inputs, outputs = rt.inputs, rt.outputs
    signatures = {}
    if fmt == "saved_model":
        from deploy.serving.signature import read_signature_defs

        signatures = {
            k: {"inputs": sorted(v["inputs"]), "outputs": sorted(v["outputs"])}
            for k, v in read_signature_defs(p).items()
        }
    return {
        "format": fmt,
        "path": str(p),
        "size_bytes": path_size(p),
        "gzip_bytes": gzip_size(p),
        "ops": [],
        "op_counts": None,
        "flex_ops": [],
        "custom_ops": [],
        "builtin_only": None,
        "loadable": True,
        "load_error": "",
        "inputs": [_info(t) for t in inputs],
        "outputs": [_info(t) for t in outputs],
        "tensors": [],
        "signatures": signatures,
    }


def _info(t) -> dict:
    return {
        "key": t.name,
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "quantization": {
            "scales": [t.scale] if t.scale else [],
            "zero_points": [t.zero_point] if t.scale else [],
            "axis": 0,
            "per_channel": False,
        },
    }


def _tensor(d: dict, keys: dict | None = None) -> dict:
    q = d.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), dtype=np.float64)
    zps = np.asarray(q.get("zero_points", []), dtype=np.int64)
    sig = d.get("shape_signature", d.get("shape"))
    key = {"key": keys[int(d["index"])]} if keys is not None else {}
    return {
        **key,
        "index": int(d["index"]),
        "name": d["name"],
        "shape": [None if int(s) < 0 else int(s) for s in sig],
        "dtype": np.dtype(d["dtype"]).name,
        "quantization": {
            "scales": scales.tolist() if scales.size <= 4 else _summary(scales),
            "zero_points": zps.tolist() if zps.size <= 4 else _summary(zps),
            "axis": int(q.get("quantized_dimension", 0)),
            "per_channel": bool(scales.size > 1),
        },
    }


def _summary(a: np.ndarray) -> dict:
    return {"n": int(a.size), "min": float(a.min()), "max": float(a.max())}


def format_report(info: dict, tensors: bool = False) -> str:
    """Human-readable text of :func:`inspect_tflite`'s (or :func:`inspect_artifact`'s) dict."""
    head = [
        f"{info['path']}: {info['size_bytes'] / 1e3:.1f} KB ({info['gzip_bytes'] / 1e3:.1f} KB "
        "gzip)" + (f", {info['format']}" if info.get("format") not in (None, "tflite") else "")
    ]
    if info.get("builtin_only") is None:
        lines = head + [f"{key[:-1]:6s} {_io_line(t)}" for key in ("inputs", "outputs")
                        for t in info[key]]  # fmt: skip
        for name, sig in info["signatures"].items():
            lines.append(f"signature {name}: {sig['inputs']} -> {sig['outputs']}")
        return "\n".join(lines)
    lines = head + [
        f"builtin ops only: {'yes' if info['builtin_only'] else 'NO'}"
        + (f"  Flex {info['flex_ops']}" if info["flex_ops"] else "")
        + (f"  custom {info['custom_ops']}" if info["custom_ops"] else ""),
    ]
    if info["op_counts"]:
        lines.append("ops: " + ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items()))
    else:
        lines.append("ops: " + ", ".join(info["ops"]))
    if not info["loadable"]:
        lines.append(f"cannot load with LiteRT: {info['load_error']}")
        return "\n".join(lines)
    for key in ("inputs", "outputs"):
        for t in info[key]:
            lines.append(
                f"{key[:-1]:6s} {_line(t)}" + (f"  (key {t['key']!r})" if "key" in t else "")
            )
    for name, sig in info["signatures"].items():
        lines.append(f"signature {name}: {sig['inputs']} -> {sig['outputs']}")
    if tensors:
        lines.append(f"tensors ({len(info['tensors'])}):")
        lines += [f"  {_line(t)}" for t in info["tensors"]]
    else:
        quantized = sum(1 for t in info["tensors"] if t["quantization"]["scales"])
        lines.append(f"tensors: {len(info['tensors'])} ({quantized} quantized; --tensors lists)")
    return "\n".join(lines)


def _line(t: dict) -> str:
    q = t["quantization"]
    quant = ""
    if q["scales"]:
        quant = f"  scale {q['scales']} zero_point {q['zero_points']}"
        if q["per_channel"]:
            quant += f" (per-channel, axis {q['axis']})"
    return f"#{t['index']:<4d} {t['name']}  {t['dtype']} {t['shape']}{quant}"


def _io_line(t: dict) -> str:
    q = t["quantization"]
    quant = f"  scale {q['scales']} zero_point {q['zero_points']}" if q["scales"] else ""
    return f"{t['key']}  {t['dtype']} {t['shape']}{quant}"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="kvision inspect", description="Inspect a .tflite, SavedModel, Keras or ONNX model."
    )
    p.add_argument("model", help=".tflite, SavedModel folder, .keras/.h5/.hdf5 or .onnx")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--tensors", action="store_true", help="list every tensor")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args) -> int:
    """Inspect from parsed arguments (``kvision inspect``)."""
    try:
        info = inspect_artifact(args.model)
    except Exception as exc:  # user errors are one line; anything else is a bug: raised
        from kvision.errors import user_error_status

        return user_error_status("inspect", exc)
    print(json.dumps(info, indent=2) if args.json else format_report(info, args.tensors))
    return 0 if info["loadable"] and info["builtin_only"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
