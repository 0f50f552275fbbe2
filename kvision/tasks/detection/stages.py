"""What the task pipeline (:mod:`kvision.spine`) asks the detection task for: splits, model,
training pipelines, evaluation batches, the report section and the prediction gallery.

``data.path`` is either a folder holding one dataset per split (``train/``, optional ``val/``
and ``test/``, each in any layout :func:`~kvision.tasks.detection.formats.read_detection_dataset`
reads, e.g. the output of ``tools/make_detection_data.py``) or a single dataset, from which
``data.val_split`` of the images is held out (seeded); ``data.test_path`` then names the test
set (default: the validation images). Every annotation a reader fixed or left out is written to
``<run>/bad_files.csv`` and counted in the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.base import head_options
from kvision.tasks.splits import TaskSplits, limited, read_splits

#: classification datasets: under ``task=detection`` only the default one is accepted (as auto)
_CLASSIFICATION_DATASETS = ("mnist", "folder", "npz")


def load_splits(data_cfg, seed: int = 0) -> TaskSplits:
    """Read the detection splits named by ``data_cfg`` (module docstring).

    Raises:
        InputValueError: no ``data.path``, a classification dataset name, or splits whose label
            sets differ.
        FileNotFoundError: ``data.path`` / ``data.test_path`` missing (the message says how to
            generate a dataset).
        kvision.tasks.detection.formats.DetectionDataError: not a detection dataset.
    """
    from kvision.tasks.detection.formats import _layouts, read_detection_dataset

    if data_cfg.dataset in _CLASSIFICATION_DATASETS:
        raise InputValueError(
            f"`data.dataset={data_cfg.dataset}` is a classification dataset; task=detection "
            "reads coco, voc or yolo annotations (or leave data.dataset unset to detect the format)"
        )
    fmt = data_cfg.dataset if data_cfg.dataset in ("coco", "voc", "yolo") else "auto"
    out = data_cfg.path or "data/det"
    hint = (
        "a dataset folder (COCO / VOC / YOLO), or one with train/ val/ test/ sub-folders. "
        f"Generate one with `python tools/make_detection_data.py --out {out}`"
    )
    splits = read_splits(
        data_cfg, lambda p: read_detection_dataset(p, fmt, on_error=data_cfg.on_error), seed,
        fmt, hint,
    )  # fmt: skip
    if fmt == "auto":  # name the format the layout was read as
        root = Path(splits.source)
        first = root / "train" if (root / "train").is_dir() else root
        splits.format = next((name for name, layout in _layouts(first).items() if layout), "auto")
    return splits


def build_model(model_cfg, splits: TaskSplits):
    """The configured detector: ``model.name`` is the backbone, ``model.head`` the head's
    options: ``type`` (``anchors``, the default, or the anchor-free ``grid``), ``channels``,
    ``depth``, ``anchors`` / ``grid`` (their config dicts) and ``postprocess``."""
    from kvision.tasks.detection.model import build_detector

    h, w = model_cfg.input_size or splits.image_size
    c = model_cfg.channels or 3
    allowed = {"type", "channels", "depth", "anchors", "grid", "postprocess"}
    head = head_options(model_cfg, allowed, "detection")
    return build_detector(
        (int(h), int(w), int(c)),
        splits.labels,
        backbone=model_cfg.name,
        backbone_options=model_cfg.options,
        anchor_config=head.get("anchors"),
        channels=int(head.get("channels", 64)),
        depth=int(head.get("depth", 2)),
        postprocess=head.get("postprocess"),
        head=head.get("type", "anchors"),
        grid_config=head.get("grid"),
        resize=model_cfg.resize,
    )


def datasets(cfg, splits: TaskSplits, contract, run_dir: Path | None, augment=True):
    """``(train_ds, val_ds, augmentation report entry)``; the augmentation preview (the
    first training images with their boxes after augmentation) goes to ``run_dir``."""
    from kvision.tasks.detection.augment import build_detection_augmenter
    from kvision.tasks.detection.data import detection_dataset
    from kvision.tasks.detection.task import contract_anchors

    anchors = contract_anchors(contract)
    bs, seed = cfg.data.batch_size, cfg.train.seed
    info = {"enabled": bool(cfg.augment.enabled and augment), "transforms": [], "preview_png": None}
    augmenter = None
    if info["enabled"]:
        augmenter = build_detection_augmenter(cfg.augment.transforms, seed=seed)
        info["transforms"] = augmenter.to_config()
        if cfg.augment.transforms == "auto":
            names = ", ".join(t["name"] for t in info["transforms"])
            info["reason"] = f"auto for detection: {names}, each moving the boxes with the image"
    train_ds = detection_dataset(
        splits.train, contract, anchors, batch_size=bs, shuffle=True, augmenter=augmenter,
        seed=seed, cache=cfg.data.cache,
    )  # fmt: skip
    val_ds = None
    if splits.val is not None:
        val_ds = detection_dataset(splits.val, contract, anchors, batch_size=bs)
    if info["enabled"] and cfg.augment.preview and run_dir is not None:
        _preview(splits.train, contract, augmenter, Path(run_dir) / "augment_preview.png", seed)
        info["preview_png"] = "augment_preview.png"
    return train_ds, val_ds, info


def _preview(dataset, contract, augmenter, path: Path, seed: int, n: int = 8) -> None:
    from kvision.tasks.detection.data import example_dataset
    from kvision.tasks.detection.draw import draw_boxes, write_grid

    ds = example_dataset(limited(dataset, n), contract, cache=False)
    import tensorflow as tf

    ds = ds.map(lambda p, b, c: (tf.cast(p, tf.float32) / 255.0, b, c))
    tiles = []
    for image, boxes, classes in augmenter.map(ds):
        pixels = (image.numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        h, w = pixels.shape[:2]
        px = boxes.numpy() * np.array([w, h, w, h], np.float32)
        tiles.append(draw_boxes(pixels, px, classes.numpy(), dataset.labels))
    write_grid(tiles, path)


def eval_batches(split, contract, batch_size: int = 32):
    """``(inputs float32 [B, H, W, C], examples)`` over a split (ground truth in pixels)."""
    from kvision.tasks.detection.data import eval_batches as batches

    return batches(split, contract, batch_size)


def write_gallery(run, split, contract, path: Path, n: int = 8) -> Path:
    """Draw the first ``n`` images of ``split`` with their decoded detections scoring at least
    ``kvision.predict.DRAW_SCORE`` (colour per class, label and score) and ground truth (thin
    white) into one PNG; ``run(x)`` gives the named raw outputs of a batch."""
    from kvision.predict import DRAW_SCORE
    from kvision.preprocess import load_pixels
    from kvision.tasks.detection.draw import draw_boxes, draw_detections, write_grid
    from kvision.tasks.detection.task import decode_batch

    first = limited(split, n)
    x = np.concatenate([b for b, _ in eval_batches(first, contract)])
    examples = first.examples
    detections = decode_batch(run(x), contract, [(ex.width, ex.height) for ex in examples])
    tiles = []
    for ex, det in zip(examples, detections, strict=True):
        pixels = load_pixels(ex.image_path, 3)
        truth = draw_boxes(pixels, ex.boxes, color=(255, 255, 255), width=1)
        tiles.append(draw_detections(truth, det, split.labels, DRAW_SCORE))
    return write_grid(tiles, path)


def report_lines(section: dict) -> list[str]:
    """Markdown of the detection evaluation section (``kvision.spine`` writes it)."""
    m = section.get("metrics", {})

    def f(key):
        v = m.get(key)
        return "-" if v is None else f"{v:.4f}"

    lines = [
        f"mAP@[.5:.95] **{f('mAP@[.5:.95]')}**, mAP@.5 **{f('mAP@.5')}**, mAP@.75 {f('mAP@.75')} "
        f"on {section.get('n', 0):,} {section.get('split', 'test')} images (pycocotools).",
        "",
        "| AP by size | small | medium | large |",
        "|---|--:|--:|--:|",
        f"| mAP@[.5:.95] | {f('AP_small')} | {f('AP_medium')} | {f('AP_large')} |",
        "",
    ]
    per_class = m.get("per_class_AP") or {}
    if per_class:
        lines += ["| class | AP@[.5:.95] |", "|---|--:|"]
        lines += [f"| {k} | {'-' if v is None else f'{v:.4f}'} |" for k, v in per_class.items()]
        lines.append("")
    return lines
