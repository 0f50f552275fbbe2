"""Image-folder datasets (one sub-folder per class) and the bad-input policy.

``scan_image_folder`` opens every candidate file with PIL (verify + full decode), so corrupt,
truncated, empty and mislabelled files are found before training, each with a precise reason.
``on_error="skip"`` (default) lists them in ``FolderScan.bad_files`` and goes on;
``on_error="raise"`` stops at the first one. ``file_dataset`` decodes the good files in a
parallel, deterministic ``tf.data`` pipeline::

    scan = scan_image_folder("data/train")            # data/train/cat/1.png, data/train/dog/2.jpg
    ds = file_dataset(scan.files, scan.labels, scan.channels, scan.image_size)
    write_bad_files(scan.bad_files, "runs/demo/bad_files.csv")

Pixels are decoded the way TensorFlow decodes them (no EXIF rotation; alpha is dropped;
16-bit samples keep their high byte), so training and serving see the same numbers.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageFile, UnidentifiedImageError

from kvision.data.idx import DatasetError
from kvision.io import atomic_write_text

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
ON_ERROR_VALUES = ("skip", "raise")
BAD_FILES_CSV = "bad_files.csv"

_JUNK_NAMES = {"Thumbs.db", "desktop.ini", "__MACOSX"}  # ignored silently, like hidden files
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)) - {0x7F})
_INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # 16/32-bit integer samples
_GRAY_MODES = {"1", "L", "LA", "La"} | _INT_MODES


class ImageError(ValueError):
    """One image file cannot be used. ``path`` and ``reason`` say which and why.

    Args:
        path: the file.
        reason: short and specific, e.g. ``"truncated PNG file"``.
        hint: optional sentence appended to the message (what to do about it).
    """

    def __init__(self, path: str, reason: str, hint: str = ""):
        self.path, self.reason, self.hint = str(path), reason, hint
        super().__init__(f"Bad image file {path}: {reason}." + (f" {hint}" if hint else ""))

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.hint)


@dataclass(frozen=True)
class BadFile:
    """A file (or class folder) left out of a dataset, and why.

    Args:
        path: the file or folder.
        reason: short and specific, e.g. ``"zero-byte file"`` or ``"empty class folder"``.
    """

    path: str
    reason: str


@dataclass
class FolderScan:
    """What ``scan_image_folder`` found.

    Args:
        files: good image files, sorted by class, then by path inside the class folder.
        labels: int64 class index per file (index into ``class_names``).
        class_names: class folder names (sorted), or the ``class_names`` that were given.
        bad_files: files and class folders left out, with reasons.
        channels: 1 if every good image is grayscale, else 3.
        image_size: ``(height, width)`` most common among the good files.
    """

    files: list[str]
    labels: np.ndarray
    class_names: list[str]
    bad_files: list[BadFile]
    channels: int
    image_size: tuple[int, int]


def scan_image_folder(
    root: str | Path,
    on_error: str = "skip",
    class_names: list[str] | None = None,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> FolderScan:
    """Find, check and label the images of a folder with one sub-folder per class.

    Every file with an image extension is decoded fully, so corrupt and truncated files are
    found here, not in the middle of an epoch. Hidden files (``.DS_Store``) are ignored; files
    with other extensions are bad files (``"unsupported extension .txt"``); files directly in
    ``root`` are ignored. Images in nested folders count for their top-level class folder.

    Args:
        root: the folder, e.g. ``root/cat/1.png``, ``root/dog/2.jpg``.
        on_error: ``"skip"`` (default): list bad files in ``bad_files`` and go on; a class
            folder without usable images is dropped and listed too. ``"raise"``: raise
            ``ImageError`` at the first bad file, ``DatasetError`` at an empty class folder.
        class_names: the known classes in label order (e.g. the training classes when scanning
            a test folder). Every class folder must be one of them and hold usable images.
            ``None`` (default) uses the sorted sub-folder names.
        extensions: file extensions of images (case-insensitive), default PNG, JPEG, BMP.

    Returns:
        A ``FolderScan``.

    Raises:
        DatasetError: ``root`` is missing or has fewer than 2 classes with usable images, a
            class folder is not in ``class_names`` (or a listed class has no folder), or a
            class folder is empty (see ``on_error``).
        ImageError: a bad file, with ``on_error="raise"``.

    Example:
        >>> scan = scan_image_folder("data/train")
        >>> scan.class_names, len(scan.files), scan.channels, scan.image_size
        (['cat', 'dog'], 200, 3, (64, 64))
    """
    _check_on_error(on_error)
    extensions = _check_extensions(extensions)
    if class_names is not None:
        class_names = _check_class_names(class_names)
    root = Path(root)
    example = root / "cat" / "1.png"
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise DatasetError(
            f"Image folder {root} {what}; expected one sub-folder per class, e.g. {example}"
        )
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not _ignored(e.name))
    if not folders:
        loose = [e.name for e in os.scandir(root) if _extension(e.name) in extensions]
        hint = f" ({len(loose)} images lie directly in {root}: move them)" if loose else ""
        raise DatasetError(
            f"Image folder {root} has no class sub-folders{hint}; expected one sub-folder per "
            f"class, e.g. {example}"
        )
    if class_names is not None:
        _check_known_classes(root, folders, class_names)

    bad: list[BadFile] = []
    by_class: dict[str, list[tuple[str, bool, tuple[int, int]]]] = {}
    for name in class_names or folders:
        folder = root / name
        good, candidates = [], 0
        for path in _walk_files(folder):
            candidates += 1
            try:
                if _extension(path.name) not in extensions:
                    raise ImageError(
                        path, f"unsupported extension {_extension(path.name) or '(none)'}"
                    )
                image = _open_checked(path, _read(path))
                good.append((str(path), _is_gray(image), (image.height, image.width)))
            except ImageError as exc:
                if on_error == "raise":
                    raise ImageError(
                        exc.path,
                        exc.reason,
                        "Fix or remove it, or pass on_error='skip' to list bad files and go on.",
                    ) from None
                bad.append(BadFile(exc.path, exc.reason))
        if good:
            by_class[name] = good
            continue
        reason = "empty class folder" if candidates == 0 else "no usable images in class folder"
        if on_error == "raise" or class_names is not None:
            given = " listed in `class_names`" if class_names is not None else ""
            raise DatasetError(
                f"Class folder {folder}{given} has no usable images ({reason}); add images of "
                f"class {name!r} or remove the folder."
            )
        bad.append(BadFile(str(folder), reason))

    if len(by_class) < 2:
        raise DatasetError(
            f"Image folder {root} has {len(by_class)} class folder(s) with usable images "
            f"({', '.join(by_class) or 'none'}); a classifier needs at least 2, e.g. {example} "
            f"and {root / 'dog' / '1.png'}."
        )
    names = class_names or list(by_class)
    entries = [
        (f, gray, size, names.index(c)) for c, good in by_class.items() for f, gray, size in good
    ]
    return FolderScan(
        files=[e[0] for e in entries],
        labels=np.array([e[3] for e in entries], dtype=np.int64),
        class_names=list(names),
        bad_files=bad,
        channels=1 if all(e[1] for e in entries) else 3,
        image_size=Counter(e[2] for e in entries).most_common(1)[0][0],
    )


def load_image(path: str | Path, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file into a ``uint8`` array of shape ``(height, width, channels)``.

    Palette, alpha, CMYK, 1-bit and 16-bit images are converted (alpha is dropped, 16-bit
    samples keep their high byte, RGB to gray uses ITU-R 601 luma, as in ``tf.image``).

    Args:
        path: the image file.
        channels: 1 (grayscale) or 3 (RGB).
        size: ``(height, width)`` to resize to (PIL bilinear); ``None`` (default) keeps the size.

    Raises:
        ImageError: the file is missing, corrupt, truncated, not an image or in an unsupported
            mode; the message names the file and the reason.

    Example:
        >>> load_image("data/train/cat/1.png", channels=3, size=(32, 32)).shape
        (32, 32, 3)
    """
    _check_channels(channels)
    if size is not None:
        size = _check_size(size)
    path = Path(path)
    image = _to_mode(_open_checked(path, _read(path)), path, "L" if channels == 1 else "RGB")
    if size is not None and (image.height, image.width) != size:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def file_dataset(
    files: list[str],
    labels,
    channels: int,
    size: tuple[int, int],
    on_error: str = "skip",
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(uint8 image [height, width, channels], int64 label)``.

    Files are decoded with ``load_image`` in parallel (``tf.data.AUTOTUNE``) in a deterministic
    order. Images get a static shape, so they batch without padding.

    Args:
        files: image files (e.g. ``FolderScan.files``).
        labels: one integer label per file.
        channels: 1 or 3.
        size: ``(height, width)``; every image is resized to it.
        on_error: ``"skip"`` (default): a file that fails to decode (e.g. changed after the
            scan) is logged and dropped, the epoch goes on. ``"raise"``: iteration raises a
            ``tf.errors.OpError`` whose message names the file and the reason.

    Example:
        >>> ds = file_dataset(scan.files, scan.labels, 1, (28, 28)).batch(32)
    """
    _check_on_error(on_error)
    _check_channels(channels)
    height, width = _check_size(size)
    labels = np.asarray(labels)
    if labels.shape != (len(files),) or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(
            f"`labels` should hold one integer per file ({len(files)} files). "
            f"Received: labels with shape {labels.shape} and dtype {labels.dtype}"
        )
    decode = partial(_decode_for_tf, channels=channels, size=(height, width), on_error=on_error)

    def load(path, label):
        image, ok = tf.numpy_function(decode, [path], (tf.uint8, tf.bool), stateful=False)
        return tf.ensure_shape(image, (height, width, channels)), label, tf.ensure_shape(ok, ())

    paths = tf.constant([os.fsencode(f) for f in files], dtype=tf.string)
    ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, dtype=tf.int64)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.filter(lambda image, label, ok: ok).map(lambda image, label, ok: (image, label))


def write_bad_files(bad_files: list[BadFile], path: str | Path) -> Path:
    """Write the bad files as CSV (``path,reason`` header, one row each), atomically.

    Args:
        bad_files: e.g. ``FolderScan.bad_files``; an empty list writes only the header.
        path: the CSV file, e.g. ``run_dir / "bad_files.csv"``.

    Example:
        >>> write_bad_files(scan.bad_files, "runs/demo/bad_files.csv")
        PosixPath('runs/demo/bad_files.csv')
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows([bad.path, bad.reason] for bad in bad_files)
    return atomic_write_text(path, buffer.getvalue())


# --- helpers ---------------------------------------------------------------------------------


def _decode_for_tf(path: bytes, channels: int, size: tuple[int, int], on_error: str):
    """``tf.numpy_function`` body: (image, True), or (zeros, False) for a skipped bad file."""
    try:
        return load_image(os.fsdecode(path), channels, size), np.bool_(True)
    except ImageError as exc:
        if on_error == "raise":
            raise
        logger.warning("Skipping bad image file %s: %s", exc.path, exc.reason)
        return np.zeros((*size, channels), dtype=np.uint8), np.bool_(False)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"unreadable file ({type(exc).__name__}: {exc.strerror})") from None


