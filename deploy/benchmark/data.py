"""The labelled images a benchmark scores every artifact on, prepared per input contract.

Images are kept raw (uint8 arrays or image files) and turned into model inputs for each
artifact's own contract (size, channels, scale/offset, input domain) by ``kvision.preprocess``,
the decode -> resize -> normalize path training, predict and serve use, so artifacts with
different input sizes can be scored on the same images. Results are cached per contract.

Example:
    >>> data = EvalData.from_dataset("fashion_mnist", limit=1000)
    >>> x = data.inputs(contract)        # float32 [1000, 28, 28, 1] in the contract's scale
    >>> data.labels[:3]
    array([9, 2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kvision.errors import InputValueError

DATASET_KINDS = ("fashion_mnist", "mnist", "folder", "npz")


@dataclass
class EvalData:
    """Labelled evaluation images.

    Args:
        labels: int class ids ``[N]``.
        images: uint8 images ``[N, H, W, C]`` (or ``None`` when ``files`` is given).
        files: image files, decoded per contract with ``kvision.preprocess.file_inputs``.
        class_names: label names (optional, for reports).
        source: a short description for the report (e.g. ``"fashion_mnist test[:1000]"``).
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[str] | None = None
    class_names: list[str] = field(default_factory=list)
    source: str = "arrays"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if (self.images is None) == (self.files is None):
            raise InputValueError("Pass exactly one of `images` (uint8 arrays) or `files`.")
        n = len(self.images) if self.images is not None else len(self.files)
        if n != len(self.labels) or n == 0:
            raise InputValueError(
                f"`labels` should have one entry per image (N >= 1). Received: {n} images, "
                f"{len(self.labels)} labels."
            )
        if self.images is not None:
            x = np.asarray(self.images)
            if x.ndim == 3:
                x = x[..., None]
            if x.ndim != 4 or x.shape[-1] not in (1, 3):
                raise InputValueError(
                    f"`images` should be uint8 [N, H, W, 1 or 3]. Received: shape={x.shape}"
                )
            self.images = x

    def __len__(self) -> int:
        return len(self.labels)

    def summary(self) -> dict:
        return {"source": self.source, "n": len(self), "labels": list(self.class_names)}

    def inputs(self, contract) -> np.ndarray:
        """Float32 model inputs for ``contract`` (``InputContract``), cached per contract."""
        key = (
            contract.height,
            contract.width,
            contract.channels,
            contract.scale,
            contract.offset,
            contract.input_domain,
        )
        if key not in self._cache:
            self._cache[key] = self._prepare(contract)
        return self._cache[key]

    def _prepare(self, contract) -> np.ndarray:
        from kvision.preprocess import file_inputs, model_inputs

        if self.images is not None:
            return np.asarray(model_inputs(self.images, contract), dtype=np.float32)
        return file_inputs(self.files, contract)

    @classmethod
    def from_dataset(cls, dataset: str, path=None, limit: int | None = None) -> EvalData:
        """The test split (else validation split) of a kvision dataset.

        Args:
            dataset: ``fashion_mnist``, ``mnist``, ``folder`` (class sub-folders) or ``npz``.
            path: IDX folder, image folder or ``.npz`` (default location for the IDX sets).
            limit: use the first ``limit`` images (default all).
        """
        from kvision.config import DataConfig
        from kvision.data import load_dataset

        if dataset not in DATASET_KINDS:
            raise InputValueError(
                f"`dataset` should be one of {DATASET_KINDS}. Received: dataset={dataset!r}"
            )
        if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
            raise InputValueError(
                f"`limit` should be a positive integer. Received: limit={limit!r}"
            )
        if dataset == "folder":
            from kvision.data.folders import scan_image_folder

            if path is None:
                raise InputValueError(
                    "`path` is required for dataset='folder' (class sub-folders)."
                )
            scan = scan_image_folder(path)
            n = len(scan.files)
            keep = n if limit is None else min(int(limit), n)
            idx = np.unique(np.linspace(0, n - 1, keep).round().astype(int))  # spread over classes
            return cls(
                scan.labels[idx],
                files=[scan.files[i] for i in idx],
                class_names=list(scan.class_names),
                source=f"folder {path}" + (f"[:{keep}]" if limit else ""),
            )
        cfg = DataConfig(dataset=dataset, path=None if path is None else str(path), val_split=0)
        splits = load_dataset(cfg)
        split = splits.test if splits.test is not None else splits.val
        name = "test" if splits.test is not None else "val"
        if split is None:
            raise InputValueError(f"Dataset {dataset!r} ({path}) has no test or validation split.")
        if limit is not None:
            split = split.subset(np.arange(min(int(limit), len(split))))
        source = f"{dataset} {name}" + (f"[:{len(split)}]" if limit else "")
        return cls(
            split.labels,
            images=split.images,
            files=split.files,
            class_names=list(splits.class_names),
            source=source,
        )
