"""The process set-up that must happen before TensorFlow is imported, and the checks behind it.

**oneDNN.** TensorFlow 2.21 on x86 CPUs runs convolutions through oneDNN unless
``TF_ENABLE_ONEDNN_OPTS=0`` is set *before TensorFlow is imported* (setting it later changes
nothing). Its filter gradient of a ``Conv2D`` (or ``Conv2DTranspose``) with a 1x1 kernel and a
stride > 1 writes outside its buffers when the stride divides the feature-map size (every even
map at stride 2; on the measuring CPU, with fewer than 16 input channels): training dies by
SIGSEGV or glibc's ``free(): invalid size``, or goes on with a corrupted heap. The forward pass
and the input gradient are fine, and so are other kernel sizes, stride 1, DepthwiseConv2D,
SeparableConv2D, Conv1D and Conv3D; the measurements are in ``tools/probe_onednn.py`` and the
README's "oneDNN" note.

oneDNN trains the default model 2 to 2.8 times faster on the measuring CPU (468 images/s off,
936 to 1,307 on: ``tools/probe_onednn.py --speed``), so kvision leaves it on and keeps the risky
layer kind away from it instead:

- kvision's own models have no such layer (``small_resnet`` downsamples its projection
  shortcuts by average pooling, ResNet-D style).
- Before any training or fine-tuning step, :func:`check_trainable` refuses a model that has
  one while oneDNN is on, with an :class:`~kvision.errors.UnsafeTrainingError` naming the
  layers (the check is wider than what crashed: any channel count, one divisible side, unknown
  sizes).
- The ``kvision`` command catches that refusal and runs itself again in a fresh process with
  ``TF_ENABLE_ONEDNN_OPTS=0`` (before TensorFlow loads), unless the user set the variable.
  Nothing is lost: the refusal comes before the first step, and runs resume from disk.
- Python users set ``TF_ENABLE_ONEDNN_OPTS=0`` before importing TensorFlow for such a model;
  the error says so.

**Quiet start-up.** :func:`import_tensorflow` imports TensorFlow with the start-up lines it
writes from C++ (oneDNN, CUDA drivers, ``cuInit``) filtered out of stderr; every other line it
writes then is passed through. The ``kvision`` command uses it unless ``--verbose`` is given.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs oneDNN ops (imports TensorFlow if needed).

    TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, while it is imported, and caches the
    answer; this asks TensorFlow for that cached answer (``IsMklEnabled``), so it is right even
    when the variable changed after the import.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover  (a TensorFlow without the probe: judge by the env)
        import tensorflow  # noqa: F401

        value = os.environ.get(ONEDNN_VAR, "").strip().lower()
        return value not in ("0", "false", "off", "no")
    return bool(_pywrap_util_port.IsMklEnabled())


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _walk(model):
    """Every layer of ``model``: nested models and wrapped layers (tfmot wrappers) included."""
    seen, stack = set(), [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(reversed(getattr(layer, "layers", None) or []))
        inner = getattr(layer, "layer", None)  # tfmot's PruneLowMagnitude, QuantizeWrapper ...
        if getattr(inner, "layers", None):  # a wrapped model: search it (a wrapped layer is
            stack.append(inner)  # judged through its wrapper, which knows the input shape)


def _input_hw(layer):
    """Static (height, width) of ``layer``'s input, ``(None, None)`` when unknown."""
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError, ValueError):
        return None, None
    if isinstance(shape, list) or shape is None or len(shape) != 4:
        return None, None
    return shape[1], shape[2]


