"""Run and inspect ``.tflite`` models: the classifier-shaped view of ``kvision.runtime``'s LiteRT.

:class:`LiteRTModel` is :class:`kvision.runtime.litert.LiteRTRuntime` loaded on construction,
with the single-input / single-output properties kvision's exporters, verification and
benchmarks read (dtype, quantization, shape of the input and of the primary output). Inference
goes through the runtime's one LiteRT path: float inputs in model scale go in (quantized with
the input's own scale / zero point; an integer input without quantization takes raw pixel
values, whole numbers cast exactly, see ``kvision.models.contract.to_input_tensor``), float32
outputs come out, for any number of images. :func:`tflite_op_names` reads the op list straight
from the flatbuffer, so it also works for models the interpreter cannot load (Flex or custom
ops).
"""

from __future__ import annotations

import numpy as np

from kvision.errors import InputValueError
from kvision.runtime.base import primary_output
from kvision.runtime.litert import DelegateUnavailable, LiteRTRuntime
from kvision.runtime.tflite_ops import is_tflite_buffer, split_ops, tflite_op_names

__all__ = [
    "DelegateUnavailable",
    "LiteRTModel",
    "is_tflite_buffer",
    "predict_sharded",
    "split_ops",
    "tflite_op_names",
]


class LiteRTModel(LiteRTRuntime):
    """A ``.tflite`` model run with the LiteRT interpreter, loaded on construction.

    The ``input_*`` properties describe the first input and the ``output_*`` ones the primary
    output (the only one, else ``probabilities``); ``run`` returns every output by name.

    Args:
        path: ``.tflite`` file.
        num_threads: interpreter threads (default ``None``: LiteRT's default, 1).
        use_xnnpack: apply the default XNNPACK delegate (default True). ``False`` uses LiteRT's
            optimized builtin kernels without delegates (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
        reference_kernels: use the slow reference kernels (``BUILTIN_REF``, no delegates; for
            debugging numerics). Implies no XNNPACK.
        delegates: external delegates, each a shared-library path (or name) or a
            ``(library, options)`` pair, loaded with ``ai_edge_litert``'s ``load_delegate``
            (default none). Ops they do not take run on the builtin kernels (with XNNPACK when
            ``use_xnnpack``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a loadable TFLite model (the message names it); a model
            that needs Flex / custom ops raises ``kvision.runtime.UnsupportedOpsError`` naming
            them.
        DelegateUnavailable: a delegate library cannot be loaded here (the message names it).

    Example:
        >>> m = LiteRTModel("out/tflite/classifier_float32.tflite")
        >>> probs = m.predict(x_val[:32])            # float32 [32, num_classes]
        >>> m.op_names()
        ['CONV_2D', 'FULLY_CONNECTED', 'MEAN', 'SOFTMAX']
    """

    def __init__(
        self,
        path,
        num_threads: int | None = None,
        use_xnnpack: bool = True,
        reference_kernels: bool = False,
        delegates=(),
    ):
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise InputValueError(
                f"`num_threads` should be a positive integer or None. "
                f"Received: num_threads={num_threads!r}"
            )
        super().__init__(
            path,
            threads=num_threads,
            xnnpack=use_xnnpack,
            reference_kernels=reference_kernels,
            delegates=delegates,
        )
        self.num_threads = num_threads
        self.use_xnnpack = self.xnnpack
        self.load()

    # -- inspection -------------------------------------------------------------------------
    @property
    def input_details(self) -> list[dict]:
        return self.interpreter.get_input_details()

    @property
    def output_details(self) -> list[dict]:
        return self.interpreter.get_output_details()

    @property
    def _input(self):
        return self.inputs[0]

    @property
    def _output(self):
        return primary_output(self.outputs) or self.outputs[0]

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input.dtype)

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self._output.dtype)

    @property
    def input_quantization(self) -> tuple[float, int]:
        """``(scale, zero_point)`` of the input; ``(0.0, 0)`` for a float input."""
        return self._input.scale, self._input.zero_point

    @property
    def output_quantization(self) -> tuple[float, int]:
        return self._output.scale, self._output.zero_point

    @property
    def input_shape(self) -> tuple:
        """Input shape with ``None`` for a free batch dimension, e.g. ``(None, 28, 28, 1)``."""
        return self._input.shape

    @property
    def input_tensor(self) -> tuple:
        """``(shape, dtype name, quantization scale, zero point)`` of the input."""
        scale, zero_point = self.input_quantization
        return self.input_shape, self.input_dtype.name, scale, zero_point

    @property
    def num_outputs(self) -> int:
        """Size of the primary output's last axis (e.g. the number of classes)."""
        index = self._index[self._output.name]
        detail = next(d for d in self.output_details if int(d["index"]) == index)
        return int(detail["shape"][-1])

    @property
    def signature(self) -> dict:
        """``{"serving_default": {"inputs": [...], "outputs": [...]}}`` as stored in the file."""
        return self.interpreter.get_signature_list()

    def op_names(self) -> list[str]:
        """Sorted op names from the model file (see :func:`tflite_op_names`)."""
        return tflite_op_names(self.path)

    # -- inference --------------------------------------------------------------------------
    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """Run the model on float inputs ``x`` ``[N, H, W, C]`` (model scale); float32 outputs.

        A raw integer input (no quantization parameters) takes whole pixel values; ``x`` with
        fractions or outside the dtype's range raises ``ValueError`` instead of being rounded.

        Args:
            x: array-like of N images (a single image ``[H, W, C]`` is treated as N=1).
            batch_size: images per invoke. Default: 64 for a free batch dimension; a model with
                a fixed batch size B runs B at a time (the last chunk is zero-padded) and only
                accepts ``batch_size`` None or B.
        """
        return super().predict(x, batch_size)


def predict_sharded(path, x, workers: int | None = None, batch_size: int = 64) -> np.ndarray:
    """:meth:`LiteRTModel.predict` over ``x`` split across ``workers`` interpreters in threads.

    LiteRT releases the GIL while it invokes, so shards run in parallel; LiteRT's own
    ``num_threads`` does not help kernels that are single-threaded (int16x8's reference kernels
    took 28 s for Fashion-MNIST's test set either way, 14 s in two shards). Shards hold whole
    ``batch_size`` chunks, so every image goes through the same batches as an unsharded run and
    the outputs are identical.

    Args:
        path: ``.tflite`` file.
        x: float inputs ``[N, H, W, C]`` in model scale (as for :meth:`LiteRTModel.predict`).
        workers: interpreters (default: the CPUs this process may use; 1 runs in this thread).
        batch_size: images per invoke (default 64); a fixed-batch model uses its own.

    Returns:
        The primary output for all N images, float32, in input order.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    x = np.asarray(x)
    first = LiteRTModel(path)
    if first.input_shape and first.input_shape[0] is not None:  # fixed batch: one interpreter
        return first.predict(x)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    chunks = -(-len(x) // batch_size)
    workers = max(1, min(int(workers), chunks))
    if workers == 1:
        return first.predict(x, batch_size)
    per = -(-chunks // workers) * batch_size
    shards = [x[i : i + per] for i in range(0, len(x), per)]
    models = [first] + [LiteRTModel(path) for _ in shards[1:]]
    with ThreadPoolExecutor(len(shards)) as pool:
        outputs = list(pool.map(lambda m, s: m.predict(s, batch_size), models, shards))
    return np.concatenate(outputs)
