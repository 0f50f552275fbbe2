"""Segmentation datasets: image / mask folder pairs and COCO instance masks, one example format.

Two layouts are read (``read_segmentation_dataset`` detects which):

- **Mask folders** (Pascal VOC / Cityscapes style)::

      DIR/images/<name>.<png|jpg|...>
      DIR/masks/<name>.png         class id per pixel: 8- or 16-bit gray, or a palette PNG
                                   (its palette indices are the class ids, as in VOC)
      DIR/instances/<name>.png     optional: instance id per pixel (0 = none), for instance
                                   metrics (nuclei F1)
      DIR/labels.txt               class names, one a line, line i = class id i

- **COCO JSON** with ``segmentation`` (polygons or RLE), e.g. ``tools/make_detection_data.py``'s
  pasted-objects set: class id 0 is ``background``, category k is class k (in the file's
  category order); objects are painted in annotation order, so a later one covers an earlier
  one, and each object is also an instance.

**Bad input** (each listed in ``problems`` with the file and the reason; never a crash, never
silently dropped):

==================================  =========  ============================================
case                                action     rule
==================================  =========  ============================================
image without a mask                skipped    nothing to learn from or score
mask without an image               skipped    listed so a misnamed file is found
image or mask unreadable            skipped    empty, corrupt, not an image
mask size differs from its image    skipped    a resized mask would be misaligned
RGB mask (not class ids)            skipped    colour-coded masks need a palette PNG
class id outside the label set      fixed      those pixels become ``ignore_index`` (no loss,
                                               not scored); the count is listed
==================================  =========  ============================================

``ignore_index`` (default 255) is honoured, not an error: pixels holding it take no loss and
are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IGNORE_INDEX = 255
LABELS_FILE = "labels.txt"


@dataclass(frozen=True, eq=False)
class SegmentationExample:
    """One image and where its masks come from.

    Args:
        image_path: the image file.
        width, height: the image's size in pixels (the masks have the same).
        mask_path: PNG of class ids (mask folders), or ``None`` (COCO: ``objects``).
        instances_path: PNG of instance ids, or ``None``.
        objects: COCO only: the ``DetectionExample`` whose segmentations paint the masks.
    """

    image_path: str
    width: int
    height: int
    mask_path: str | None = None
    instances_path: str | None = None
    objects: object | None = None

    @property
    def name(self) -> str:
        return Path(self.image_path).stem

    @property
    def has_instances(self) -> bool:
        return self.instances_path is not None or self.objects is not None


@dataclass
class SegmentationDataset:
    """Examples, class names (index = class id), the readers' problems and the source."""

    examples: list[SegmentationExample]
    labels: list[str]
    problems: list = field(default_factory=list)
    source: str = ""
    format: str = "masks"
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def limited(self, n: int | None) -> SegmentationDataset:
        """The first ``n`` examples (all when ``n`` is falsy or larger)."""
        if not n or n >= len(self.examples):
            return self
        return replace(self, examples=self.examples[: int(n)])


class SegmentationDataError(InputValueError):
    """A folder that is not a segmentation dataset (the message says what was expected)."""


def _problem(file, item, reason, action, code):
    from kvision.tasks.detection.example import Problem

    return Problem(str(file), item, reason, action, code)