def onednn_risky_layers(model) -> list[str]:
    """Names of ``model``'s layers whose oneDNN filter gradient corrupts the heap.

    The kind, measured with ``tools/probe_onednn.py`` (TensorFlow 2.21, AVX-512 CPU): a
    ``Conv2D`` with a 1x1 kernel and a stride > 1 along an axis whose map size the stride
    divides (every even map at stride 2), and a ``Conv2DTranspose`` with a 1x1 kernel and a
    stride > 1 (its filter gradient runs on its output, a multiple of the stride). Wrapped
    layers (tfmot) and nested models are searched. It is wider than what crashed on the
    measuring CPU, where only fewer than 16 input channels and maps of both even sides crashed:
    oneDNN picks its kernels by the CPU's instruction set, so channels are not used, one
    divisible axis is enough, and an unknown map size (free input size) counts as divisible.
    ``DepthwiseConv2D``, ``SeparableConv2D``, ``Conv1D``, ``Conv3D``, other kernel sizes and
    stride 1 were fine.

    Args:
        model: a tf_keras model (any layer with ``layers`` / ``layer`` attributes is searched).

    Returns:
        ``"name (Conv2D 1x1, stride 2, 62x62 map)"`` strings, in model order; empty when none.
    """
    from kvision._keras import keras

    found = []
    for layer in _walk(model):
        conv = getattr(layer, "layer", layer)
        if not isinstance(conv, keras.layers.Conv2D) or isinstance(
            conv, keras.layers.DepthwiseConv2D | keras.layers.SeparableConv2D
        ):
            continue
        kernel, strides = _pair(conv.kernel_size), _pair(conv.strides)
        if kernel != (1, 1) or strides == (1, 1):
            continue
        sizes = _input_hw(layer)
        transpose = isinstance(conv, keras.layers.Conv2DTranspose)
        if transpose or any(
            s > 1 and (n is None or n % s == 0) for s, n in zip(strides, sizes, strict=True)
        ):
            h, w = (n if n is not None else "?" for n in sizes)
            stride = strides[0] if strides[0] == strides[1] else strides
            found.append(f"{layer.name} ({type(conv).__name__} 1x1, stride {stride}, {h}x{w} map)")
    return found


def check_trainable(model, what: str = "training") -> None:
    """Refuse to train ``model`` when oneDNN is on here and the model has a risky layer.

    Call it before ``fit`` (kvision's ``fit``, ``compress`` and the CLI's compress command do).
    Costs nothing when oneDNN is off.

    Args:
        model: the tf_keras model about to be trained or fine-tuned.
        what: what is about to happen, for the message (default ``"training"``).

    Raises:
        kvision.errors.UnsafeTrainingError: oneDNN is active and :func:`onednn_risky_layers`
            found a layer; the message names the layers and the remedy.
    """
    if not onednn_enabled():
        return
    risky = onednn_risky_layers(model)
    if not risky:
        return
    from kvision.errors import UnsafeTrainingError

    value = os.environ.get(ONEDNN_VAR)
    why = f"{ONEDNN_VAR}={value} was set" if value is not None else "TensorFlow's default"
    raise UnsafeTrainingError(
        f"Refusing {what}: TensorFlow's oneDNN ops are on in this process ({why}), and the "
        f"oneDNN gradient of {', '.join(risky)} writes outside its buffers (a crash or a "
        "corrupted heap; 1x1 convolutions with a stride that divides the map size). Start a "
        f"new process with {ONEDNN_VAR}=0 set before TensorFlow is imported (the kvision "
        "command does that by itself), or change the layer (pooling, then a 1x1 stride-1 "
        "convolution, or an odd map size).",
        risky,
    )


# --------------------------------------------------------------------------- quiet start-up
# Lines TensorFlow writes to stderr from C++ while it is imported and finds its devices, before
# its logging honours TF_CPP_MIN_LOG_LEVEL. Only these are dropped.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|cuda_diagnostics\.cc"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow"
)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = STARTUP_NOISE):
    """Capture file descriptor 2 (C and Python writes) inside the block; afterwards write back
    every captured line that does not match ``noise``, in order, even when the block raised."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter (a closed fd 2): nothing to hide either
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not noise.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow(quiet: bool = True):
    """Import TensorFlow and find its devices; with ``quiet``, without the start-up lines.

    Returns the ``tensorflow`` module. When TensorFlow is already imported this only returns it.
    """
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow as tf

        return tf
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's cuInit runs here, not at import
    return tf
