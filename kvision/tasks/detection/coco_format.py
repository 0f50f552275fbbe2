"""COCO detection JSON: :func:`read_coco` and :func:`write_coco`.

The bad-input policy and coordinate conventions are in :mod:`kvision.tasks.detection.formats`;
the shared rules (box checks, image sizes, problem log) in ``format_rules.py``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from kvision.io import atomic_write_json
from kvision.tasks.detection.example import DetectionDataset, Problem
from kvision.tasks.detection.format_rules import (
    DetectionDataError,
    _check_box,
    _check_on_error,
    _checked_size,
    _dataset,
    _example,
    _image_root,
    _is_finite,
    _is_int,
    _Log,
    _num,
    _relative,
)


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


# --- parsing ---------------------------------------------------------------------------------


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
