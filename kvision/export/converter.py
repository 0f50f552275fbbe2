"""The one place kvision uses ``tf.lite.TFLiteConverter``: Keras model -> ``.tflite`` file.

Every variant is one row of :data:`VARIANTS` (converter settings as data); all of them convert
the same serving function as the SavedModel (``kvision.export.saved_model.serving_function``), so
the TFLite signature is also ``serving_default``: ``images`` -> ``probabilities``. Only builtin
TFLite ops are allowed (no Flex / Select TF ops, no custom ops): a model that needs one fails to
convert, with the op named in the error.

=================  ==========================================================================
variant            settings
=================  ==========================================================================
``float32``        no optimization
``float16``        float16 weights (dequantized at load; float32 I/O)
``dynamic``        dynamic-range: int8 weights, float activations (float32 I/O)
``int8``           full integer, int8 input and output (needs ``representative_data``)
``int8_float_io``  full integer inside, float32 input and output (needs ``representative_data``)
``int16x8``        int16 activations, int8 weights, float32 I/O (needs ``representative_data``)
=================  ==========================================================================

The full-integer variants use only ``TFLITE_BUILTINS_INT8`` (strict): an op with no int8 kernel
makes the conversion fail instead of silently staying float. The one exception is asked for by
name: ``deny_layers`` keeps quantization-sensitive Keras layers (a classifier head) in float inside
an int8 model. That takes the two steps TensorFlow's ``QuantizationDebugger`` takes (the debugger
is not in the TF 2.21 wheel): convert with calibration only, then quantize the calibrated model
with the ops of those layers left out; ``DEQUANTIZE``/``QUANTIZE`` (builtin ops) go around them.

The input contract is written beside the file as ``<stem>.contract.json`` (see
``kvision.export.artifact``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.export.artifact import contract_path
from kvision.io import atomic_write_bytes


@dataclass(frozen=True)
class TFLiteVariant:
    """Converter settings of one TFLite variant.

    Args:
        optimize: set ``converter.optimizations = [tf.lite.Optimize.DEFAULT]``.
        supported_ops: ``tf.lite.OpsSet`` member names for ``target_spec.supported_ops``.
        supported_types: dtype names for ``target_spec.supported_types`` (e.g. ``("float16",)``).
        needs_representative_data: the variant calibrates activations.
        inference_input_type: dtype name of the model input (``None`` = float32).
        inference_output_type: dtype name of the model output (``None`` = float32).
    """

    optimize: bool = False
    supported_ops: tuple = ("TFLITE_BUILTINS",)
    supported_types: tuple = ()
    needs_representative_data: bool = False
    inference_input_type: str | None = None
    inference_output_type: str | None = None


_INT8_OPS = ("TFLITE_BUILTINS_INT8",)
_INT16X8_OPS = ("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",)

VARIANTS: dict[str, TFLiteVariant] = {
    "float32": TFLiteVariant(),
    "float16": TFLiteVariant(optimize=True, supported_types=("float16",)),
    "dynamic": TFLiteVariant(optimize=True),
    "int8": TFLiteVariant(
        optimize=True,
        supported_ops=_INT8_OPS,
        needs_representative_data=True,
        inference_input_type="int8",
        inference_output_type="int8",
    ),
    "int8_float_io": TFLiteVariant(
        optimize=True, supported_ops=_INT8_OPS, needs_representative_data=True
    ),
    "int16x8": TFLiteVariant(
        optimize=True, supported_ops=_INT16X8_OPS, needs_representative_data=True
    ),
}


class ConversionError(RuntimeError):
    """The TFLite converter rejected a model; the message is a short summary naming the ops."""


def convert_tflite(
    model,
    path,
    variant: str = "float32",
    representative_data=None,
    contract=None,
    overwrite: bool = False,
    max_calibration_samples: int = 500,
    deny_layers=(),
) -> Path:
    """Convert a tf_keras classifier to a ``.tflite`` file, atomically.

    Args:
        model: tf_keras classifier (one image input, one probabilities output).
        path: output ``.tflite`` path; its contract goes to ``<stem>.contract.json`` beside it.
        variant: a key of :data:`VARIANTS` (default ``"float32"``).
        representative_data: calibration inputs for ``int8``/``int8_float_io``/``int16x8``:
            a float32 array ``[N, H, W, C]`` in model scale (fed one image at a time), or a
            callable returning an iterable of ``[batch]`` lists as TFLite expects.
        contract: ``InputContract`` (default: the one the model carries).
        overwrite: replace an existing file (default False: raise ``FileExistsError``).
        max_calibration_samples: at most this many images of an array are used (default 500).
        deny_layers: Keras layer names whose ops stay float32 inside an ``int8`` or
            ``int8_float_io`` model (default: none). :func:`denied_tensors` lists them in the file.

    Returns:
        The ``.tflite`` path.

    Raises:
        ConversionError: the converter failed (e.g. an op that is not a TFLite builtin); the
            message names the ops.
        ValueError: a deny-listed name is not a layer of the model, matches no op of the
            converted model, or comes with a variant other than the two full-integer ones.

    Example:
        >>> convert_tflite(model, "out/tflite/classifier_float32.tflite")
        PosixPath('out/tflite/classifier_float32.tflite')
        >>> convert_tflite(model, "out/m_int8.tflite", "int8", representative_data=x_val[:200])
        PosixPath('out/m_int8.tflite')
        >>> convert_tflite(model, "out/m_deny.tflite", "int8_float_io", x_val[:200],
        ...                deny_layers=["probabilities"])
        PosixPath('out/m_deny.tflite')
    """
    import tensorflow as tf

    from kvision.export.saved_model import resolve_contract, serving_function

    if variant not in VARIANTS:
        raise InputValueError(
            f"`variant` should be one of {sorted(VARIANTS)}. Received: variant={variant!r}"
        )
    spec = VARIANTS[variant]
    path = Path(path)
    if path.suffix != ".tflite":
        raise InputValueError(f"`path` should end with .tflite. Received: path={str(path)!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"TFLite file already exists: {path}. Pass overwrite=True to replace it."
        )
    if spec.needs_representative_data and representative_data is None:
        raise InputValueError(
            f"Variant `{variant}` calibrates activations: pass `representative_data` "
            "(float32 model inputs [N, H, W, C])."
        )
    deny = _check_deny_layers(model, deny_layers, variant)
    contract = resolve_contract(model, contract)
    serve = serving_function(model, contract)

    function = serve.get_concrete_function()
    expected = sorted(function.structured_outputs)

    def convert_with(trackable) -> bytes:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], trackable)
        if deny:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _representative_dataset(
                representative_data, contract.shape, max_calibration_samples
            )
            return _convert_denying(converter, model, deny, variant, path)
        ops = [getattr(tf.lite.OpsSet, n) for n in spec.supported_ops]
        converter.target_spec.supported_ops = ops
        if spec.optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if spec.supported_types:
            converter.target_spec.supported_types = [tf.as_dtype(t) for t in spec.supported_types]
        if spec.inference_input_type:
            converter.inference_input_type = tf.as_dtype(spec.inference_input_type)
        if spec.inference_output_type:
            converter.inference_output_type = tf.as_dtype(spec.inference_output_type)
        if representative_data is not None:
            converter.representative_dataset = _representative_dataset(
                representative_data, contract.shape, max_calibration_samples
            )
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError and friends
            raise ConversionError(
                f"TFLite conversion ({variant}) of {path.name} failed: "
                f"{summarize_converter_error(exc)}"
            ) from exc

    holder = _function_holder(serve, model)
    flatbuffer = convert_with(holder)
    if holder is not model and _signature_outputs(flatbuffer) != expected:
        # the holder could not be saved (a layer owns resources beyond its variables) and the
        # converter fell back to a graph whose outputs lost their names: convert the model
        flatbuffer = convert_with(model)
    atomic_write_bytes(path, flatbuffer)
    contract.save(contract_path(path))
    return path


def _signature_outputs(flatbuffer: bytes) -> list[str]:
    """Sorted output names of the ``serving_default`` signature stored in a ``.tflite``."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=flatbuffer).get_signature_list()
    return sorted(signatures.get("serving_default", {}).get("outputs", []))


