"""Data stage: load datasets (IDX, image folders, arrays), split them, build ``tf.data``."""

from kvision.data.datasets import (
    FASHION_MNIST_LABELS,
    DatasetSplits,
    Split,
    find_idx_dir,
    from_arrays,
    load_dataset,
    split_train_val,
)
from kvision.data.idx import DatasetError, read_idx
from kvision.data.pipeline import build_dataset, model_inputs, to_unit

__all__ = [
    "FASHION_MNIST_LABELS",
    "DatasetError",
    "DatasetSplits",
    "Split",
    "build_dataset",
    "find_idx_dir",
    "from_arrays",
    "load_dataset",
    "model_inputs",
    "read_idx",
    "split_train_val",
    "to_unit",
]
