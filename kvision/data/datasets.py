"""Dataset loaders: Fashion-MNIST / MNIST (IDX), image folders and NumPy arrays, split with a seed.

Everything ends up as :class:`DatasetSplits`: train / val / test :class:`Split` objects holding
either uint8 image arrays or image file paths, plus class names and the bad files found::

    splits = load_dataset(DataConfig(dataset="fashion_mnist"), seed=0)
    len(splits.train), splits.class_names[:2]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvision.config import DataConfig
from kvision.data.idx import DatasetError, read_idx

FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_LABELS = [str(i) for i in range(10)]

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DEFAULT_DIRS = {
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist", "~/.keras/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist", "~/.keras/datasets/mnist"],
}
_HOW_TO_GET = {
    "fashion_mnist": (
        "Install it with `sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu; "
        "files land in "
        "/usr/share/datasets/fashion-mnist), pass data.path=DIR with the four IDX .gz files, "
        "or set "
        "KVISION_ALLOW_DOWNLOAD=1 on a machine with internet to use keras' downloader."
    ),
    "mnist": (
        "Pass data.path=DIR with the four MNIST IDX .gz files (train-images-idx3-ubyte.gz, "
        "...), or set "
        "KVISION_ALLOW_DOWNLOAD=1 on a machine with internet to use keras' downloader."
    ),
}


@dataclass
class Split:
    """One split: uint8 images ``(N, H, W, C)`` or image file paths, and int64 labels."""

    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[str] | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.images) if self.images is not None else len(self.files or [])
        if n != len(self.labels):
            raise DatasetError(f"Split has {n} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> Split:
        index = np.asarray(index)
        if self.images is not None:
            return Split(self.labels[index], images=self.images[index])
        return Split(self.labels[index], files=[self.files[i] for i in index])


@dataclass
class DatasetSplits:
    """A loaded dataset.

    Args:
        name: dataset kind (``fashion_mnist``, ``mnist``, ``folder``, ``npz``).
        source: where it was read from.
        class_names: label names, index = class id.
        channels: 1 or 3.
        image_size: native ``(height, width)``.
        train, val, test: the splits (``test`` may be ``None``).
        bad_files: ``BadFile`` records of skipped files (image folders).
    """

    name: str
    source: str
    class_names: list[str]
    channels: int
    image_size: tuple[int, int]
    train: Split
    val: Split | None
    test: Split | None
    bad_files: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "source": self.source,
            "num_classes": self.num_classes,
            "labels": list(self.class_names),
            "splits": {
                k: (len(s) if s is not None else 0)
                for k, s in (("train", self.train), ("val", self.val), ("test", self.test))
            },
            "bad_files": len(self.bad_files),
        }


def load_dataset(cfg: DataConfig, seed: int = 0) -> DatasetSplits:
    """Load the dataset ``cfg`` describes and split train into train/val with ``seed``.

    Raises ``DatasetError`` (before any training) when the data is missing, with how to get it.
    """
    if cfg.dataset in ("fashion_mnist", "mnist"):
        splits = _load_idx_dataset(cfg.dataset, cfg.path)
    elif cfg.dataset == "folder":
        splits = _load_folder_dataset(cfg)
    elif cfg.dataset == "npz":
        splits = _load_npz(cfg.path)
    else:
        raise DatasetError(
            f"`data.dataset` should be one of fashion_mnist, mnist, folder, npz. "
            f"Received: dataset={cfg.dataset!r}"
        )
    _check_labels(splits)
    if cfg.limit is not None:
        splits.train = splits.train.subset(np.arange(min(cfg.limit, len(splits.train))))
    if cfg.test_limit is not None and splits.test is not None:
        splits.test = splits.test.subset(np.arange(min(cfg.test_limit, len(splits.test))))
    splits.train, splits.val = split_train_val(splits.train, cfg.val_split, seed)
    return splits


def split_train_val(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Deterministic stratified split: the same seed always gives the same partition."""
    if val_fraction <= 0:
        return split, None
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in np.unique(split.labels):
        idx = np.flatnonzero(split.labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        val_idx.extend(idx[:n_val].tolist())
    val_mask = np.zeros(len(split), dtype=bool)
    val_mask[val_idx] = True
    if val_mask.all() or not val_mask.any():
        raise DatasetError(
            f"`data.val_split={val_fraction}` leaves an empty split for "
            f"{len(split)} training images."
        )
    return split.subset(np.flatnonzero(~val_mask)), split.subset(np.flatnonzero(val_mask))


def find_idx_dir(dataset: str, path: str | None = None) -> Path:
    """The folder with ``dataset``'s four IDX files, or a ``DatasetError`` saying how to get it."""
    candidates = [path] if path else _DEFAULT_DIRS[dataset]
    for c in candidates:
        d = Path(os.path.expanduser(c))
        if all(_idx_file(d, stem) is not None for pair in _IDX_FILES.values() for stem in pair):
            return d
    where = path or " or ".join(_DEFAULT_DIRS[dataset])
    raise DatasetError(f"{dataset} not found in {where}. {_HOW_TO_GET[dataset]}")


def _idx_file(d: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (d / name).is_file():
            return d / name
    return None


def _load_idx_dataset(dataset: str, path: str | None) -> DatasetSplits:
    try:
        d = find_idx_dir(dataset, path)
    except DatasetError:
        if path is None and os.environ.get("KVISION_ALLOW_DOWNLOAD") == "1":
            return _download_with_keras(dataset)
        raise
    parts = {}
    for split, (img_stem, lbl_stem) in _IDX_FILES.items():
        images = read_idx(_idx_file(d, img_stem))
        labels = read_idx(_idx_file(d, lbl_stem))
        if images.ndim != 3 or len(images) != len(labels):
            raise DatasetError(
                f"{d}: {img_stem} has shape {images.shape} but {lbl_stem} has {len(labels)} labels."
            )
        parts[split] = Split(labels, images=images[..., None])
    names = FASHION_MNIST_LABELS if dataset == "fashion_mnist" else MNIST_LABELS
    return DatasetSplits(
        dataset,
        str(d),
        names,
        1,
        parts["train"].images.shape[1:3],
        parts["train"],
        None,
        parts["test"],
    )


def _download_with_keras(dataset: str) -> DatasetSplits:  # pragma: no cover - needs internet
    from kvision._keras import keras

    loader = keras.datasets.fashion_mnist if dataset == "fashion_mnist" else keras.datasets.mnist
    try:
        (xtr, ytr), (xte, yte) = loader.load_data()
    except Exception as exc:
        raise DatasetError(
            f"Downloading {dataset} with keras failed ({exc}). {_HOW_TO_GET[dataset]}"
        ) from exc
    names = FASHION_MNIST_LABELS if dataset == "fashion_mnist" else MNIST_LABELS
    return DatasetSplits(
        dataset,
        "keras downloader",
        names,
        1,
        xtr.shape[1:3],
        Split(ytr, images=xtr[..., None]),
        None,
        Split(yte, images=xte[..., None]),
    )


def _load_folder_dataset(cfg: DataConfig) -> DatasetSplits:
    from kvision.data.folders import scan_image_folder

    if not cfg.path:
        raise DatasetError(
            "`data.path` is required for dataset=folder (a folder with one sub-folder per class)."
        )
    train = scan_image_folder(cfg.path, on_error=cfg.on_error)
    bad = list(train.bad_files)
    test = None
    if cfg.test_path:
        scan = scan_image_folder(
            cfg.test_path, on_error=cfg.on_error, class_names=train.class_names
        )
        bad.extend(scan.bad_files)
        test = Split(scan.labels, files=scan.files)
    return DatasetSplits(
        "folder",
        str(cfg.path),
        train.class_names,
        train.channels,
        tuple(train.image_size),
        Split(train.labels, files=train.files),
        None,
        test,
        bad,
    )


def _load_npz(path: str | None) -> DatasetSplits:
    if not path:
        raise DatasetError(
            "`data.path` is required for dataset=npz (a .npz with x_train, y_train)."
        )
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"NumPy dataset not found: {p}")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f"Cannot read {p} as .npz: {exc}") from exc
    for key in ("x_train", "y_train"):
        if key not in data:
            raise DatasetError(f"{p} has no array `{key}` (found: {', '.join(data.files)}).")
    return from_arrays(
        data["x_train"],
        data["y_train"],
        data["x_test"] if "x_test" in data else None,
        data["y_test"] if "y_test" in data else None,
        source=str(p),
    )


