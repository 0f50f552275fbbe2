"""Detection datasets from COCO JSON, Pascal VOC XML and YOLO txt, into one example format.

Every reader returns a :class:`~kvision.tasks.detection.example.DetectionDataset` of absolute
``[x_min, y_min, x_max, y_max]`` pixel boxes (see ``example.py`` for the conventions) and lists
every annotation it fixed or left out as a ``Problem`` (file, item, reason, action)::

    ds = read_detection_dataset("data/shapes")     # layout detected, see below
    ds.write_problems("runs/demo/problems.csv")

**Layouts** :func:`read_detection_dataset` recognises (``format="auto"``):

* COCO: a ``.json`` file, or a folder with ``annotations.json`` (images in its ``images/``
  sub-folder when there is one, else beside the JSON);
* Pascal VOC: a folder with ``Annotations/*.xml`` and ``JPEGImages/``;
* YOLO: a folder with ``images/`` and ``labels/`` (same relative paths, ``.txt``) and the class
  names in ``classes.txt`` (one per line), ``data.yaml`` (``names:`` list or ``{index: name}``)
  or ``labels/classes.txt``, in that order, unless ``labels`` is given.

**Coordinates.** COCO ``bbox`` ``[x, y, w, h]`` -> ``[x, y, x + w, y + h]``. YOLO ``class cx cy
w h`` normalized by the image size -> pixels. VOC pixel indices are 1-based and inclusive (a box
``xmin=1 .. xmax=W`` covers the whole image), so ``x_min = xmin - 1``, ``y_min = ymin - 1``,
``x_max = xmax``, ``y_max = ymax`` (as Detectron2 does); :func:`write_voc` applies the inverse,
rounding to whole pixels (at least one pixel wide).

**Image sizes** come from the file header (Pillow, no pixel decode), upright: a JPEG whose EXIF
orientation turns it by 90 degrees reports the turned size, as kvision decodes it.
``verify_images=True`` decodes every image fully (``kvision.preprocess.decode_image``) to also
catch files cut short after the header. COCO ``width``/``height`` (and a VOC ``<size>``) are
checked against the file: when they differ, the boxes' frame is unknown, so the image is skipped
(``size_mismatch``); the file is never overruled silently. A VOC ``<size>`` of 0 means unknown.

**Bad-input policy** (``on_error="skip"``, the default; ``"raise"`` raises
:class:`DataProblemError` with the same text at the first problem, fixed or skipped):

* box partly outside the image: clipped to it (``fixed``); overshoot up to
  ``EDGE_TOLERANCE`` px (rounding of the stored numbers) is clipped without a row;
* box entirely outside, zero-area, or inverted (``x_max < x_min``, ``y_max < y_min``, a negative
  COCO ``w``/``h``): skipped, never swapped;
* unknown category id, class index out of range, VOC class name not in ``labels``: skipped;
* malformed field, line or file (non-numeric, NaN, wrong count, bad XML/segmentation): that
  annotation (or file) skipped, with the line number or index;
* missing, empty or unreadable image: the image is skipped with all its objects;
* duplicate image / annotation ids (COCO): the later one skipped; COCO annotations whose
  ``image_id`` is not in ``images``: skipped;
* YOLO: an empty ``.txt`` is a negative image (no row); an image without ``.txt`` is kept as a
  negative and listed (``fixed``); a ``.txt`` without an image is listed (``skipped``);
* COCO ``iscrowd`` objects are kept with ``iscrowd=True`` (pycocotools ignores detections
  matched to them); VOC ``difficult`` objects are kept with ``difficult=True``.

Input that is not a dataset at all (a JSON that is not COCO, a folder without images or
annotation files, a missing names file, no usable image left) raises
:class:`DetectionDataError` naming the path.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kvision.errors import InputValueError
from kvision.io import atomic_write_json, atomic_write_text
from kvision.preprocess import ImageError, decode_image, read_bytes
from kvision.tasks.detection.example import DetectionDataset, DetectionExample, Problem

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
ON_ERROR_VALUES = ("skip", "raise")
FORMATS = ("auto", "coco", "voc", "yolo")
EDGE_TOLERANCE = 0.01  # px a box may overshoot the image without a problem row
YOLO_NAMES_FILES = ("classes.txt", "data.yaml", "data.yml", "labels/classes.txt")
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))


class DetectionDataError(InputValueError):
    """A detection dataset (file, folder, names file) cannot be read at all; the message names
    the path and what is expected."""


class DataProblemError(DetectionDataError):
    """One annotation, image or file is bad and ``on_error="raise"``. ``problem`` is the
    :class:`Problem` that ``on_error="skip"`` would have listed."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(
            f"{problem.file}, {problem.item}: {problem.reason}. Fix it, or pass "
            "on_error='skip' to list problems and go on."
        )


