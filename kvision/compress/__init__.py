"""Compression: pruning, QAT, clustering, PTQ and distillation, with verified TFLite artifacts.

Entry point :func:`compress` (trained float model -> :class:`CompressionResult`); a user's model
file goes through :func:`compress_file`. The techniques are also usable one by one:
``prune.prune_model`` / ``prune.strip``, ``qat.quantize_model``, ``cluster.cluster_model`` /
``cluster.strip``, ``ptq.ptq_artifacts``, ``distill.Distiller``, and ``sparsity`` measures what
survives in Keras and in the ``.tflite`` weights. ``flatten.flatten_model`` inlines nested models
(every technique sees leaf layers), ``folding`` says which BatchNormalization layers tfmot can fold
for QAT, and ``resume`` keeps each finished technique's verified state so a killed run resumes.

tensorflow-model-optimization is optional (``pip install kvision[compress]``); it is imported only
by ``kvision.compress._tfmot``, on first use. Importing this package imports neither TensorFlow
nor tfmot.
"""

from kvision.compress.api import compress, compress_file, load_model_for_compression
from kvision.compress.config import (
    ClusterConfig,
    CompressConfig,
    DistillConfig,
    PruneConfig,
    PTQConfig,
    QATConfig,
)
from kvision.compress.layer_report import LayerReport, LayerRow
from kvision.compress.result import REPORT_FILE, CompressionResult

__all__ = [
    "REPORT_FILE",
    "ClusterConfig",
    "CompressConfig",
    "CompressionResult",
    "DistillConfig",
    "LayerReport",
    "LayerRow",
    "PTQConfig",
    "PruneConfig",
    "QATConfig",
    "compress",
    "compress_file",
    "load_model_for_compression",
]