def _function_holder(serve, model):
    """The object the converter saves: the serving function and the model's variables only.

    Handing the converter the Keras model itself makes it save every layer's call functions
    too (the converter goes through a SavedModel), which took 4.5 of the 6 s of converting the
    default classifier; this holder converts to the same bytes in 1.5 s.
    """
    import tensorflow as tf

    from kvision._keras import keras

    if not isinstance(model, keras.Model):  # e.g. a restored SavedModel: its own resources
        return model
    holder = tf.Module()
    holder.serve = serve
    holder.variables_ = list(model.variables)
    return holder


DENY_VARIANTS = ("int8", "int8_float_io")


def _check_deny_layers(model, deny_layers, variant: str) -> list[str]:
    deny = list(deny_layers or ())
    if not deny:
        return deny
    if variant not in DENY_VARIANTS:
        raise InputValueError(
            f"`variant` with `deny_layers` should be one of {DENY_VARIANTS}. "
            f"Received: variant={variant!r}"
        )
    names = [layer.name for layer in model.layers]
    unknown = [n for n in deny if n not in names]
    if unknown:
        raise InputValueError(f"`deny_layers` names unknown layer(s) {unknown}. Layers: {names}")
    return deny


def _convert_denying(converter, model, deny: list[str], variant: str, path: Path) -> bytes:
    """Calibrate, then quantize everything but the ops of the ``deny`` layers."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    converter._experimental_calibrate_only = True  # noqa: SLF001 (the debugger's first step)
    try:
        calibrated = converter.convert()
        nodes = denied_tensors(calibrated, deny, [layer.name for layer in model.layers])
        if not nodes:
            raise InputValueError(
                f"`deny_layers` {deny} matched no op of the converted model; the converter may "
                "have fused them into a neighbour. Deny-list that layer instead."
            )
        io_type = tf.int8 if variant == "int8" else tf.float32
        return tf_convert.mlir_quantize(
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


def denied_tensors(tflite, deny_layers, layer_names) -> list[str]:
    """Output tensor names of the ops that belong to the ``deny_layers`` Keras layers.

    Args:
        tflite: a ``.tflite`` path or its bytes.
        deny_layers: the layer names to look for.
        layer_names: every layer name of the Keras model (to tell layers apart).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    data = tflite if isinstance(tflite, bytes | bytearray) else Path(tflite).read_bytes()
    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        for j in range(op.OutputsLength()):
            name = graph.Tensors(op.Outputs(j)).Name().decode("utf-8", "replace")
            if layer_of_tensor(name, layer_names) in deny_layers and name not in out:
                out.append(name)
    return out


