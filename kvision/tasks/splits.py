"""The train / val / test splits of a task run, read the same way for every task with a dataset
reader (detection, segmentation, ...).

``data.path`` is either a folder holding one dataset per split (``train/``, optional ``val/``
and ``test/``) or a single dataset, from which ``data.val_split`` of the images is held out
(seeded); ``data.test_path`` then names the test set (default: the validation images). A dataset
is any object with ``examples`` (each with ``width`` / ``height``), ``labels`` and ``problems``
(what the reader fixed or left out, listed in ``<run>/bad_files.csv``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError

SPLITS = ("train", "val", "test")


@dataclass
class TaskSplits:
    """The three splits of a task run (``val``/``test`` may be the same dataset)."""

    train: object
    val: object | None
    test: object | None
    source: str
    format: str
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.train.labels)

    @property
    def num_classes(self) -> int:
        return len(self.train.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the first training image (the default input size)."""
        ex = self.train.examples[0]
        return int(ex.height), int(ex.width)

    @property
    def test_name(self) -> str:
        return "test" if self.test is not self.val else "val"

    def write_problems(self, path) -> Path:
        """Every item the readers fixed or skipped, as CSV (``file,item,reason,...``)."""
        from kvision.tasks.detection.example import write_problems

        return write_problems(self.problems, path)

    def summary(self) -> dict:
        counts = {"train": len(self.train.examples)}
        for name in ("val", "test"):
            split = getattr(self, name)
            counts[name] = len(split.examples) if split is not None else 0
        return {
            "dataset": self.format,
            "source": self.source,
            "num_classes": self.num_classes,
            "labels": self.labels,
            "splits": counts,
            "bad_files": len(self.problems),
        }


def read_splits(data_cfg, read: Callable, seed: int, fmt: str, missing_hint: str) -> TaskSplits:
    """Read the splits named by ``data_cfg`` with ``read(path) -> dataset`` (module docstring).

    Args:
        data_cfg: ``cfg.data`` (``path``, ``test_path``, ``val_split``, ``limit``,
            ``test_limit``).
        read: the task's dataset reader for one folder or file.
        seed: seed of the validation hold-out.
        fmt: the format name for the report.
        missing_hint: how to make a dataset (said when ``data.path`` is missing).

    Raises:
        InputValueError: no ``data.path``, nothing to score, or splits whose labels differ.
        FileNotFoundError: ``data.path`` / ``data.test_path`` missing.
    """
    if not data_cfg.path:
        raise InputValueError(f"This task needs `data.path`: {missing_hint}")
    root = Path(data_cfg.path)
    if not root.exists():
        raise FileNotFoundError(f"`data.path` not found: {root}. {missing_hint}")
    notes = []
    if (root / "train").is_dir():
        parts = {name: read(root / name) if (root / name).is_dir() else None for name in SPLITS}
        train, val, test = parts["train"], parts["val"], parts["test"]
    else:
        train, val = hold_out(read(root), data_cfg.val_split, seed)
        test = None
    if data_cfg.test_path:
        if not Path(data_cfg.test_path).exists():
            raise FileNotFoundError(f"`data.test_path` not found: {data_cfg.test_path}")
        test = read(data_cfg.test_path)
    if test is None:
        if val is None:
            raise InputValueError(
                f"{root} gives no validation or test images to score: add val/ or test/ "
                "sub-folders, set data.val_split > 0, or give data.test_path"
            )
        test = val
        notes.append("no test split: the validation images are scored")
    train = limited(train, data_cfg.limit)
    test = limited(test, data_cfg.test_limit) if test is not val else test
    for name, split in (("val", val), ("test", test)):
        if split is not None and list(split.labels) != list(train.labels):
            raise InputValueError(
                f"The {name} split's labels {split.labels} differ from the training split's "
                f"{train.labels} (same classes in the same order are needed)"
            )
    problems = [p for s in {id(x): x for x in (train, val, test) if x}.values() for p in s.problems]
    return TaskSplits(train, val, test, str(root), fmt, problems, notes)


def limited(dataset, limit):
    """``dataset`` with its first ``limit`` examples (as is when ``limit`` is falsy or larger)."""
    if dataset is None or not limit or limit >= len(dataset.examples):
        return dataset
    return replace(dataset, examples=dataset.examples[: int(limit)])


def hold_out(dataset, fraction: float, seed: int):
    """``(train, val)`` with ``fraction`` of the images held out (seeded permutation)."""
    n = len(dataset.examples)
    n_val = int(round(n * fraction))
    if not fraction or n_val == 0 or n_val >= n:
        return dataset, None
    order = np.random.default_rng(seed).permutation(n)
    pick = sorted(order[:n_val])
    keep = sorted(order[n_val:])
    examples = dataset.examples
    return (
        replace(dataset, examples=[examples[i] for i in keep], problems=list(dataset.problems)),
        replace(dataset, examples=[examples[i] for i in pick], problems=[]),
    )