def from_arrays(
    x_train, y_train, x_test=None, y_test=None, class_names=None, source: str = "arrays"
) -> DatasetSplits:
    """Wrap NumPy arrays (uint8, ``(N,H,W)`` or ``(N,H,W,C)``) as a dataset (no val split yet)."""

    def prep(x, name):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise DatasetError(
                f"`{name}` should have shape (N, H, W) or (N, H, W, 1|3). "
                f"Received: {name}.shape={x.shape}"
            )
        if x.dtype != np.uint8:
            if x.min() < 0 or x.max() > 255:
                raise DatasetError(
                    f"`{name}` should hold pixel values 0..255. Received range {x.min()}..{x.max()}"
                )
            if np.issubdtype(x.dtype, np.floating) and not np.all(x == np.round(x)):
                # floats in [0, 1] would truncate to black images: say so instead
                raise DatasetError(
                    f"`{name}` should hold whole pixel values 0..255 (uint8). Received "
                    f"{x.dtype} values with fractions (range {x.min()}..{x.max()}); scale "
                    "[0, 1] images by 255 and round before saving them."
                )
            x = x.astype(np.uint8)
        return x

    xtr = prep(x_train, "x_train")
    num_classes = int(np.max(y_train)) + 1 if class_names is None else len(class_names)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    test = Split(y_test, images=prep(x_test, "x_test")) if x_test is not None else None
    return DatasetSplits(
        "npz", source, names, xtr.shape[-1], xtr.shape[1:3], Split(y_train, images=xtr), None, test
    )


def _check_labels(splits: DatasetSplits) -> None:
    k = splits.num_classes
    for name, split in (("train", splits.train), ("test", splits.test)):
        if split is None:
            continue
        if len(split) == 0:
            raise DatasetError(f"The {name} split of {splits.source} is empty.")
        bad = (split.labels < 0) | (split.labels >= k)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{splits.source}: {int(bad.sum())} {name} label(s) out of range 0..{k - 1} "
                f"(first at index {first}: {int(split.labels[first])})."
            )