# --- COCO ------------------------------------------------------------------------------------


def read_coco(
    json_path: str | Path,
    images_dir: str | Path | None = None,
    *,
    on_error: str = "skip",
    verify_images: bool = False,
) -> DetectionDataset:
    """Read a COCO detection JSON (``images``, ``annotations``, ``categories``).

    Categories become ``labels`` in ascending id order (``category_ids`` keeps the ids). Images
    keep the JSON's order and ids; ``segmentation`` (polygons or RLE), ``iscrowd``, ``area`` and
    a ``difficult`` extra field (written by :func:`write_coco`) are kept per object.

    Args:
        json_path: the JSON file.
        images_dir: folder that ``file_name`` is relative to; ``None`` (default) uses the
            JSON's ``images/`` sibling folder if there is one, else the JSON's folder.
        on_error: ``"skip"`` (default) or ``"raise"`` (see the module docstring).
        verify_images: decode every image fully (default ``False``: header only).

    Returns:
        A ``DetectionDataset``.

    Raises:
        DetectionDataError: the file is missing, not JSON, not COCO, has bad categories or no
            usable image. ``DataProblemError`` (a subclass) with ``on_error="raise"``.

    Example:
        >>> ds = read_coco("data/coco/annotations.json")
        >>> ds.labels[:2], ds.examples[0].boxes.shape
        (['person', 'bicycle'], (3, 4))
    """
    _check_on_error(on_error)
    json_path = Path(json_path)
    data = _load_coco_json(json_path)
    if images_dir is None:
        sibling = json_path.parent / "images"
        images_dir = sibling if sibling.is_dir() else json_path.parent
    labels, category_ids = _coco_categories(data["categories"], json_path)
    index = {cid: i for i, cid in enumerate(category_ids)}
    log, file = _Log(on_error), str(json_path)
    by_image: dict = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        by_image[image_id if _is_int(image_id) else None].append((i, ann))

    entries, first_at = [], {}
    for i, entry in enumerate(data["images"]):
        parsed = _coco_image_entry(entry)
        if isinstance(parsed, str):
            image_id = entry.get("id") if isinstance(entry, dict) else None
            owned = by_image.pop(image_id, []) if _is_int(image_id) else []
            log.skip(
                file,
                f"images[{i}]",
                "malformed",
                f"{parsed}; skipped with its {len(owned)} object(s)",
            )
        elif parsed[0] in first_at:
            log.skip(
                file,
                f"images[{i}]",
                "duplicate_id",
                f"duplicate image id {parsed[0]} (first at "
                f"images[{first_at[parsed[0]]}], which keeps its objects)",
            )
        else:
            first_at[parsed[0]] = i
            entries.append(parsed)

    examples, seen_ids = [], set()
    for image_id, file_name, width, height in entries:
        anns = by_image.pop(image_id, [])
        path = Path(images_dir) / file_name
        item = f"image id {image_id}"
        size = _checked_size(path, item, len(anns), log, verify_images)
        if size is None:
            continue
        if size != (width, height):
            log.skip(
                file,
                item,
                "size_mismatch",
                f"JSON width x height {width}x{height} is not the image file's "
                f"{size[0]}x{size[1]} ({path}); skipped with its {len(anns)} object(s)",
            )
            continue
        objects = []
        for i, ann in anns:
            obj = _coco_annotation(ann, i, index, width, height, file, log, seen_ids)
            if obj is not None:
                objects.append(obj)
        examples.append(_example(path, image_id, width, height, objects))
    for image_id, anns in by_image.items():
        for i, ann in anns:
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            item = f"annotation id {ann_id}" if _is_int(ann_id) else f"annotations[{i}]"
            if image_id is None:
                got = ann.get("image_id") if isinstance(ann, dict) else ann
                log.skip(
                    file, item, "malformed", f"`image_id` should be an int. Received: {got!r:.60}"
                )
            else:
                log.skip(file, item, "unknown_image", f"image_id {image_id} is not in `images`")
    where = f"{json_path} (images looked up in {images_dir}; see `images_dir`)"
    return _dataset(examples, labels, category_ids, log, where)