def layer_of_tensor(tensor_name: str, layer_names) -> str | None:
    """The Keras layer a TFLite tensor belongs to, matched on ``/name/`` path components.

    When several layers appear (a convolution with its folded batch norm), the convolution that
    owns a kernel is the one listed in ``layer_names``; the longest name wins ties.

    Example:
        >>> layer_of_tensor("model/quant_conv1/Conv2D;model/bn1/FusedBatchNorm", ["conv1", "bn"])
        'conv1'
    """
    parts = set()
    for piece in tensor_name.replace(";", "/").split("/"):
        parts.add(piece)
        if piece.startswith("quant_"):  # tfmot's QAT wrappers prefix the layer name
            parts.add(piece[len("quant_") :])
    found = [n for n in layer_names if n in parts]
    if not found:
        return None
    return max(found, key=len)


def summarize_converter_error(exc) -> str:
    """The few informative lines of a (very long) converter error: unsupported/custom/Flex ops.

    Example:
        >>> summarize_converter_error(ConverterError("... Flex ops: FlexMatrixDeterminant ..."))
        'Flex ops: FlexMatrixDeterminant'
    """
    text = str(exc)
    keep = []
    patterns = (
        r"(?:Flex ops|Custom ops): [^\n]+",
        r"'tf\.\w+' op is neither a custom op nor a flex op",
        r"Error code: \w+",
    )
    for pattern in patterns:
        for match in re.findall(pattern, text):
            line = match.strip()
            if line not in keep:
                keep.append(line)
    if not keep:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
        keep.append(first[:300])
    summary = "; ".join(keep)
    return summary if len(summary) <= 600 else summary[:597] + "..."


def _representative_dataset(data, shape, limit: int):
    if callable(data):
        return data
    x = np.asarray(data, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
        dims = ", ".join(map(str, shape))
        raise InputValueError(
            f"`representative_data` should be float32 images [N, {dims}] with "
            f"N >= 1. Received: shape={x.shape}"
        )
    x = x[:limit]

    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return gen
