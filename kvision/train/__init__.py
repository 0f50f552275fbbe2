"""Training: Keras ``fit`` with checkpoints, resumption, schedules and logs."""

from kvision.train.fit import (
    BEST_CHECKPOINT,
    FitResult,
    build_optimizer,
    class_weights_for,
    compile_model,
    fit,
    training_done,
)

__all__ = [
    "BEST_CHECKPOINT",
    "FitResult",
    "build_optimizer",
    "class_weights_for",
    "compile_model",
    "fit",
    "training_done",
]