def write_coco(
    dataset: DetectionDataset, json_path: str | Path, images_dir: str | Path | None = None
) -> list[Problem]:
    """Write ``dataset`` as a COCO detection JSON, atomically.

    Boxes become ``[x, y, w, h]``; ``area`` is the example's ``areas`` when known, else the box
    area; ``segmentation`` is written when present; ``difficult`` objects are written with an
    extra ``"difficult": 1`` field (pycocotools counts them as ordinary objects). Annotation ids
    are ``1..M`` in order; image and category ids are the dataset's.

    Args:
        dataset: the dataset.
        json_path: the JSON file to write.
        images_dir: folder ``file_name`` is made relative to; ``None`` (default) uses the
            deepest folder holding every image.

    Returns:
        The objects the format could not hold: always empty for COCO.

    Raises:
        InputValueError: an image is not under ``images_dir``.

    Example:
        >>> write_coco(ds, "out/annotations.json", images_dir="out/images")
        []
    """
    root = _image_root(dataset, images_dir)
    images, annotations = [], []
    for ex in dataset.examples:
        images.append(
            {
                "id": ex.image_id,
                "file_name": _relative(ex.image_path, root),
                "width": ex.width,
                "height": ex.height,
            }
        )
        for k, (box, cls) in enumerate(zip(ex.boxes.tolist(), ex.classes.tolist(), strict=True)):
            w, h = box[2] - box[0], box[3] - box[1]
            ann = {
                "id": len(annotations) + 1,
                "image_id": ex.image_id,
                "category_id": dataset.category_ids[cls],
                "bbox": [box[0], box[1], w, h],
                "area": float(ex.areas[k]) if ex.areas is not None else w * h,
                "iscrowd": int(ex.iscrowd[k]),
            }
            if ex.difficult[k]:
                ann["difficult"] = 1
            if ex.segmentations is not None and ex.segmentations[k] is not None:
                ann["segmentation"] = ex.segmentations[k]
            annotations.append(ann)
    categories = [
        {"id": cid, "name": name}
        for cid, name in zip(dataset.category_ids, dataset.labels, strict=True)
    ]
    atomic_write_json(
        json_path, {"images": images, "annotations": annotations, "categories": categories}
    )
    return []


# --- Pascal VOC ------------------------------------------------------------------------------


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


# --- YOLO ------------------------------------------------------------------------------------


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


# --- layout detection ------------------------------------------------------------------------


