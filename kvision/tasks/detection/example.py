"""The one detection example format every reader returns and every detection stage reads.

Conventions (shared by all of ``kvision.tasks.detection``):

* boxes: float32 ``[N, 4]``, ``[x_min, y_min, x_max, y_max]`` in pixels of the upright image
  (the pixels kvision decodes: EXIF orientation applied), origin at the top-left corner of the
  top-left pixel, so a box covering a whole ``W x H`` image is ``[0, 0, W, H]``;
* classes: int32 ``[N]``, a 0-based index into ``DetectionDataset.labels``; ``category_ids[i]``
  is the COCO category id of ``labels[i]`` (kept to write COCO files and results);
* per-object flags: ``iscrowd`` (COCO crowd region: pycocotools ignores detections matched to
  it) and ``difficult`` (Pascal VOC: ignored by VOC evaluation), bool ``[N]``;
* every annotation a reader fixed or left out is a :class:`Problem` row; nothing is dropped
  silently.

Example:
    >>> ds = read_detection_dataset("data/shapes")        # kvision.tasks.detection.formats
    >>> ds.summary()["objects"], ds.class_counts()
    (412, {'circle': 207, 'square': 205})
    >>> ds.write_problems("runs/demo/problems.csv")
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError, MissingDependencyError
from kvision.io import atomic_write_text

ACTIONS = ("fixed", "skipped")
PROBLEMS_CSV = "problems.csv"
# Problem codes (``Problem.code``), stable names for counting; the reason says the details.
PROBLEM_CODES = (
    "box_clipped",  # fixed: box partly outside the image, clipped to it
    "box_outside",  # skipped: box entirely outside the image
    "box_zero_area",  # skipped: zero width or height
    "box_inverted",  # skipped: x_max < x_min or y_max < y_min (negative COCO w/h); not swapped
    "unknown_class",  # skipped: category id / class index / class name not in the labels
    "malformed",  # skipped: a field, line or file that cannot be parsed
    "duplicate_id",  # skipped: an image or annotation id seen before
    "unknown_image",  # skipped: a COCO annotation whose image_id is not in `images`
    "image_missing",  # skipped: the image file does not exist (with all its annotations)
    "image_unreadable",  # skipped: empty, corrupt or not an image (with all its annotations)
    "size_mismatch",  # skipped: the annotated width x height is not the image file's
    "label_file_missing",  # fixed: YOLO image without a .txt, kept as a negative image
    "label_file_orphan",  # skipped: YOLO .txt without an image
    "not_written",  # skipped by a writer: the target format cannot hold the object
)


@dataclass(frozen=True)
class Problem:
    """One annotation, object, line, image or file a reader fixed or left out, and why.

    Args:
        file: the file holding the problem (annotation JSON / XML / txt, or the image file).
        item: which part of it: ``"annotation id 7"``, ``"images[3]"``, ``"object 2"``
            (1-based), ``"line 4"``, ``"image"`` or ``"file"``.
        reason: short and specific, with the offending values.
        action: ``"fixed"`` (kept after the stated fix) or ``"skipped"`` (left out).
        code: one of ``PROBLEM_CODES`` (default ``""``), for counting.

    Example:
        >>> Problem("a.json", "annotation id 7", "unknown category id 99", "skipped")
    """

    file: str
    item: str
    reason: str
    action: str
    code: str = ""

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise InputValueError(
                f"`action` should be one of {', '.join(ACTIONS)}. Received: action={self.action!r}"
            )

    def __str__(self) -> str:
        return f"{self.file}, {self.item}: {self.reason} ({self.action})"


@dataclass(frozen=True, eq=False)
class DetectionExample:
    """One image and its objects.

    Args:
        image_path: the image file.
        image_id: an integer id, unique in the dataset (COCO's ``images[].id``).
        width: image width in pixels (upright, after EXIF orientation), > 0.
        height: image height in pixels, > 0.
        boxes: float32 ``[N, 4]`` ``[x_min, y_min, x_max, y_max]`` in pixels (lists are
            converted); finite, ``x_min < x_max``, ``y_min < y_max``.
        classes: int32 ``[N]`` index into the dataset's ``labels``.
        segmentations: ``None`` (default) when none of the objects has one, else a list of
            ``N`` raw COCO segmentations (polygon list ``[[x0, y0, x1, y1, ...], ...]`` or RLE
            dict ``{"counts": str | list[int], "size": [height, width]}``; ``None`` for an
            object without one).
        iscrowd: bool ``[N]``, COCO crowd regions; ``None`` (default) means all False.
        difficult: bool ``[N]``, Pascal VOC difficult objects; ``None`` (default) all False.
        areas: float32 ``[N]`` COCO ``area`` (the segment's area, used by COCO evaluation's
            size ranges), or ``None`` (default; box areas are used).

    Raises:
        InputValueError: a field of the wrong shape, dtype or value (named in the message).

    Example:
        >>> ex = DetectionExample("a.jpg", 1, 64, 48, [[2, 3, 20, 30]], [0])
        >>> ex.boxes.dtype, ex.classes.dtype, ex.iscrowd
        (dtype('float32'), dtype('int32'), array([False]))
    """

    image_path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    segmentations: list | None = None
    iscrowd: np.ndarray | None = None
    difficult: np.ndarray | None = None
    areas: np.ndarray | None = None

    def __post_init__(self):
        where = f"DetectionExample({self.image_path!r})"
        for name in ("image_id", "width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise InputValueError(f"{where}: `{name}` should be an int. Received: {value!r}")
            if name != "image_id" and value <= 0:
                raise InputValueError(f"{where}: `{name}` should be > 0. Received: {value}")
        boxes = np.asarray(self.boxes, dtype=np.float32)
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputValueError(f"{where}: `boxes` should be [N, 4]. Received: {boxes.shape}")
        n = len(boxes)
        if not np.isfinite(boxes).all() or (boxes[:, 2:] <= boxes[:, :2]).any():
            raise InputValueError(
                f"{where}: `boxes` should be finite [x_min, y_min, x_max, y_max] with "
                f"x_min < x_max and y_min < y_max. Received: {boxes.tolist()}"
            )
        classes = np.asarray(self.classes).reshape(-1)
        classes = np.zeros(0, np.int32) if n == 0 and classes.size == 0 else classes
        if classes.shape != (n,) or (n and classes.dtype.kind not in "iu") or (classes < 0).any():
            raise InputValueError(
                f"{where}: `classes` should hold {n} non-negative ints. Received: {self.classes!r}"
            )
        object.__setattr__(self, "image_id", int(self.image_id))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes.astype(np.int32))
        for name in ("iscrowd", "difficult"):
            flags = getattr(self, name)
            flags = np.zeros(n, bool) if flags is None else np.asarray(flags).astype(bool)
            if flags.shape != (n,):
                raise InputValueError(f"{where}: `{name}` should be bool [{n}]: {flags.shape}")
            object.__setattr__(self, name, flags)
        if self.areas is not None:
            areas = np.asarray(self.areas, dtype=np.float32).reshape(-1)
            if areas.shape != (n,) or not (np.isfinite(areas) & (areas >= 0)).all():
                raise InputValueError(f"{where}: `areas` should be {n} finite values >= 0")
            object.__setattr__(self, "areas", areas)
        if self.segmentations is not None and len(self.segmentations) != n:
            raise InputValueError(
                f"{where}: `segmentations` should hold one entry per box ({n}). "
                f"Received: {len(self.segmentations)}"
            )


@dataclass
class DetectionDataset:
    """Examples, their label names and what the reader fixed or left out.

    Args:
        examples: the usable images, in the source's order.
        labels: class names; ``classes`` index into it.
        category_ids: the COCO category id of each label (ascending ids for COCO sources;
            ``1..K`` for VOC and YOLO sources).
        problems: every fixed or skipped annotation, image or file (default empty).

    Raises:
        InputValueError: labels and category ids differ in length or repeat, or an example's
            class is out of range.

    Example:
        >>> ds = DetectionDataset([ex], ["cat", "dog"], [1, 2])
        >>> ds.class_counts()
        {'cat': 1, 'dog': 0}
    """

    examples: list[DetectionExample]
    labels: list[str]
    category_ids: list[int]
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self):
        if len(self.labels) != len(self.category_ids):
            raise InputValueError(
                f"`labels` ({len(self.labels)}) and `category_ids` ({len(self.category_ids)}) "
                "should have the same length"
            )
        for name in ("labels", "category_ids"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise InputValueError(f"`{name}` should not repeat. Received: {name}={values}")
        k = len(self.labels)
        for ex in self.examples:
            if len(ex.classes) and ex.classes.max() >= k:
                raise InputValueError(
                    f"Example {ex.image_path}: class {int(ex.classes.max())} is out of range "
                    f"for {k} labels {self.labels}"
                )

    def class_counts(self) -> dict[str, int]:
        """Objects per label (every label, zeros included; crowd and difficult included)."""
        counts = np.zeros(len(self.labels), dtype=np.int64)
        for ex in self.examples:
            counts += np.bincount(ex.classes, minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts, strict=True)}

    def summary(self) -> dict:
        """A JSON-ready summary.

        Returns:
            ``{"images", "negative_images", "objects", "crowd", "difficult", "per_class":
            {label: objects}, "problems": {"total", "fixed", "skipped", "by_reason":
            {code: count}}}``.
        """
        actions = Counter(p.action for p in self.problems)
        return {
            "images": len(self.examples),
            "negative_images": sum(1 for ex in self.examples if not len(ex.boxes)),
            "objects": sum(len(ex.boxes) for ex in self.examples),
            "crowd": sum(int(ex.iscrowd.sum()) for ex in self.examples),
            "difficult": sum(int(ex.difficult.sum()) for ex in self.examples),
            "per_class": self.class_counts(),
            "problems": {
                "total": len(self.problems),
                "fixed": actions["fixed"],
                "skipped": actions["skipped"],
                "by_reason": dict(Counter(p.code or "other" for p in self.problems)),
            },
        }

    def write_problems(self, path: str | Path) -> Path:
        """Write ``problems`` as CSV atomically: header ``file,item,reason,action,code``, one
        row each (only the header when there are none).

        Example:
            >>> ds.write_problems("runs/demo/problems.csv")
            PosixPath('runs/demo/problems.csv')
        """
        return write_problems(self.problems, path)


def write_problems(problems: list[Problem], path: str | Path) -> Path:
    """Write problems as CSV (``file,item,reason,action,code``), atomically. See
    :meth:`DetectionDataset.write_problems`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "item", "reason", "action", "code"])
    writer.writerows([p.file, p.item, p.reason, p.action, p.code] for p in problems)
    return atomic_write_text(path, buffer.getvalue())


