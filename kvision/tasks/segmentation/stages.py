"""What the task pipeline (:mod:`kvision.spine`) asks the segmentation task for: splits, model,
training pipelines, evaluation batches, the report section and the worst-images gallery.

``data.path`` is a folder of ``train/``, ``val/``, ``test/`` datasets or one dataset
(:mod:`kvision.tasks.splits`), each in a layout
:func:`~kvision.tasks.segmentation.data.read_segmentation_dataset` reads (e.g. the output of
``tools/make_segmentation_data.py``). Every mask a reader fixed or left out is written to
``<run>/bad_files.csv``.

Masks reach the model size with nearest-neighbour resampling through the contract's resize
(stretch, or letterbox with the borders unlabelled); the dataset's ``ignore_index`` becomes the
training label :data:`~kvision.tasks.segmentation.task.IGNORE_LABEL` (255). Scoring happens at
each image's own size: predictions are decoded back to it (``Task.decode``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.base import head_options
from kvision.tasks.segmentation.heads import MASK_OUTPUT
from kvision.tasks.segmentation.task import IGNORE_LABEL, SegmentationTarget
from kvision.tasks.splits import TaskSplits, limited, read_splits

_HEAD_OPTIONS = {"type", "channels", "upsample", "rates", "low_level_channels", "instances"}


def load_splits(data_cfg, seed: int = 0) -> TaskSplits:
    """Read the segmentation splits named by ``data_cfg`` (module docstring).

    Raises:
        InputValueError: no ``data.path``, a dataset kind that is not segmentation, splits
            whose labels differ. FileNotFoundError: a path missing.
        kvision.tasks.segmentation.data.SegmentationDataError: not a segmentation dataset.
    """
    from kvision.tasks.segmentation.data import read_segmentation_dataset

    if data_cfg.dataset not in ("fashion_mnist", "masks", "coco"):
        raise InputValueError(
            f"`data.dataset={data_cfg.dataset}` is not a segmentation dataset: task=segmentation "
            "reads `masks` (image / mask folders) or `coco` (leave it unset to detect the layout)"
        )
    out = data_cfg.path or "data/nuclei"
    hint = (
        "image/ + masks/ folders (or COCO with segmentations), or train/ val/ test/ of them. "
        f"Write the nuclei set with `python tools/make_segmentation_data.py --out {out}`"
    )

    def read(path):
        return read_segmentation_dataset(path, ignore_index=data_cfg.ignore_index,
                                         on_error=data_cfg.on_error)  # fmt: skip

    splits = read_splits(data_cfg, read, seed, "masks", hint)
    splits.format = splits.train.format
    return splits


def _channels(splits) -> int:
    from PIL import Image

    with Image.open(splits.train.examples[0].image_path) as im:
        return 1 if im.mode in ("L", "I", "I;16", "1", "F") else 3


def build_model(model_cfg, splits: TaskSplits):
    """The configured segmenter: ``model.name`` is the backbone (``unet`` by default under this
    task), ``model.head`` the head's options: ``type`` (``unet``, ``fcn``, ``deeplab``),
    ``channels``, ``upsample``, ``rates``, ``low_level_channels`` and ``instances`` (``auto``,
    the default: the nuclei rule when the training split has instance ids; ``false``; or a
    rule dict)."""
    from kvision.tasks.segmentation.model import build_segmenter, default_instances

    h, w = model_cfg.input_size or splits.image_size
    c = model_cfg.channels or _channels(splits)
    head = head_options(model_cfg, _HEAD_OPTIONS, "segmentation")
    kind = head.pop("type", "unet")
    instances = head.pop("instances", "auto")
    if instances == "auto":
        has = any(ex.has_instances for ex in splits.train.examples)
        instances = default_instances(splits.labels) if has else None
    elif instances is True:
        instances = default_instances(splits.labels)
    return build_segmenter((int(h), int(w), int(c)), splits.labels, backbone=model_cfg.name,
                           backbone_options=model_cfg.options, head=kind, head_options=head,
                           instances=instances or None, resize=model_cfg.resize)  # fmt: skip


def fit_mask(classes, size, resize: str = "stretch", fill: int = IGNORE_LABEL) -> np.ndarray:
    """Class ids ``[H, W]`` -> uint8 ``size`` = ``(height, width)`` by nearest neighbour, through
    the contract's ``resize`` (a letterbox's borders get ``fill``: no loss)."""
    from PIL import Image

    from kvision.preprocess import letterbox_geometry

    ids = np.asarray(classes, np.uint8)
    if ids.shape == tuple(size):
        return ids
    image = Image.fromarray(ids)
    if resize == "letterbox":
        _, px, py, nw, nh = letterbox_geometry(ids.shape[1], ids.shape[0], size)
        canvas = Image.new("L", (size[1], size[0]), fill)
        canvas.paste(image.resize((nw, nh), Image.Resampling.NEAREST), (px, py))
        return np.asarray(canvas)
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.NEAREST))


def _target(example, dataset) -> SegmentationTarget:
    from kvision.tasks.segmentation.data import load_masks

    classes, instances = load_masks(example, dataset.num_classes, dataset.ignore_index)
    if dataset.ignore_index != IGNORE_LABEL:
        classes = np.where(classes == dataset.ignore_index, IGNORE_LABEL, classes)
    return SegmentationTarget(example.name, classes.astype(np.uint8), instances)


def _pairs(dataset, contract):
    from kvision.preprocess import load_pixels

    size = (contract.height, contract.width)
    for ex in dataset.examples:
        pixels = load_pixels(ex.image_path, contract.channels, size, contract.resize)
        yield pixels, fit_mask(_target(ex, dataset).classes, size, contract.resize)


def pair_dataset(dataset, contract, cache: bool = True):
    """``(pixels uint8 [H, W, C], mask uint8 [H, W])`` per example at the model size, in order."""
    import tensorflow as tf

    h, w, c = contract.height, contract.width, contract.channels
    ds = tf.data.Dataset.from_generator(
        lambda: _pairs(dataset, contract),
        output_signature=(tf.TensorSpec((h, w, c), tf.uint8), tf.TensorSpec((h, w), tf.uint8)),
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(dataset.examples)))
    return ds.cache() if cache else ds


def datasets(cfg, splits: TaskSplits, contract, run_dir: Path | None, augment=True):
    """``(train_ds, val_ds, augmentation report entry)``: batches of ``(images float32 [B, H, W,
    C], {"mask_logits": int32 [B, H, W]})``; the augmentation preview goes to ``run_dir``."""
    import tensorflow as tf

    from kvision.tasks.segmentation.augment import build_mask_augmenter

    bs, seed = cfg.data.batch_size, cfg.train.seed
    info = {"enabled": bool(cfg.augment.enabled and augment), "transforms": [], "preview_png": None}
    augmenter = None
    if info["enabled"]:
        augmenter = build_mask_augmenter(cfg.augment.transforms, seed, IGNORE_LABEL)
        info["transforms"] = augmenter.to_config()
        if cfg.augment.transforms == "auto":
            names = ", ".join(t["name"] for t in info["transforms"])
            info["reason"] = (
                f"auto for segmentation: {names} (mmsegmentation's default pipeline, lighter), "
                "each moving the mask with the image; pass transforms for more symmetry"
            )
    scale, offset = 255.0 * contract.scale, contract.offset

    def pipeline(dataset, train: bool):
        ds = pair_dataset(dataset, contract, cfg.data.cache)
        if train:
            ds = ds.shuffle(max(1, len(dataset.examples)), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda p, m: (tf.cast(p, tf.float32) / 255.0, m))
        if train and augmenter is not None:
            ds = augmenter.map(ds)
        ds = ds.map(lambda x, m: (x * scale + offset, {MASK_OUTPUT: tf.cast(m, tf.int32)}),
                    num_parallel_calls=tf.data.AUTOTUNE)  # fmt: skip
        return ds.batch(bs).prefetch(tf.data.AUTOTUNE)

    train_ds = pipeline(splits.train, True)
    val_ds = pipeline(splits.val, False) if splits.val is not None else None
    if augmenter is not None and cfg.augment.preview and run_dir is not None:
        _preview(splits.train, contract, augmenter, Path(run_dir) / "augment_preview.png")
        info["preview_png"] = "augment_preview.png"
    return train_ds, val_ds, info


def _preview(dataset, contract, augmenter, path: Path, n: int = 8) -> None:
    from kvision.tasks.detection.draw import write_grid
    from kvision.tasks.segmentation.draw import overlay

    tiles = []
    for i, (pixels, mask) in enumerate(_pairs(limited(dataset, n), contract)):
        image, out = augmenter.apply_numpy(pixels.astype(np.float32) / 255.0, mask, seed=i)
        tiles.append(overlay((image * 255).round().astype(np.uint8), out, dataset.num_classes))
    write_grid(tiles, path)


def eval_batches(split, contract, batch_size: int = 32):
    """``(inputs float32 [B, H, W, C], [SegmentationTarget])`` over a split, in order; the
    targets at each image's own size."""
    from kvision.preprocess import load_pixels

    size = (contract.height, contract.width)
    examples = split.examples
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        pixels = np.stack(
            [load_pixels(ex.image_path, contract.channels, size, contract.resize) for ex in chunk]
        )
        yield contract.normalize(pixels), [_target(ex, split) for ex in chunk]