def read_detection_dataset(
    path: str | Path,
    format: str = "auto",
    *,
    labels: list[str] | str | Path | None = None,
    on_error: str = "skip",
    verify_images: bool = False,
) -> DetectionDataset:
    """Read a detection dataset, detecting its format from the layout (module docstring).

    Args:
        path: a COCO ``.json`` file or a dataset folder.
        format: ``"auto"`` (default), ``"coco"``, ``"voc"`` or ``"yolo"``.
        labels: class names or a names file, for VOC and YOLO (default ``None``: VOC uses the
            names found, YOLO the names file of the layout). Not allowed for COCO.
        on_error: ``"skip"`` (default) or ``"raise"``.
        verify_images: decode every image fully (default ``False``: header only).

    Raises:
        DetectionDataError: no layout (or more than one) matches, or the reader refuses.
        InputValueError: a bad ``format`` or ``on_error``, or ``labels`` given for COCO.

    Example:
        >>> read_detection_dataset("data/voc", labels=["cat", "dog"]).labels
        ['cat', 'dog']
    """
    if format not in FORMATS:
        raise InputValueError(
            f"`format` should be one of {', '.join(FORMATS)}. Received: format={format!r}"
        )
    _check_on_error(on_error)
    path = Path(path)
    found = {name: layout for name, layout in _layouts(path).items() if layout}
    if format == "auto":
        if len(found) != 1:
            what = f"matches {' and '.join(found)} layouts" if found else "matches no layout"
            raise DetectionDataError(
                f"Dataset {path} {what}; expected a COCO .json or annotations.json (+ images/), "
                "Pascal VOC Annotations/ + JPEGImages/, or YOLO images/ + labels/"
                + (": pass format=" if found else "")
            )
        format = next(iter(found))
    if format not in found:
        expected = {
            "coco": "a .json file or a folder with annotations.json",
            "voc": "Annotations/ and JPEGImages/",
            "yolo": "images/ and labels/",
        }
        raise DetectionDataError(
            f"Dataset {path} is not a {format} layout: expected {expected[format]}"
        )
    options = {"on_error": on_error, "verify_images": verify_images}
    layout = found[format]
    if format == "coco":
        if labels is not None:
            raise InputValueError(
                "`labels` is not used for COCO (its categories name the "
                f"classes). Received: labels={labels!r}"
            )
        return read_coco(*layout, **options)
    if format == "voc":
        return read_voc(*layout, labels=labels, **options)
    if labels is None:
        tried = [path / name for name in YOLO_NAMES_FILES]
        labels = next((p for p in tried if p.is_file()), None)
        if labels is None:
            raise DetectionDataError(
                f"No class names file for YOLO dataset {path}: tried "
                f"{', '.join(map(str, tried))}; or pass labels="
            )
    return read_yolo(*layout, labels, **options)


def _layouts(path: Path) -> dict[str, tuple | None]:
    if path.is_file():
        return {"coco": (path, None)} if path.suffix.lower() == ".json" else {}
    if not path.is_dir():
        raise DetectionDataError(f"Dataset {path} not found")
    coco = path / "annotations.json"
    voc = (path / "Annotations", path / "JPEGImages")
    yolo = (path / "images", path / "labels")
    return {
        "coco": (coco, None) if coco.is_file() else None,
        "voc": voc if all(p.is_dir() for p in voc) else None,
        "yolo": yolo if all(p.is_dir() for p in yolo) else None,
    }


# --- per-format parsing ----------------------------------------------------------------------


def _load_coco_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise DetectionDataError(f"COCO annotation file {json_path} not found")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DetectionDataError(f"{json_path} is not valid JSON ({exc})") from None
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        found = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise DetectionDataError(
            f"{json_path} is not a COCO detection file: expected a JSON object with lists "
            f"'images', 'annotations' and 'categories'. Found: {found}"
        )
    if not data["images"]:
        raise DetectionDataError(f"{json_path} lists no images")
    return data


def _coco_categories(categories: list, json_path: Path) -> tuple[list[str], list[int]]:
    pairs = {}
    for i, cat in enumerate(categories):
        cid, name = (cat.get("id"), cat.get("name")) if isinstance(cat, dict) else (None, None)
        if not _is_int(cid) or not isinstance(name, str) or not name:
            raise DetectionDataError(
                f"{json_path}: categories[{i}] should have an int `id` and "
                f"a non-empty string `name`. Received: {cat!r}"
            )
        if cid in pairs or name in pairs.values():
            raise DetectionDataError(
                f"{json_path}: categories[{i}] repeats id {cid} or name "
                f"{name!r}; ids and names should be unique"
            )
        pairs[cid] = name
    if not pairs:
        raise DetectionDataError(f"{json_path} lists no categories")
    ids = sorted(pairs)
    return [pairs[c] for c in ids], ids