def read_segmentation_dataset(
    path, labels=None, *, ignore_index: int = IGNORE_INDEX, on_error: str = "skip"
) -> SegmentationDataset:
    """Read a segmentation dataset (module docstring for the layouts and the bad-input rules).

    Args:
        path: a mask-folder dataset (``images/`` + ``masks/``) or a COCO ``.json`` / a folder
            holding ``annotations.json`` and ``images/``.
        labels: class names (index = class id) for mask folders; default ``labels.txt`` in
            ``path``, else ``class_0 .. class_K`` from the largest id found.
        ignore_index: the mask value that means "not labelled" (default 255).
        on_error: ``"skip"`` (default: list and go on) or ``"raise"`` (the first problem raises
            ``SegmentationDataError``).

    Returns:
        A :class:`SegmentationDataset`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SegmentationDataError: neither layout, no usable example, or ``on_error="raise"``.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Segmentation dataset not found: {root}")
    if on_error not in ("skip", "raise"):
        raise InputValueError(f"`on_error` should be 'skip' or 'raise'. Received: {on_error!r}")
    if not 0 <= int(ignore_index) <= 65535:
        raise InputValueError(f"`ignore_index` should be in 0..65535. Received: {ignore_index}")
    coco = root if root.suffix == ".json" else root / "annotations.json"
    if (root / "masks").is_dir() and (root / "images").is_dir():
        dataset = _read_mask_folders(root, labels, int(ignore_index))
    elif coco.is_file():
        dataset = _read_coco(coco, int(ignore_index))
    else:
        raise SegmentationDataError(
            f"{root} is not a segmentation dataset: expected images/ and masks/ folders (class "
            "ids per pixel, PNG) or a COCO annotations.json with segmentations. "
            "`python tools/make_segmentation_data.py --out DIR` writes one (nuclei)."
        )
    if on_error == "raise" and dataset.problems:
        raise SegmentationDataError(f"{dataset.problems[0]} (on_error=raise)")
    if not dataset.examples:
        listed = "; ".join(str(p) for p in dataset.problems[:3])
        raise SegmentationDataError(f"No usable image/mask pair in {root}. {listed}")
    return dataset


def _image_size(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _read_labels(root: Path, labels) -> list[str] | None:
    if labels is not None:
        if isinstance(labels, str | Path):
            labels = Path(labels).read_text().split("\n")
        return [str(x).strip() for x in labels if str(x).strip()]
    file = root / LABELS_FILE
    if file.is_file():
        return [line.strip() for line in file.read_text().splitlines() if line.strip()]
    return None


def _read_mask_folders(root: Path, labels, ignore_index: int) -> SegmentationDataset:
    names = _read_labels(root, labels)
    images = {p.stem: p for p in sorted((root / "images").iterdir())
              if p.suffix.lower() in IMAGE_SUFFIXES}  # fmt: skip
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.is_file()}
    instances_dir = root / "instances"
    problems, kept, found_max = [], [], 0
    for stem in sorted(set(masks) - set(images)):
        problems.append(_problem(masks[stem], "file", "mask without an image of the same name "
                                 f"in {root / 'images'}", "skipped", "mask_orphan"))  # fmt: skip
    checked = []
    for stem, image_path in images.items():
        mask_path = masks.get(stem)
        if mask_path is None:
            problems.append(_problem(image_path, "image", f"no mask {stem}.png in "
                                     f"{root / 'masks'}", "skipped", "mask_missing"))  # fmt: skip
            continue
        try:
            width, height = _image_size(image_path)
        except Exception as exc:
            problems.append(_problem(image_path, "image", f"unreadable image: {exc}", "skipped",
                                     "image_unreadable"))  # fmt: skip
            continue
        try:
            mask = _read_id_png(mask_path)
        except Exception as exc:
            problems.append(_problem(mask_path, "mask", f"unreadable mask: {exc}", "skipped",
                                     "mask_unreadable"))  # fmt: skip
            continue
        if mask.shape != (height, width):
            problems.append(_problem(mask_path, "mask", f"mask {mask.shape[1]}x{mask.shape[0]} "
                                     f"differs from its image {width}x{height}", "skipped",
                                     "size_mismatch"))  # fmt: skip
            continue
        inst = instances_dir / f"{stem}.png"
        labelled = mask[mask != ignore_index]
        found_max = max(found_max, int(labelled.max()) if labelled.size else 0)
        checked.append((stem, mask_path, mask, labelled))
        kept.append(SegmentationExample(str(image_path), int(width), int(height), str(mask_path),
                                        str(inst) if inst.is_file() else None))  # fmt: skip
    if names is None:
        names = [f"class_{i}" for i in range(found_max + 1)]
    for _, mask_path, _, labelled in checked:
        bad = labelled[labelled >= len(names)]
        if bad.size:
            problems.append(_problem(
                mask_path, "mask", f"{bad.size} pixel(s) with class id(s) "
                f"{sorted(set(bad.tolist()))[:5]} outside the {len(names)} labels: set to "
                f"ignore_index {ignore_index}", "fixed", "class_out_of_range"))  # fmt: skip
    return SegmentationDataset(kept, names, problems, str(root), "masks", ignore_index)


def _read_id_png(path) -> np.ndarray:
    """Class or instance ids of a mask PNG: ``[H, W]`` integers (palette indices for mode P)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
            raise ValueError(
                f"mode {im.mode} holds colours, not class ids: save the mask as a palette "
                "(mode P) or gray PNG whose values are the class ids"
            )
        return np.asarray(im).astype(np.int32)


def _read_coco(path: Path, ignore_index: int) -> SegmentationDataset:
    from kvision.tasks.detection.formats import read_detection_dataset

    det = read_detection_dataset(path if path.suffix == ".json" else path.parent, "coco")
    problems = list(det.problems)
    kept = []
    for ex in det.examples:
        segs = getattr(ex, "segmentations", None)
        if len(ex.classes) and (segs is None or any(s is None for s in segs)):
            problems.append(_problem(ex.image_path, "image", "an object has no segmentation "
                                     "(boxes only)", "skipped", "mask_missing"))  # fmt: skip
            continue
        kept.append(SegmentationExample(ex.image_path, int(ex.width), int(ex.height), objects=ex))
    labels = ["background", *det.labels]
    return SegmentationDataset(kept, labels, problems, str(path), "coco", ignore_index)


def load_masks(example: SegmentationExample, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """``(classes, instances)`` of one example at the image's own size: ``classes`` uint8 (or
    uint16 when ``ignore_index`` > 255) ``[H, W]`` class ids with out-of-range ids set to
    ``ignore_index``; ``instances`` int32 ``[H, W]`` (0 = none) or ``None``."""
    if example.objects is not None:
        from kvision.tasks.detection.example import decode_masks

        masks = decode_masks(example.objects)
        classes = np.zeros((example.height, example.width), np.int32)
        instances = np.zeros_like(classes)
        for i, (m, c) in enumerate(zip(masks, example.objects.classes, strict=True)):
            classes[m > 0] = int(c) + 1
            instances[m > 0] = i + 1
    else:
        classes = _read_id_png(example.mask_path)
        instances = _read_id_png(example.instances_path) if example.instances_path else None
    classes = np.where((classes >= num_classes) & (classes != ignore_index), ignore_index, classes)
    dtype = np.uint8 if ignore_index <= 255 else np.uint16
    return classes.astype(dtype), instances
