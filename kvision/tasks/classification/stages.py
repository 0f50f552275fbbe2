"""What the task pipeline (:mod:`kvision.spine`) asks the classification task for.

The data, model and augmentation are kvision's classification ones (``kvision.data``,
``kvision.models``, ``kvision.augment``), the same the main job uses, so a classifier runs
through the task-agnostic stages like any other task (the conformance test does; the main job's
``kvision.workflow`` adds pruning, clustering and distillation on top).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetView:
    """What a task's splits over a ``kvision.data`` dataset (``self.data``) share: its labels
    and its bad-input list."""

    data: object

    @property
    def labels(self) -> list[str]:
        return list(self.data.class_names)

    @property
    def problems(self) -> list:
        return list(self.data.bad_files)

    def write_problems(self, path) -> Path:
        from kvision.data.folders import write_bad_files

        return write_bad_files(self.data.bad_files, path)


@dataclass
class ClassificationSplits(DatasetView):
    """``kvision.data`` splits seen through the task pipeline's interface."""

    data: object
    notes: list = field(default_factory=list)

    @property
    def train(self):
        return self.data.train

    @property
    def val(self):
        return self.data.val

    @property
    def test(self):
        return self.data.test if self.data.test is not None else self.data.val

    @property
    def test_name(self) -> str:
        return "test" if self.data.test is not None else "val"

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def summary(self) -> dict:
        return self.data.summary()


def load_splits(data_cfg, seed: int = 0) -> ClassificationSplits:
    from kvision.data import load_dataset

    data = load_dataset(data_cfg, seed=seed)
    notes = [] if data.test is not None else ["no test split: the validation images are scored"]
    return ClassificationSplits(data, notes)


def build_model(model_cfg, splits: ClassificationSplits):
    """``model.name`` from the model registry for the dataset's size, channels and classes."""
    from kvision.models import build_model as build

    h, w = model_cfg.input_size or splits.data.image_size
    c = model_cfg.channels or splits.data.channels
    from kvision.models.contract import with_resize

    model = build(model_cfg.name, (int(h), int(w), int(c)), splits.num_classes,
                  labels=splits.labels, **model_cfg.options)  # fmt: skip
    return with_resize(model, model_cfg.resize)


def datasets(cfg, splits: ClassificationSplits, contract, run_dir=None, augment: bool = True):
    from kvision.data import build_dataset
    from kvision.workflow import augmentation

    augmenter, info = augmentation(cfg, splits.data, contract, run_dir if augment else None)
    if not augment:
        augmenter, info = None, {**info, "enabled": False}
    bs, seed = cfg.data.batch_size, cfg.train.seed
    train_ds = build_dataset(
        splits.train, contract, bs, training=True, augmenter=augmenter, seed=seed,
        cache=cfg.data.cache, on_error=cfg.data.on_error,
    )  # fmt: skip
    val_ds = None
    if splits.val is not None:
        val_ds = build_dataset(splits.val, contract, bs, cache=cfg.data.cache,
                               on_error=cfg.data.on_error)  # fmt: skip
    return train_ds, val_ds, info


def eval_batches(split, contract, batch_size: int = 32):
    """``(inputs float32 [B, H, W, C], integer labels [B])`` over ``split``, in order."""
    from kvision.data import build_dataset

    for x, y in build_dataset(split, contract, batch_size, training=False, cache=False):
        yield x.numpy(), y.numpy()


def write_gallery(run, split, contract, path, n: int = 16) -> Path:
    """The first ``n`` images with the predicted label (green when right, red when wrong)."""
    from PIL import Image, ImageDraw

    from kvision.tasks.detection.draw import write_grid

    x, y = next(eval_batches(split, contract, n))
    probs = next(iter(run(x).values()))
    tiles = []
    for image, label, p in zip(x, y, probs, strict=True):
        pixels = ((image - contract.offset) / contract.scale).clip(0, 255).astype(np.uint8)
        tile = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
        tile = tile.resize((max(64, tile.width), max(64, tile.height)), Image.Resampling.NEAREST)
        k = int(np.argmax(p))
        canvas = Image.new("RGB", (tile.width, tile.height + 14), (255, 255, 255))
        canvas.paste(tile, (0, 14))
        colour = (0, 130, 0) if k == int(label) else (200, 0, 0)
        ImageDraw.Draw(canvas).text((2, 1), f"{contract.labels[k]} {p[k]:.2f}", fill=colour)
        tiles.append(np.asarray(canvas))
    return write_grid(tiles, path, columns=8)


def report_lines(section: dict) -> list[str]:
    m = section.get("metrics", {})
    lines = [
        f"Accuracy **{m.get('accuracy', 0):.4f}**, macro F1 **{m.get('macro_f1', 0):.4f}** on "
        f"{section.get('n', 0):,} {section.get('split', 'test')} images.",
        "",
    ]
    per_class = m.get("per_class") or []
    if per_class:
        lines += ["| class | precision | recall | F1 | support |", "|---|--:|--:|--:|--:|"]
        lines += [
            f"| {r['label']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | "
            f"{r['support']:,} |"
            for r in per_class
        ]
        lines.append("")
    return lines