def _coco_image_entry(entry) -> tuple | str:
    """``(id, file_name, width, height)``, or the reason the entry is malformed."""
    if not isinstance(entry, dict):
        return f"image entry should be an object. Received: {entry!r}"
    for key in ("id", "width", "height"):
        if not _is_int(entry.get(key)) or (key != "id" and entry[key] <= 0):
            return (
                f"`{key}` should be a{' positive' if key != 'id' else 'n'} int. "
                f"Received: {entry.get(key)!r}"
            )
    if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        return f"`file_name` should be a non-empty string. Received: {entry.get('file_name')!r}"
    return entry["id"], entry["file_name"], entry["width"], entry["height"]


def _coco_annotation(ann, i, index, width, height, file, log, seen_ids):
    ann_id = ann.get("id")
    item = f"annotation id {ann_id}" if _is_int(ann_id) else f"annotations[{i}]"
    if not _is_int(ann_id):
        return log.skip(file, item, "malformed", f"`id` should be an int. Received: {ann_id!r}")
    if ann_id in seen_ids:
        return log.skip(file, item, "duplicate_id", f"duplicate annotation id {ann_id}")
    seen_ids.add(ann_id)
    bbox, cat = ann.get("bbox"), ann.get("category_id")
    flags = {k: ann.get(k, 0) for k in ("iscrowd", "difficult")}
    segmentation, reason = _segmentation(ann.get("segmentation"), width, height)
    area = ann.get("area")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite, bbox))):
        reason = f"`bbox` should be 4 finite numbers [x, y, w, h]. Received: {bbox!r:.60}"
    elif not _is_int(cat):
        reason = f"`category_id` should be an int. Received: {cat!r:.60}"
    elif area is not None and not (_is_finite(area) and area >= 0):
        reason = f"`area` should be a finite number >= 0. Received: {area!r:.60}"
    for key, value in flags.items():
        if not reason and (value not in (0, 1) or not isinstance(value, int)):
            reason = f"`{key}` should be 0 or 1. Received: {value!r:.60}"
    if reason:
        return log.skip(file, item, "malformed", reason)
    if cat not in index:
        return log.skip(
            file, item, "unknown_class", f"unknown category id {cat} (categories: {sorted(index)})"
        )
    x, y, w, h = (float(v) for v in bbox)
    shown = "bbox [" + ", ".join(_num(v) for v in bbox) + "]"
    box = _check_box([x, y, x + w, y + h], width, height, file, item, shown, log)
    if box is None:
        return None
    return (
        box,
        index[cat],
        segmentation,
        bool(flags["iscrowd"]),
        bool(flags["difficult"]),
        None if area is None else float(area),
    )


def _segmentation(seg, width, height) -> tuple:
    """``(segmentation or None, reason it is malformed or None)``."""
    if seg is None or seg == []:
        return None, None
    if isinstance(seg, list):
        if all(
            isinstance(r, list) and len(r) >= 6 and len(r) % 2 == 0 and all(map(_is_finite, r))
            for r in seg
        ):
            return seg, None
        return None, "`segmentation` polygons should be lists of >= 3 (x, y) number pairs"
    if isinstance(seg, dict) and set(seg) >= {"counts", "size"}:
        counts, size = seg["counts"], seg["size"]
        if size != [height, width]:
            return (
                None,
                f"`segmentation` RLE size {size!r} should be [height, width] = [{height}, {width}]",
            )
        if (isinstance(counts, str) and counts) or (
            isinstance(counts, list)
            and all(_is_int(c) and c >= 0 for c in counts)
            and sum(counts) == height * width
        ):
            return seg, None
        return None, (
            "`segmentation` RLE counts should be a compressed string or a list of "
            f"ints >= 0 summing to height * width = {height * width}"
        )
    return None, f"`segmentation` should be polygons or an RLE dict. Received: {seg!r:.60}"


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