def decode_masks(example: DetectionExample) -> np.ndarray:
    """The objects' segmentations as binary masks, through ``pycocotools.mask``.

    Polygons are rasterized the way COCO evaluation does (``frPyObjects`` + ``merge``); RLE
    with uncompressed (list) counts or compressed (string) counts is decoded as is.

    Args:
        example: a ``DetectionExample`` with ``segmentations``.

    Returns:
        uint8 ``[N, height, width]`` with values 0 / 1 (``[0, height, width]`` for no objects).

    Raises:
        InputValueError: the example has no segmentations, an object has none, or an RLE's
            ``size`` is not ``[height, width]``.
        MissingDependencyError: pycocotools is not installed.

    Example:
        >>> decode_masks(ex).shape
        (3, 480, 640)
    """
    h, w, n = example.height, example.width, len(example.boxes)
    if n == 0:
        return np.zeros((0, h, w), dtype=np.uint8)
    where = f"{example.image_path} (image id {example.image_id})"
    if example.segmentations is None:
        raise InputValueError(f"{where} has no segmentations to decode")
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise MissingDependencyError(
            "decode_masks needs pycocotools: pip install 'kvision[detection]'"
        ) from None
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i, seg in enumerate(example.segmentations):
        if seg is None:
            raise InputValueError(f"{where}: object {i + 1} has no segmentation")
        if isinstance(seg, dict):
            if list(seg.get("size", [])) != [h, w]:
                raise InputValueError(
                    f"{where}: object {i + 1} RLE size {seg.get('size')} is not [height, width]"
                    f" = [{h}, {w}]"
                )
            counts = seg["counts"]
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = {
                    "size": [h, w],
                    "counts": counts.encode() if isinstance(counts, str) else counts,
                }
        else:
            rings = [list(map(float, ring)) for ring in seg]
            if not rings or any(len(r) < 6 or len(r) % 2 for r in rings):
                raise InputValueError(
                    f"{where}: object {i + 1} polygon rings should hold >= 3 (x, y) points"
                )
            rle = mask_utils.merge(mask_utils.frPyObjects(rings, h, w))
        masks[i] = mask_utils.decode(rle)
    return masks
