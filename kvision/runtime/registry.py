"""Runtime names -> runtime objects, and which runtimes apply to which artifact format.

=====================  ===============  =======  ==========================================
runtime                formats          threads  what
=====================  ===============  =======  ==========================================
``litert``             tflite           yes      LiteRT, XNNPACK delegate on
``litert_no_xnnpack``  tflite           yes      LiteRT builtin kernels, no delegate
``litert_delegate:D``  tflite           yes      LiteRT + external delegate ``D`` (name/path)
``tf_cpu``             saved_model      no       TensorFlow, serving signature, CPU
``tf_gpu``             saved_model      no       TensorFlow on the GPU (unavailable without)
``keras``              keras            no       the tf_keras model itself
``onnxruntime``        saved_model,     yes      ONNX Runtime (tf2onnx conversion of a
                       onnx                      SavedModel; an extra)
``onnxruntime_cuda``   saved_model,     yes      ONNX Runtime CUDA provider (extra)
                       onnx
=====================  ===============  =======  ==========================================

Example:
    >>> rt = open_runtime("tflite_models/classifier_int8.tflite", "litert", threads=2)
    >>> default_runtimes("saved_model")
    ['tf_cpu', 'tf_gpu', 'onnxruntime']
"""

from __future__ import annotations

from kvision.errors import InputValueError
from kvision.runtime.artifacts import ARTIFACT_FORMATS, detect_format

DELEGATE_PREFIX = "litert_delegate:"

RUNTIME_FORMATS: dict[str, tuple[str, ...]] = {
    "litert": ("tflite",),
    "litert_no_xnnpack": ("tflite",),
    "litert_delegate": ("tflite",),
    "tf_cpu": ("saved_model",),
    "tf_gpu": ("saved_model",),
    "keras": ("keras",),
    "onnxruntime": ("saved_model", "onnx"),
    "onnxruntime_cuda": ("saved_model", "onnx"),
}
THREADED = ("litert", "litert_no_xnnpack", "litert_delegate", "onnxruntime", "onnxruntime_cuda")
_DEFAULTS = {
    "tflite": ["litert", "litert_no_xnnpack"],
    "saved_model": ["tf_cpu", "tf_gpu", "onnxruntime"],
    "keras": ["keras"],
    "onnx": ["onnxruntime"],
}


def runtime_kind(runtime: str) -> str:
    """The registry key of a runtime name (``"litert_delegate:gpu"`` -> ``"litert_delegate"``).

    Raises:
        InputValueError: an unknown name (the message lists the known ones).
    """
    kind = DELEGATE_PREFIX[:-1] if runtime.startswith(DELEGATE_PREFIX) else runtime
    if kind not in RUNTIME_FORMATS:
        raise InputValueError(
            f"Unknown runtime {runtime!r}. Allowed: {sorted(RUNTIME_FORMATS)} "
            f"(a delegate as '{DELEGATE_PREFIX}NAME_OR_PATH')."
        )
    return kind


def supports_threads(runtime: str) -> bool:
    """True when the runtime takes a thread count (TensorFlow's pools are process-wide)."""
    return runtime_kind(runtime) in THREADED


def default_runtimes(fmt: str) -> list[str]:
    """The runtimes tried for an artifact format (see the table); the first is ``"auto"``'s."""
    if fmt not in ARTIFACT_FORMATS:
        raise InputValueError(f"`fmt` should be one of {ARTIFACT_FORMATS}. Received: fmt={fmt!r}")
    return list(_DEFAULTS[fmt])


def open_runtime(path, runtime: str = "auto", threads: int | None = None, **options):
    """Create (not load) the runtime ``runtime`` for the artifact at ``path``.

    Args:
        path: ``.tflite``, SavedModel folder, ``.keras`` / ``.h5`` / ``.hdf5`` or ``.onnx``.
        runtime: a name from the table, or ``"auto"`` (default): the first default runtime of
            the artifact's format.
        threads: thread count for runtimes that take one (default ``None``: the runtime's own).
        **options: passed to the runtime class (e.g. ``cache_dir`` for ONNX Runtime,
            ``signature`` for LiteRT and SavedModels).

    Raises:
        FileNotFoundError: no such artifact.
        InputValueError: unknown runtime, a runtime that does not run this format, or
            ``threads`` given to a runtime without a thread setting.

    Example:
        >>> with open_runtime("detector.tflite") as rt:
        ...     outputs = rt.run({"image": x})
    """
    fmt = detect_format(path)
    if runtime == "auto":
        runtime = default_runtimes(fmt)[0]
    kind = runtime_kind(runtime)
    if fmt not in RUNTIME_FORMATS[kind]:
        raise InputValueError(
            f"Runtime {runtime!r} runs {list(RUNTIME_FORMATS[kind])} artifacts; {path} is "
            f"{fmt!r}. Use one of {default_runtimes(fmt)}."
        )
    if threads is not None and kind not in THREADED:
        raise InputValueError(
            f"Runtime {runtime!r} has no thread setting (TensorFlow's thread pools are "
            f"process-wide). Received: threads={threads}; pass threads=None."
        )
    if kind.startswith("litert"):
        from kvision.runtime.litert import LiteRTRuntime

        delegate = runtime[len(DELEGATE_PREFIX) :] if kind == "litert_delegate" else None
        return LiteRTRuntime(
            path, threads=threads, xnnpack=kind == "litert", delegate=delegate, **options
        )
    if kind in ("tf_cpu", "tf_gpu"):
        from kvision.runtime.tensorflow import SavedModelRuntime

        return SavedModelRuntime(path, device=kind[3:], **options)
    if kind == "keras":
        from kvision.runtime.tensorflow import KerasRuntime

        return KerasRuntime(path, **options)
    from kvision.runtime.onnx import OnnxRuntime

    device = "cuda" if kind.endswith("cuda") else "cpu"
    return OnnxRuntime(path, threads=threads, device=device, **options)
