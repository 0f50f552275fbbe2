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

from pathlib import Path

from kvision.errors import InputValueError
from kvision.tasks.detection.coco_format import read_coco, write_coco
from kvision.tasks.detection.example import DetectionDataset, DetectionExample, Problem
from kvision.tasks.detection.format_rules import (
    EDGE_TOLERANCE,
    IMAGE_EXTENSIONS,
    ON_ERROR_VALUES,
    DataProblemError,
    DetectionDataError,
    _check_on_error,
)
from kvision.tasks.detection.voc_format import read_voc, write_voc
from kvision.tasks.detection.yolo_format import read_yolo, write_yolo

__all__ = [
    "EDGE_TOLERANCE",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "ON_ERROR_VALUES",
    "YOLO_NAMES_FILES",
    "DataProblemError",
    "DetectionDataError",
    "DetectionDataset",
    "DetectionExample",
    "Problem",
    "read_coco",
    "read_detection_dataset",
    "read_voc",
    "read_yolo",
    "write_coco",
    "write_voc",
    "write_yolo",
]

FORMATS = ("auto", "coco", "voc", "yolo")
YOLO_NAMES_FILES = ("classes.txt", "data.yaml", "data.yml", "labels/classes.txt")


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
