"""What the task pipeline (:mod:`kvision.spine`) asks the OCR task for: splits, the CRNN,
training pipelines, evaluation batches, the report section and the gallery.

``data.path`` is a folder of ``train/``, ``val/``, ``test/`` text-line datasets or one dataset
(:mod:`kvision.tasks.splits`), each in a layout :func:`kvision.tasks.ocr.data.read_text_lines`
reads (``labels.tsv`` of ``image<TAB>text``, or images named by their text; e.g. the output of
``tools/make_text_lines.py``). The charset is built from the training labels; validation and
test lines with a character outside it are listed in ``<run>/bad_files.csv`` and left out.

Lines are resized to the model's height keeping their aspect ratio and padded to its width (the
contract's ``letterbox``: centred, gray borders; a line wider than the bucket is scaled down to
fit). The width bucket is the widest training line at that height, rounded up to 32 px (at most
512), unless ``model.input_size`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.base import head_options
from kvision.tasks.ocr.model import CHAR_OUTPUT
from kvision.tasks.ocr.task import OcrTarget
from kvision.tasks.splits import TaskSplits, limited, read_splits

HEIGHT = 32
MAX_WIDTH = 512
_HEAD_OPTIONS = {"sequence", "depth", "units", "decoder", "beam_width"}


def load_splits(data_cfg, seed: int = 0) -> TaskSplits:
    """Read the OCR splits named by ``data_cfg``, the charset from the training split.

    Raises:
        InputValueError: no ``data.path``; FileNotFoundError: a path missing.
    """
    from kvision.tasks.ocr.data import read_text_lines

    out = data_cfg.path or "data/lines"
    hint = (
        "a text-line folder (labels.tsv of image<TAB>text, or images named by their text), or "
        "train/ val/ test/ of them. Generate one with "
        f"`python tools/make_text_lines.py --out {out}`"
    )
    charset = {}

    def read(path):  # train is read first (kvision.tasks.splits.SPLITS): its charset rules
        ds = read_text_lines(path, charset=charset.get("train"), on_error=data_cfg.on_error)
        charset.setdefault("train", list(ds.labels))
        return ds

    splits = read_splits(data_cfg, read, seed, "lines", hint)
    splits.format = getattr(splits.train, "format", "lines")
    return splits


def _bucket(splits) -> int:
    widest = max(ex.width * HEIGHT / max(ex.height, 1) for ex in splits.train.examples)
    return int(min(MAX_WIDTH, 32 * np.ceil(widest / 32)))


def build_model(model_cfg, splits: TaskSplits):
    """The CRNN: ``model.name`` must be ``crnn``; ``model.options.width`` its first conv width;
    ``model.head``: ``sequence`` (``conv`` / ``bilstm``), ``depth``, ``units``, ``decoder``
    (``greedy`` / ``beam``), ``beam_width``."""
    from kvision.tasks.ocr.model import build_crnn

    if model_cfg.name != "crnn":
        raise InputValueError(
            f"task=ocr builds a CRNN: `model.name` should be crnn. Received: {model_cfg.name!r}"
        )
    head = head_options(model_cfg, _HEAD_OPTIONS, "ocr")
    h, w = model_cfg.input_size or (HEIGHT, _bucket(splits))
    decoder = {k: head.pop(k) for k in ("decoder", "beam_width") if k in head}
    if decoder.get("decoder", "greedy") not in ("greedy", "beam"):
        raise InputValueError(f"`model.head.decoder` should be greedy or beam: {decoder}")
    model = build_crnn((int(h), int(w), model_cfg.channels or 1), splits.labels,
                       width=int((model_cfg.options or {}).get("width", 32)), **head)  # fmt: skip
    model.kvision_contract.postprocess.update(decoder)
    return model


def _lines(dataset, contract):
    from kvision.preprocess import load_pixels
    from kvision.tasks.ocr.data import encode_text

    size = (contract.height, contract.width)
    for ex in dataset.examples:
        pixels = load_pixels(ex.image_path, contract.channels, size, contract.resize)
        yield pixels, encode_text(ex.text, contract.labels) + 1  # 0 is the CTC blank / padding


def datasets(cfg, splits: TaskSplits, contract, run_dir: Path | None, augment=True):
    """``(train_ds, val_ds, augmentation report entry)``: batches of ``(images float32 [B, H,
    W, C], {"char_logits": int32 [B, L]})``, labels 0-padded to the batch's longest."""
    import tensorflow as tf

    from kvision.tasks.ocr.augment import build_text_augmenter

    bs, seed = cfg.data.batch_size, cfg.train.seed
    info = {"enabled": bool(cfg.augment.enabled and augment), "transforms": [], "preview_png": None}
    augmenter = None
    if info["enabled"]:
        augmenter = build_text_augmenter(cfg.augment.transforms, seed)
        info["transforms"] = augmenter.to_config()
        if cfg.augment.transforms == "auto":
            info["reason"] = (
                "auto for text lines: small rotation / shear / scale, blur, noise, "
                "brightness / contrast and small erased patches; no flips (text is not symmetric)"
            )
    h, w, c = contract.height, contract.width, contract.channels
    scale, offset = 255.0 * contract.scale, contract.offset

    def pipeline(dataset, train: bool):
        ds = tf.data.Dataset.from_generator(
            lambda: _lines(dataset, contract),
            output_signature=(tf.TensorSpec((h, w, c), tf.uint8), tf.TensorSpec((None,), tf.int32)),
        )
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(dataset.examples)))
        if cfg.data.cache:
            ds = ds.cache()
        if train:
            ds = ds.shuffle(max(1, len(dataset.examples)), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda p, y: (tf.cast(p, tf.float32) / 255.0, y))
        if train and augmenter is not None:
            ds = augmenter.map(ds)
        ds = ds.map(lambda x, y: (x * scale + offset, y))
        ds = ds.padded_batch(bs, padded_shapes=((h, w, c), (None,)), padding_values=(0.0, 0))
        return ds.map(lambda x, y: (x, {CHAR_OUTPUT: y})).prefetch(tf.data.AUTOTUNE)

    train_ds = pipeline(splits.train, True)
    val_ds = pipeline(splits.val, False) if splits.val is not None else None
    if augmenter is not None and cfg.augment.preview and run_dir is not None:
        _preview(splits.train, contract, augmenter, Path(run_dir) / "augment_preview.png")
        info["preview_png"] = "augment_preview.png"
    return train_ds, val_ds, info


