"""The rules every detection reader shares: the errors, the problem log (``on_error``), the
box policy, image sizes from file headers, class-names files, paths.

The policy itself is described in :mod:`kvision.tasks.detection.formats`; the readers and
writers are in ``coco_format.py``, ``voc_format.py`` and ``yolo_format.py``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kvision.errors import InputValueError
from kvision.preprocess import ImageError, decode_image, read_bytes
from kvision.tasks.detection.example import DetectionDataset, DetectionExample, Problem

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
ON_ERROR_VALUES = ("skip", "raise")
EDGE_TOLERANCE = 0.01  # px a box may overshoot the image without a problem row
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