def _open_checked(path: Path, data: bytes) -> Image.Image:
    """Verify and fully decode ``data``; return the loaded image or raise ``ImageError``."""
    if not data:
        raise ImageError(path, "zero-byte file")
    kind = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette transparency notes
            image = Image.open(io.BytesIO(data))
            if (
                type(image).verify is not ImageFile.ImageFile.verify
            ):  # PNG: checksums, trailing chunks
                image.verify()
                image = Image.open(io.BytesIO(data))
            image.load()  # full decode: catches data cut short
    except UnidentifiedImageError:
        if kind:
            raise ImageError(path, f"corrupt {kind} file (header cannot be read)") from None
        if not data[:1024].translate(None, _TEXT_BYTES):
            raise ImageError(path, f"not an image (text file named {path.suffix})") from None
        raise ImageError(path, "not an image (cannot identify)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"image too large ({exc})") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        kind = kind or "image"
        message = str(exc)
        if isinstance(exc, EOFError) or "truncated" in message.lower():
            raise ImageError(path, f"truncated {kind} file") from None
        raise ImageError(path, f"corrupt {kind} file ({message or type(exc).__name__})") from None
    _to_mode(image, path, "L" if _is_gray(image) else "RGB")  # unsupported modes fail here
    return image


def _to_mode(image: Image.Image, path: Path, mode: str) -> Image.Image:
    """Convert to ``"L"`` or ``"RGB"`` or raise ``ImageError`` for an unsupported mode."""
    if image.mode == mode:
        return image
    if image.mode in _INT_MODES:  # 16-bit: keep the high byte, like libpng and tf.image
        high = (np.clip(np.asarray(image), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(high).convert(mode)
    if image.mode != "F":  # float images have no agreed range: refuse rather than guess
        for route in ((mode,), ("RGB", mode)):
            try:
                converted = image
                for step in route:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        converted = converted.convert(step)
                return converted
            except ValueError:
                continue
    raise ImageError(path, f"unsupported image mode {image.mode!r}")


def _is_gray(image: Image.Image) -> bool:
    if image.mode in ("P", "PA"):
        palette = np.array(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
        return bool(palette.size) and bool((palette == palette[:, :1]).all())
    return image.mode in _GRAY_MODES or image.mode == "F"


def _walk_files(folder: Path):
    """Non-hidden files under ``folder``, sorted by their path relative to it."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not _ignored(d)]
        found += [Path(parent, n) for n in names if not _ignored(n)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in _JUNK_NAMES


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _check_known_classes(root: Path, folders: list[str], class_names: list[str]) -> None:
    unknown = [f for f in folders if f not in class_names]
    if unknown:
        raise DatasetError(
            f"Labels out of range: class folder {root / unknown[0]} is not one of the known "
            f"classes {class_names}. Rename or remove the folder, or train with this class."
        )
    missing = [c for c in class_names if c not in folders]
    if missing:
        raise DatasetError(
            f"Class folder {root / missing[0]} not found: every class in `class_names` "
            f"{class_names} needs a folder of images in {root}."
        )


def _check_on_error(on_error) -> None:
    if on_error not in ON_ERROR_VALUES:
        raise ValueError(
            f"`on_error` should be one of {', '.join(ON_ERROR_VALUES)}. "
            f"Received: on_error={on_error!r}"
        )


def _check_channels(channels) -> None:
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"`channels` should be 1 or 3. Received: channels={channels!r}")


def _check_size(size) -> tuple[int, int]:
    ok = isinstance(size, tuple | list) and len(size) == 2
    if not ok or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(
            f"`size` should be a (height, width) pair of positive integers. Received: size={size!r}"
        )
    return int(size[0]), int(size[1])


def _check_extensions(extensions) -> tuple[str, ...]:
    if (
        isinstance(extensions, str)
        or not extensions
        or not all(isinstance(e, str) and e.startswith(".") and len(e) > 1 for e in extensions)
    ):
        raise ValueError(
            "`extensions` should be a non-empty tuple of extensions such as ('.png', '.jpg'). "
            f"Received: extensions={extensions!r}"
        )
    return tuple(e.lower() for e in extensions)


def _check_class_names(class_names) -> list[str]:
    names = list(class_names) if not isinstance(class_names, str) else []
    if (
        len(names) < 2
        or len(set(names)) != len(names)
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ValueError(
            "`class_names` should list at least 2 unique, non-empty class names. "
            f"Received: class_names={class_names!r}"
        )
    return names
