"""YOLO txt labels: :func:`read_yolo` and :func:`write_yolo`.

The bad-input policy and coordinate conventions are in :mod:`kvision.tasks.detection.formats`;
the shared rules (including the class-names file reader) in ``format_rules.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kvision.io import atomic_write_text
from kvision.tasks.detection.example import DetectionDataset, Problem
from kvision.tasks.detection.format_rules import (
    IMAGE_EXTENSIONS,
    DetectionDataError,
    _check_box,
    _check_on_error,
    _checked_size,
    _dataset,
    _example,
    _folder,
    _image_root,
    _inverted,
    _labels,
    _Log,
    _relative,
)


def read_yolo(
    images_dir: str | Path,
    labels_dir: str | Path,
    labels: list[str] | str | Path,
    *,
    on_error: str = "skip",
    verify_images: bool = False,
) -> DetectionDataset:
    """Read YOLO txt labels: one ``class x_center y_center width height`` line per object,
    coordinates normalized to the image size (0..1), class a 0-based index into ``labels``.

    Images are found recursively in ``images_dir`` (extensions ``IMAGE_EXTENSIONS``, hidden
    files ignored), sorted; ``images/a/b.jpg`` reads ``labels/a/b.txt``. Image ids are ``1..N``
    in that order, category ids ``1..K``.

    Args:
        images_dir: the images folder.
        labels_dir: the labels folder.
        labels: class names in index order, or a names file: ``.yaml``/``.yml`` with ``names:``
            (a list, or ``{index: name}`` with indices ``0..K-1``), else text with one name per
            line (trailing blank lines ignored).
        on_error: ``"skip"`` (default) or ``"raise"`` (see the module docstring).
        verify_images: decode every image fully (default ``False``: header only).

    Raises:
        DetectionDataError: a folder or the names file is missing or bad, or there is no
            (usable) image. ``DataProblemError`` with ``on_error="raise"``.

    Example:
        >>> ds = read_yolo("data/images", "data/labels", "data/classes.txt")
        >>> ds.summary()["negative_images"]
        3
    """
    _check_on_error(on_error)
    images_dir, labels_dir = _folder(images_dir), _folder(labels_dir)
    names_file = None if isinstance(labels, list | tuple) else Path(labels).resolve()
    labels = _labels(labels)
    images = sorted(
        (
            p
            for p in images_dir.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(images_dir).parts)
        ),
        key=lambda p: p.relative_to(images_dir).as_posix(),
    )
    if not images:
        raise DetectionDataError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {images_dir}")
    log, examples, used = _Log(on_error), [], set()
    for image_id, path in enumerate(images, start=1):
        txt = labels_dir / path.relative_to(images_dir).with_suffix(".txt")
        used.add(txt.resolve())
        lines = _yolo_lines(txt, log)
        if lines is None:
            continue
        size = _checked_size(path, "image", len(lines), log, verify_images)
        if size is None:
            continue
        objects = [_yolo_object(line, len(labels), size, txt, n, log) for n, line in lines]
        examples.append(_example(path, image_id, *size, [o for o in objects if o is not None]))
    for txt in sorted(labels_dir.rglob("*.txt")):
        hidden = any(part.startswith(".") for part in txt.relative_to(labels_dir).parts)
        if not hidden and txt.resolve() not in used and txt.resolve() != names_file:
            log.skip(txt, "file", "label_file_orphan", f"label file has no image in {images_dir}")
    return _dataset(examples, labels, list(range(1, len(labels) + 1)), log, images_dir)


def write_yolo(
    dataset: DetectionDataset,
    labels_dir: str | Path,
    names_path: str | Path,
    images_dir: str | Path | None = None,
) -> list[Problem]:
    """Write YOLO txt labels (one file per image, empty for a negative image) and the class
    names (one per line), each file atomically.

    Coordinates are written with 10 significant digits, so reading them back gives the same
    float32 boxes up to rounding. Crowd regions and difficult objects are not written (YOLO has
    no flag for them; as Ultralytics' converters do) and are listed in the returned problems.

    Args:
        dataset: the dataset.
        labels_dir: the labels folder; ``<images_dir>/a/b.jpg`` writes ``labels_dir/a/b.txt``.
        names_path: the names file to write (e.g. ``classes.txt``).
        images_dir: the images folder the label paths mirror; ``None`` (default) uses the
            deepest folder holding every image.

    Returns:
        The objects left out, as ``Problem`` rows (``skipped``).

    Example:
        >>> write_yolo(ds, "out/labels", "out/classes.txt", images_dir="out/images")
        []
    """
    root, labels_dir, problems = _image_root(dataset, images_dir), Path(labels_dir), []
    for ex in dataset.examples:
        txt = labels_dir / Path(_relative(ex.image_path, root)).with_suffix(".txt")
        lines = []
        for k, (x0, y0, x1, y1) in enumerate(ex.boxes.astype(np.float64).tolist()):
            if ex.iscrowd[k] or ex.difficult[k]:
                what = "crowd region" if ex.iscrowd[k] else "difficult object"
                problems.append(
                    Problem(
                        str(txt),
                        f"object {k + 1}",
                        f"{what}: YOLO has no such flag, not written",
                        "skipped",
                        "not_written",
                    )
                )
                continue
            values = (
                (x0 + x1) / 2 / ex.width,
                (y0 + y1) / 2 / ex.height,
                (x1 - x0) / ex.width,
                (y1 - y0) / ex.height,
            )
            lines.append(f"{ex.classes[k]} " + " ".join(f"{v:.10g}" for v in values) + "\n")
        atomic_write_text(txt, "".join(lines))
    atomic_write_text(names_path, "".join(f"{name}\n" for name in dataset.labels))
    return problems


# --- parsing ---------------------------------------------------------------------------------


def _yolo_lines(txt: Path, log) -> list[tuple[int, str]] | None:
    """Numbered non-blank lines; ``[]`` for a missing file (listed), ``None`` if unreadable."""
    if not txt.is_file():
        log.fix(
            txt,
            "file",
            "label_file_missing",
            "no label file for this image; kept as a negative image (no "
            "objects). Write an empty .txt to mark negatives",
        )
        return []
    try:
        text = txt.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        log.skip(txt, "file", "malformed", f"unreadable label file ({exc}); image skipped")
        return None
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _yolo_object(line, num_labels, size, txt, n, log):
    item, parts = f"line {n}", line.split()
    if len(parts) != 5:
        return log.skip(
            txt,
            item,
            "malformed",
            f"expected 5 values 'class x_center y_center width height', "
            f"got {len(parts)}: {line.strip()!r}",
        )
    try:
        values = [float(v) for v in parts]
    except ValueError:
        return log.skip(txt, item, "malformed", f"non-numeric value in {line.strip()!r}")
    cls, cx, cy, w, h = values
    if not all(map(math.isfinite, values)) or cls != int(cls):
        return log.skip(
            txt, item, "malformed", f"non-finite value or non-integer class in {line.strip()!r}"
        )
    if not 0 <= cls < num_labels:
        return log.skip(
            txt,
            item,
            "unknown_class",
            f"class index {int(cls)} out of range for {num_labels} labels",
        )
    width, height = size
    shown = f"x_center={parts[1]} y_center={parts[2]} width={parts[3]} height={parts[4]}"
    if w < 0 or h < 0:
        return _inverted(txt, item, shown, w < 0, h < 0, log)
    box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    box = _check_box(box, width, height, txt, item, shown, log)
    return None if box is None else (box, int(cls), None, False, False, None)