# --- shared rules ----------------------------------------------------------------------------


class _Log:
    """Collects problems; with ``on_error="raise"`` raises the first one."""

    def __init__(self, on_error: str):
        self.on_error, self.problems = on_error, []

    def skip(self, file, item: str, code: str, reason: str) -> None:
        self._add(Problem(str(file), item, reason, "skipped", code))

    def fix(self, file, item: str, code: str, reason: str) -> None:
        self._add(Problem(str(file), item, reason, "fixed", code))

    def _add(self, problem: Problem) -> None:
        if self.on_error == "raise":
            raise DataProblemError(problem)
        self.problems.append(problem)


def _check_box(box, width, height, file, item, shown, log) -> np.ndarray | None:
    """The policy for one box in pixels: the kept (maybe clipped) box, or ``None``."""
    x0, y0, x1, y1 = box
    if not all(map(math.isfinite, box)):
        return log.skip(file, item, "malformed", f"non-finite box ({shown})")
    if x1 < x0 or y1 < y0:
        return _inverted(file, item, shown, x1 < x0, y1 < y0, log)
    if x1 == x0 or y1 == y0:
        return log.skip(file, item, "box_zero_area", f"zero-area box ({shown})")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return log.skip(
            file, item, "box_outside", f"box entirely outside the {width}x{height} image ({shown})"
        )
    kept = np.clip(np.array(box, dtype=np.float64), 0, [width, height, width, height])
    if np.abs(kept - box).max() > EDGE_TOLERANCE:
        log.fix(
            file,
            item,
            "box_clipped",
            f"box partly outside the {width}x{height} image ({shown}); clipped "
            f"to [{', '.join(_num(v) for v in kept)}]",
        )
    return kept.astype(np.float32)


def _inverted(file, item, shown, x: bool, y: bool, log) -> None:
    axes = " and ".join(a for a, bad in (("x_max < x_min", x), ("y_max < y_min", y)) if bad)
    return log.skip(file, item, "box_inverted", f"inverted box ({shown}): {axes}; not swapped")


def _checked_size(path: Path, item: str, n: int, log, verify: bool) -> tuple[int, int] | None:
    """The upright ``(width, height)`` of an image file, or ``None`` (listed) if unusable."""
    try:
        return _image_size(path, verify)
    except ImageError as exc:
        code = "image_missing" if exc.reason == "file not found" else "image_unreadable"
        return log.skip(path, item, code, f"{exc.reason}; skipped with its {n} object(s)")


def _image_size(path: Path, verify: bool) -> tuple[int, int]:
    """Upright ``(width, height)`` from the header (or a full decode); ``ImageError`` with the
    same reasons as :func:`kvision.preprocess.decode_image` when unusable."""
    if verify:
        return decode_image(read_bytes(path), path).size
    head = _read_head(path)
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), "image")
    try:
        with Image.open(path) as image:
            width, height = image.size
            # PNG keeps EXIF in a chunk Pillow may only find by decoding: read it when present.
            has_exif = image.format != "PNG" or "exif" in image.info
            orientation = image.getexif().get(0x0112, 1) if has_exif else 1
    except UnidentifiedImageError:
        reason = "not an image (cannot identify)"
        raise ImageError(path, reason if kind == "image" else f"corrupt {kind} file") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError ...
        message = str(exc) or type(exc).__name__
        truncated = isinstance(exc, EOFError) or "truncated" in message.lower()
        reason = f"truncated {kind} file" if truncated else f"corrupt {kind} file ({message})"
        raise ImageError(path, reason) from None
    return (height, width) if orientation in _ROTATING_ORIENTATIONS else (width, height)


