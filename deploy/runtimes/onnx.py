"""Re-export of :mod:`kvision.runtime.onnx` (ONNX Runtime, an optional extra)."""

from kvision.runtime.onnx import INSTALL_HINT, OPSET, PROVIDERS, OnnxRuntime

__all__ = ["INSTALL_HINT", "OPSET", "PROVIDERS", "OnnxRuntime"]
