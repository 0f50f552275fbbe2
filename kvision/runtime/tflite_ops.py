"""The ops a ``.tflite`` model uses, read straight from its flatbuffer (no interpreter).

Works for models the interpreter cannot load (Flex or custom ops), so a failure to load can
name the ops that caused it.

Example:
    >>> tflite_op_names("classifier_float32.tflite")
    ['CONV_2D', 'FULLY_CONNECTED', 'MEAN', 'SOFTMAX']
    >>> split_ops(["CONV_2D", "FlexMatrixDeterminant", "MyOp"])
    (['FlexMatrixDeterminant'], ['MyOp'])
"""

from __future__ import annotations

from pathlib import Path

from kvision.errors import InputValueError

_TFLITE_IDENTIFIER = b"TFL3"
_CUSTOM = "CUSTOM"


def is_tflite_buffer(data: bytes) -> bool:
    """True when ``data`` carries the TFLite flatbuffer identifier (``TFL3`` at bytes 4..8)."""
    return len(data) >= 8 and data[4:8] == _TFLITE_IDENTIFIER


def tflite_op_names(model) -> list[str]:
    """Sorted names of the ops a ``.tflite`` model uses, read from its flatbuffer.

    Builtin ops by their ``BuiltinOperator`` name (``CONV_2D``); custom ops by their custom code
    (Flex ops are custom ops named ``Flex<TFOp>``, e.g. ``FlexMatrixDeterminant``).

    Args:
        model: a path or the file's bytes.

    Raises:
        InputValueError: the data is not a readable TFLite flatbuffer (names the file).
        MissingDependencyError: ``ai-edge-litert`` is not installed.

    Example:
        >>> tflite_op_names("classifier_float32.tflite")
        ['CONV_2D', 'FULLY_CONNECTED', 'MEAN', 'SOFTMAX']
    """
    from kvision.runtime.litert import litert_module

    schema = litert_module("schema_py_generated")
    label = "model bytes" if isinstance(model, bytes | bytearray) else str(model)
    data = bytes(model) if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    if not is_tflite_buffer(data):
        raise InputValueError(f"{label} is not a TFLite flatbuffer (no 'TFL3' identifier).")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        root = schema.Model.GetRootAs(data, 0)
        ops = set()
        for i in range(root.OperatorCodesLength()):
            code = root.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = names.get(builtin, f"BUILTIN_{builtin}")
            if name == _CUSTOM:
                custom = code.CustomCode()
                name = custom.decode("utf-8", "replace") if custom else _CUSTOM
            ops.add(name)
    except Exception as exc:  # flatbuffers raises struct.error / IndexError on corrupt data
        raise InputValueError(f"{label} is not a readable TFLite flatbuffer: {exc}") from exc
    return sorted(ops)


def split_ops(ops: list[str]) -> tuple[list[str], list[str]]:
    """``(flex_ops, custom_ops)`` among op names from :func:`tflite_op_names`.

    Builtin names are upper case (``CONV_2D``); anything else is a custom op, and custom ops whose
    name starts with ``Flex`` need the TensorFlow (Flex) delegate.
    """
    flex = sorted(o for o in ops if o.startswith("Flex"))
    custom = sorted(o for o in ops if not o.startswith("Flex") and not _is_builtin_name(o))
    return flex, custom


def describe_non_builtin(flex: list[str], custom: list[str]) -> str:
    """``"Flex (Select TF) ops [...] and custom ops [...]"`` for the ops that are present."""
    parts = []
    if flex:
        parts.append(f"Flex (Select TF) ops {flex}")
    if custom:
        parts.append(f"custom ops {custom}")
    return " and ".join(parts)


def _is_builtin_name(name: str) -> bool:
    return name != _CUSTOM and name.upper() == name and name.replace("_", "").isalnum()