def write_gallery(run, split, contract, path: Path, n: int = 8) -> Path:
    """The ``n`` images of ``split`` with the lowest mIoU, worst first: each row is the image,
    the ground truth and the prediction, colour-coded (``run(x)`` gives the raw outputs)."""
    from kvision.preprocess import load_pixels
    from kvision.tasks.detection.draw import write_grid
    from kvision.tasks.segmentation.draw import overlay, side_by_side
    from kvision.tasks.segmentation.metrics import confusion_matrix, scores_from_confusion
    from kvision.tasks.segmentation.task import decode_masks

    k = len(contract.labels)
    scored = []  # (mIoU, index): one float per image
    index = 0
    for x, targets in eval_batches(split, contract):
        sizes = [(t.classes.shape[1], t.classes.shape[0]) for t in targets]
        for t, p in zip(targets, decode_masks(run(x), contract, sizes), strict=True):
            cm = confusion_matrix(t.classes, p.classes, k, IGNORE_LABEL)
            miou = scores_from_confusion(cm, contract.labels)["mIoU"]
            scored.append((1.0 if miou is None else miou, index))
            index += 1
    worst = [i for _, i in sorted(scored)[:n]]
    tiles = []
    for i in worst:
        ex = split.examples[i]
        target = _target(ex, split)
        pixels = load_pixels(ex.image_path, contract.channels)
        x = contract.normalize(
            load_pixels(
                ex.image_path, contract.channels, (contract.height, contract.width), contract.resize
            )[None]  # fmt: skip
        )
        pred = decode_masks(run(x), contract, [(ex.width, ex.height)])[0]
        row = [overlay(pixels, np.zeros_like(target.classes), k),
               overlay(pixels, target.classes, k), overlay(pixels, pred.classes, k)]  # fmt: skip
        tiles.append(side_by_side(row))
    return write_grid(tiles, path, columns=2)