def _read_head(path: Path, size: int = 16) -> bytes:
    """The first bytes of an image file; ``ImageError`` when missing, empty or unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(size)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"unreadable file ({type(exc).__name__}: {exc.strerror})") from None
    if not head:
        raise ImageError(path, "zero-byte file")
    return head


def _example(path, image_id, width, height, objects) -> DetectionExample:
    segs = [o[2] for o in objects]
    areas = [o[5] for o in objects]
    return DetectionExample(
        image_path=str(path),
        image_id=image_id,
        width=width,
        height=height,
        boxes=np.array([o[0] for o in objects], dtype=np.float32).reshape(-1, 4),
        classes=np.array([o[1] for o in objects], dtype=np.int32),
        segmentations=None if all(s is None for s in segs) else segs,
        iscrowd=np.array([o[3] for o in objects], dtype=bool),
        difficult=np.array([o[4] for o in objects], dtype=bool),
        areas=None if not objects or None in areas else np.array(areas, dtype=np.float32),
    )


def _dataset(examples, labels, category_ids, log, source) -> DetectionDataset:
    """The dataset; ``DetectionDataError`` when every image was skipped (not a dataset)."""
    if not examples:
        first = "; ".join(str(p) for p in log.problems[:3])
        raise DetectionDataError(
            f"No usable image in {source}: all were skipped"
            + (f" (first problems: {first})" if first else "")
        )
    return DetectionDataset(examples, list(labels), list(category_ids), log.problems)


def _labels(labels) -> list[str]:
    """Class names from a list, or from a names file (``.yaml``/``.yml`` or plain text)."""
    if isinstance(labels, list | tuple):
        names, source = [str(n) for n in labels], "`labels`"
    else:
        path = Path(labels)
        if not path.is_file():
            raise DetectionDataError(f"Class names file {path} not found")
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
            if path.suffix.lower() in (".yaml", ".yml"):
                names = _yaml_names(text, path)
            else:
                lines = text.rstrip().splitlines()
                names = [line.strip() for line in lines]
        except UnicodeDecodeError as exc:
            raise DetectionDataError(f"Class names file {path} is not UTF-8 text ({exc})") from None
    empty = [i for i, n in enumerate(names) if not n]
    if not names or empty or len(set(names)) != len(names):
        problem = f"entry {empty[0]} is empty" if empty else "names repeat" if names else "none"
        raise DetectionDataError(
            f"Class names in {source} should be unique and non-empty "
            f"({problem}). Received: {names!r:.200}"
        )
    return names


def _yaml_names(text: str, path: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DetectionDataError(f"Class names file {path} is not valid YAML ({exc})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not all(isinstance(n, str | int) for n in names):
        raise DetectionDataError(
            f"Class names file {path} should have `names:` as a list or "
            f"{{0: name, 1: name, ...}}. Received: {names!r:.200}"
        )
    return [str(n).strip() for n in names]


def _image_root(dataset: DetectionDataset, images_dir) -> Path:
    if images_dir is not None:
        return Path(images_dir).absolute()
    parents = {str(Path(ex.image_path).absolute().parent) for ex in dataset.examples}
    return Path(os.path.commonpath(parents)) if parents else Path.cwd()


def _relative(image_path: str, root: Path) -> str:
    rel = Path(os.path.relpath(Path(image_path).absolute(), root))
    if rel.parts[:1] == ("..",):
        raise InputValueError(f"Image {image_path} is not under images_dir {root}")
    return rel.as_posix()


def _folder(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DetectionDataError(
            f"Folder {path} {'is not a folder' if path.exists() else 'not found'}"
        )
    return path


def _text(element, tag: str) -> str:
    child = element.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float) -> str:
    return f"{value:g}"


def _check_on_error(on_error) -> None:
    if on_error not in ON_ERROR_VALUES:
        raise InputValueError(
            f"`on_error` should be one of {', '.join(ON_ERROR_VALUES)}. "
            f"Received: on_error={on_error!r}"
        )
