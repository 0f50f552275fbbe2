"""Evaluation: classification metrics, latency measurement and the plots made from them.

from kvision.evaluate import classification_metrics, measure_latency, plot_confusion_matrix
"""

from kvision.evaluate.latency import latency_stats, measure_latency
from kvision.evaluate.metrics import classification_metrics
from kvision.evaluate.plots import (
    accuracy_latency_figure,
    accuracy_size_figure,
    artifact_sizes_figure,
    confusion_matrix_figure,
    figure_to_png,
    latency_figure,
    load_history,
    plot_confusion_matrix,
    plot_training_curves,
    training_curves_figure,
)

__all__ = [
    "classification_metrics",
    "measure_latency",
    "latency_stats",
    "plot_confusion_matrix",
    "plot_training_curves",
    "load_history",
    "figure_to_png",
    "confusion_matrix_figure",
    "training_curves_figure",
    "artifact_sizes_figure",
    "latency_figure",
    "accuracy_latency_figure",
    "accuracy_size_figure",
]
