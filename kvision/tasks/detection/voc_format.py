"""Pascal VOC XML: :func:`read_voc` and :func:`write_voc`.

The bad-input policy and coordinate conventions (VOC's 1-based inclusive pixels) are in
:mod:`kvision.tasks.detection.formats`; the shared rules in ``format_rules.py``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from kvision.errors import InputValueError
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


def read_voc(
    annotations_dir: str | Path,
    images_dir: str | Path,
    *,
    labels: list[str] | str | Path | None = None,
    on_error: str = "skip",
    verify_images: bool = False,
) -> DetectionDataset:
    """Read Pascal VOC XML files (``annotation/filename``, ``size``, ``object/name``,
    ``object/difficult``, ``object/bndbox/xmin..ymax``; other fields are ignored).

    Boxes convert from VOC's 1-based inclusive pixels: ``[xmin - 1, ymin - 1, xmax, ymax]``.
    An XML without ``<filename>`` uses its own name with the first image extension found.

    Args:
        annotations_dir: the folder of ``.xml`` files (not searched recursively).
        images_dir: the folder ``<filename>`` is relative to (``JPEGImages``).
        labels: the class names in index order, or a names file (see :func:`read_yolo`);
            ``None`` (default) uses the sorted names found (a class seen nowhere is lost: pass
            ``labels`` to keep the order and every class). Category ids are ``1..K``.
        on_error: ``"skip"`` (default) or ``"raise"`` (see the module docstring).
        verify_images: decode every image fully (default ``False``: header only).

    Raises:
        DetectionDataError: a folder is missing, there is no ``.xml`` file or no usable
            image, or the names file is bad. ``DataProblemError`` with ``on_error="raise"``.

    Example:
        >>> ds = read_voc("VOC2012/Annotations", "VOC2012/JPEGImages")
        >>> ds.examples[0].difficult
        array([False,  True])
    """
    _check_on_error(on_error)
    annotations_dir, images_dir = _folder(annotations_dir), _folder(images_dir)
    xml_files = sorted(p for p in annotations_dir.glob("*.xml") if not p.name.startswith("."))
    if not xml_files:
        raise DetectionDataError(
            f"No .xml files in {annotations_dir}; expected Pascal VOC "
            f"annotations such as {annotations_dir / '000001.xml'}"
        )
    log, parsed = _Log(on_error), []
    for image_id, xml in enumerate(xml_files, start=1):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            log.skip(xml, "file", "malformed", f"malformed XML ({exc})")
            continue
        if root.tag != "annotation":
            log.skip(xml, "file", "malformed", f"root element <{root.tag}> is not <annotation>")
            continue
        parsed.append((image_id, xml, root))
    if labels is None:
        names = {_text(o, "name") for _, _, root in parsed for o in root.findall("object")}
        labels = sorted(n for n in names if n)
        if not labels:
            raise DetectionDataError(f"No object names in {annotations_dir}; pass labels=")
    else:
        labels = _labels(labels)
    index = {name: i for i, name in enumerate(labels)}
    examples = []
    for image_id, xml, root in parsed:
        objects = root.findall("object")
        path = _voc_image_path(root, xml, images_dir)
        size = _checked_size(path, "image", len(objects), log, verify_images)
        if size is None:
            continue
        given, n = _voc_size(root), len(objects)
        if isinstance(given, str):
            log.skip(xml, "size", "malformed", f"{given}; skipped with its {n} object(s)")
            continue
        if given and given != size:
            reason = f"<size> {given[0]}x{given[1]} is not the image file's {size[0]}x{size[1]}"
            log.skip(
                xml, "size", "size_mismatch", f"{reason} ({path}); skipped with its {n} object(s)"
            )
            continue
        kept = []
        for k, obj in enumerate(objects, start=1):
            kept.append(_voc_object(obj, index, size, xml, f"object {k}", log))
        examples.append(_example(path, image_id, *size, [o for o in kept if o is not None]))
    return _dataset(examples, labels, list(range(1, len(labels) + 1)), log, annotations_dir)


def write_voc(
    dataset: DetectionDataset,
    annotations_dir: str | Path,
    images_dir: str | Path | None = None,
) -> list[Problem]:
    """Write one Pascal VOC XML per image (named after the image), each atomically.

    Boxes are rounded to whole 1-based pixels: ``xmin = round(x_min) + 1``, ``xmax =
    round(x_max)`` (at least one pixel wide), the inverse of :func:`read_voc`. Crowd regions
    are not written (VOC has none) and listed in the returned problems.

    Args:
        dataset: the dataset.
        annotations_dir: the folder of ``.xml`` files to write.
        images_dir: folder ``<filename>`` is made relative to; ``None`` (default) uses the
            deepest folder holding every image.

    Returns:
        The crowd regions left out, as ``Problem`` rows (``skipped``).

    Raises:
        InputValueError: two images share a file stem, or an image is not under ``images_dir``.

    Example:
        >>> write_voc(ds, "out/Annotations", images_dir="out/JPEGImages")
        []
    """
    root_dir, annotations_dir = _image_root(dataset, images_dir), Path(annotations_dir)
    stems: dict[str, str] = {}
    for ex in dataset.examples:
        stem = Path(ex.image_path).stem
        if stems.setdefault(stem, ex.image_path) != ex.image_path:
            raise InputValueError(
                f"Images {stems[stem]} and {ex.image_path} would both write "
                f"{annotations_dir / (stem + '.xml')}; rename one"
            )
    problems = []
    for ex in dataset.examples:
        xml = annotations_dir / (Path(ex.image_path).stem + ".xml")
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = _relative(ex.image_path, root_dir)
        size = ET.SubElement(root, "size")
        for tag, value in (("width", ex.width), ("height", ex.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        for k, box in enumerate(ex.boxes.tolist()):
            if ex.iscrowd[k]:
                problems.append(
                    Problem(
                        str(xml),
                        f"object {k + 1}",
                        "crowd region: VOC has no crowd flag, not written",
                        "skipped",
                        "not_written",
                    )
                )
                continue
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = dataset.labels[ex.classes[k]]
            ET.SubElement(obj, "difficult").text = str(int(ex.difficult[k]))
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(
                ("xmin", "ymin", "xmax", "ymax"), _voc_pixels(box, ex.width, ex.height), strict=True
            ):
                ET.SubElement(bndbox, tag).text = str(value)
        ET.indent(root)
        atomic_write_text(xml, ET.tostring(root, encoding="unicode") + "\n")
    return problems


# --- parsing ---------------------------------------------------------------------------------


def _voc_image_path(root, xml: Path, images_dir: Path) -> Path:
    name = _text(root, "filename")
    if name:
        return images_dir / name
    found = (images_dir / (xml.stem + ext) for ext in IMAGE_EXTENSIONS)
    return next((p for p in found if p.is_file()), images_dir / (xml.stem + ".jpg"))


def _voc_size(root) -> tuple[int, int] | str | None:
    """The ``<size>`` ``(width, height)``, ``None`` if absent or 0, or why it is malformed."""
    size = root.find("size")
    if size is None:
        return None
    values = [_text(size, tag) for tag in ("width", "height")]
    try:
        width, height = (float(v) for v in values)
    except (TypeError, ValueError):
        return f"malformed <size>: width={values[0]!r} height={values[1]!r}"
    if not all(v >= 0 and v == int(v) for v in (width, height)):
        return f"malformed <size>: width={values[0]!r} height={values[1]!r}"
    return None if width == 0 or height == 0 else (int(width), int(height))


def _voc_object(obj, index, size, xml, item, log):
    name, bndbox = _text(obj, "name"), obj.find("bndbox")
    difficult = _text(obj, "difficult") or "0"
    raw = [
        _text(bndbox, t) if bndbox is not None else None for t in ("xmin", "ymin", "xmax", "ymax")
    ]
    shown = " ".join(f"{t}={v}" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), raw, strict=True))
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        values = None
    reason = (
        "missing <name>"
        if not name
        else f"<bndbox> should have numeric xmin, ymin, xmax, ymax. Received: {shown}"
        if values is None or not all(map(math.isfinite, values))
        else f"<difficult> should be 0 or 1. Received: {difficult!r}"
        if difficult not in ("0", "1")
        else None
    )
    if reason:
        return log.skip(xml, item, "malformed", reason)
    if name not in index:
        return log.skip(
            xml, item, "unknown_class", f"unknown class name {name!r} (labels: {list(index)})"
        )
    xmin, ymin, xmax, ymax = values
    if xmax < xmin or ymax < ymin:  # on the raw values: xmax = xmin - 1 is inverted, not empty
        return _inverted(xml, item, shown, xmax < xmin, ymax < ymin, log)
    box = _check_box([xmin - 1, ymin - 1, xmax, ymax], *size, xml, item, shown, log)
    return None if box is None else (box, index[name], None, False, difficult == "1", None)


def _voc_pixels(box, width, height) -> tuple[int, int, int, int]:
    xmin = min(round(box[0]), width - 1) + 1
    ymin = min(round(box[1]), height - 1) + 1
    return xmin, ymin, max(round(box[2]), xmin), max(round(box[3]), ymin)


def _text(element, tag: str) -> str:
    child = element.find(tag)
    return (child.text or "").strip() if child is not None else ""