def _preview(dataset, contract, augmenter, path: Path, n: int = 8) -> None:
    from kvision.tasks.detection.draw import write_grid
    from kvision.tasks.ocr.draw import caption

    tiles = []
    for i, ((pixels, _), ex) in enumerate(zip(_lines(limited(dataset, n), contract),
                                              dataset.examples, strict=False)):  # fmt: skip
        image = augmenter.apply_numpy(pixels.astype(np.float32) / 255.0, seed=i)
        tiles.append(caption((image * 255).round().astype(np.uint8), ex.text))
    write_grid(tiles, path, columns=1)


def eval_batches(split, contract, batch_size: int = 32):
    """``(inputs float32 [B, H, W, C], [OcrTarget])`` over a split, in order."""
    from kvision.preprocess import load_pixels

    size = (contract.height, contract.width)
    examples = split.examples
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        pixels = np.stack(
            [load_pixels(ex.image_path, contract.channels, size, contract.resize) for ex in chunk]
        )
        targets = [OcrTarget(ex.text, getattr(ex, "kind", "") or "") for ex in chunk]
        yield contract.normalize(pixels), targets


def write_gallery(run, split, contract, path: Path, n: int = 12) -> Path:
    """The first ``n`` lines of ``split`` with the decoded text under each (red when it differs
    from the truth)."""
    from kvision.preprocess import load_pixels
    from kvision.tasks.detection.draw import write_grid
    from kvision.tasks.ocr.draw import caption
    from kvision.tasks.ocr.task import decode_lines

    first = limited(split, n)
    x = np.concatenate([b for b, _ in eval_batches(first, contract)])
    tiles = []
    for ex, pred in zip(first.examples, decode_lines(run(x), contract), strict=True):
        tiles.append(caption(load_pixels(ex.image_path, contract.channels), pred.text, ex.text))
    return write_grid(tiles, path, columns=1)


def report_lines(section: dict) -> list[str]:
    """Markdown of the OCR evaluation section (``kvision.spine`` writes it)."""
    m = section.get("metrics", {})

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f} %"

    lines = [
        f"CER **{pct(m.get('CER'))}**, WER {pct(m.get('WER'))}, exact lines "
        f"{pct(m.get('exact_match'))} on {section.get('n', 0):,} {section.get('split', 'test')} "
        "lines (edit distance: rapidfuzz).",
        "",
    ]
    by_kind = m.get("CER_by_kind") or {}
    if by_kind:
        lines += ["| line kind | lines | CER |", "|---|--:|--:|"]
        counts = m.get("lines_by_kind") or {}
        lines += [f"| {k} | {counts.get(k, '-')} | {pct(v)} |" for k, v in by_kind.items()]
        lines.append("")
    return lines