def report_lines(section: dict) -> list[str]:
    """Markdown of the segmentation evaluation section (``kvision.spine`` writes it)."""
    m = section.get("metrics", {})

    def f(key, d=m):
        v = d.get(key)
        return "-" if v is None else f"{v:.4f}"

    lines = [
        f"mIoU **{f('mIoU')}**, mean Dice {f('mean_Dice')}, foreground Dice "
        f"**{f('foreground_Dice')}**, pixel accuracy {f('pixel_accuracy')} on "
        f"{section.get('n', 0):,} {section.get('split', 'test')} images.",
        "",
    ]
    if "instance_F1@0.5" in m:
        lines += [
            f"Instances (stardist matching, summed over images): F1@0.5 **{f('instance_F1@0.5')}**,"
            f" AP@0.5 {f('instance_AP@0.5')}, AP@[.5:.9] {f('instance_AP@[.5:.9]')} (TP "
            f"{m.get('instance_TP@0.5')}, FP {m.get('instance_FP@0.5')}, FN "
            f"{m.get('instance_FN@0.5')}).",
            "",
        ]
    iou, dice = m.get("per_class_IoU") or {}, m.get("per_class_Dice") or {}
    if iou:
        lines += ["| class | IoU | Dice |", "|---|--:|--:|"]
        lines += [f"| {k} | {f(k, iou)} | {f(k, dice)} |" for k in iou]
        lines += [
            "",
            "The gallery shows the images with the lowest mIoU (image, truth, prediction).",
        ]
        lines.append("")
    return lines
