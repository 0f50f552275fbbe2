"""Data stage: load datasets (IDX, image folders, arrays), split them, build ``tf.data``.

The names below load their submodule on first use (PEP 562), so importing a light submodule
such as ``kvision.data.idx`` does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_SUBMODULES = {
    "FASHION_MNIST_LABELS": "datasets",
    "DatasetError": "idx",
    "DatasetSplits": "datasets",
    "Split": "datasets",
    "build_dataset": "pipeline",
    "find_idx_dir": "datasets",
    "from_arrays": "datasets",
    "load_dataset": "datasets",
    "model_inputs": "pipeline",
    "read_idx": "idx",
    "split_train_val": "datasets",
    "to_unit": "pipeline",
}

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


def __getattr__(name: str):
    if name not in _SUBMODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULES[name]}"), name)
    globals()[name] = value  # cached: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
