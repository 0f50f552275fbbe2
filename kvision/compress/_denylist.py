"""Full-integer TFLite conversion with some Keras layers kept in float (a PTQ deny-list).

``kvision.export.converter.convert_tflite`` has no deny-list option, so this module does the two
steps TensorFlow's ``QuantizationDebugger`` does (that debugger is not shipped in the TF 2.21
wheel): convert with calibration only, then quantize the calibrated model with the ops of the
deny-listed layers left in float (``DEQUANTIZE``/``QUANTIZE`` are inserted around them, both
builtin ops). It uses the converter's serving function and variant table, so the signature and
the settings match every other variant.

TODO(lead): this is the second user of ``tf.lite.TFLiteConverter``; move :func:`convert_denylisted`
into ``kvision/export/converter.py`` as a ``deny_layers`` argument of ``convert_tflite``.
"""

from __future__ import annotations

from pathlib import Path

from kvision.export.artifact import contract_path
from kvision.io import atomic_write_bytes

DENY_VARIANTS = ("int8", "int8_float_io")


def convert_denylisted(
    model,
    path,
    deny_layers,
    representative_data,
    variant: str = "int8_float_io",
    overwrite: bool = False,
    max_calibration_samples: int = 500,
) -> tuple[Path, list[str]]:
    """Convert ``model`` to full-integer TFLite with ``deny_layers`` kept in float.

    Args:
        model: tf_keras classifier.
        path: output ``.tflite`` path.
        deny_layers: Keras layer names whose ops stay float32.
        representative_data: float32 calibration images ``[N, H, W, C]``.
        variant: ``"int8_float_io"`` (default: float input/output) or ``"int8"`` (int8 I/O).
        overwrite: replace an existing file.
        max_calibration_samples: at most this many calibration images.

    Returns:
        ``(path, denied_nodes)``: the file and the TFLite node (tensor) names left in float.

    Raises:
        ValueError: a deny-listed name matches no layer / no op (names the known layers).
        kvision.export.converter.ConversionError: the converter failed.

    Example:
        >>> convert_denylisted(model, "m_int8_deny.tflite", ["probabilities"], x_val[:200])
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    from kvision.export.converter import (
        ConversionError,
        _representative_dataset,
        summarize_converter_error,
    )
    from kvision.export.saved_model import resolve_contract, serving_function

    if variant not in DENY_VARIANTS:
        raise ValueError(
            f"`variant` with a deny-list should be one of {DENY_VARIANTS}. "
            f"Received: variant={variant!r}"
        )
    deny = list(deny_layers)
    names = [layer.name for layer in model.layers]
    unknown = [n for n in deny if n not in names]
    if unknown:
        raise ValueError(f"`deny_layers` names unknown layer(s) {unknown}. Layers: {names}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"TFLite file already exists: {path}. Pass overwrite=True.")
    contract = resolve_contract(model, None)
    serve = serving_function(model, contract)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative_dataset(
        representative_data, contract.shape, max_calibration_samples
    )
    converter._experimental_calibrate_only = True  # noqa: SLF001 (the debugger's first step)
    try:
        calibrated = converter.convert()
        nodes = _output_names_of(calibrated, deny, names)
        if not nodes:
            raise ValueError(
                f"`deny_layers` {deny} matched no op of the converted model; the converter may "
                "have fused them into a neighbour. Deny-list that layer instead."
            )
        io_type = tf.int8 if variant == "int8" else tf.float32
        flatbuffer = tf_convert.mlir_quantize(
            calibrated,
            fully_quantize=variant == "int8",  # True also quantizes the model's input/output
            input_data_type=io_type,
            output_data_type=io_type,
            denylisted_nodes=nodes,
        )
    except ValueError:
        raise
    except Exception as exc:  # the converter raises ConverterError and friends
        raise ConversionError(
            f"TFLite conversion ({variant}, deny {deny}) of {path.name} failed: "
            f"{summarize_converter_error(exc)}"
        ) from exc
    atomic_write_bytes(path, flatbuffer)
    contract.save(contract_path(path))
    return path, nodes


def _output_names_of(flatbuffer: bytes, deny: list[str], layer_names: list[str]) -> list[str]:
    """Output tensor names of the ops that belong to the deny-listed layers."""
    from tensorflow.lite.python import schema_py_generated as schema

    from kvision.compress.sparsity import match_layer

    root = schema.Model.GetRootAs(flatbuffer, 0)
    graph = root.Subgraphs(0)
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        for j in range(op.OutputsLength()):
            name = graph.Tensors(op.Outputs(j)).Name().decode("utf-8", "replace")
            if match_layer(name, layer_names) in deny and name not in out:
                out.append(name)
    return out
