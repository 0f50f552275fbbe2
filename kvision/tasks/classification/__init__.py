"""Image classification: one label per image, softmax probabilities, top-1 accuracy."""

from kvision.tasks.classification.task import ClassificationMetric, ClassificationTask

__all__ = ["ClassificationMetric", "ClassificationTask"]
