"""Image-folder datasets (one sub-folder per class) and the bad-input policy.

``scan_image_folder`` opens every candidate file with PIL (verify + full decode), so corrupt,
truncated, empty and mislabelled files are found before training, each with a precise reason.
``on_error="skip"`` (default) lists them in ``FolderScan.bad_files`` and goes on;
``on_error="raise"`` stops at the first one. ``file_dataset`` decodes the good files in a
parallel, deterministic ``tf.data`` pipeline::

    scan = scan_image_folder("data/train")            # data/train/cat/1.png, data/train/dog/2.jpg
    ds = file_dataset(scan.files, scan.labels, scan.channels, scan.image_size)
    write_bad_files(scan.bad_files, "runs/demo/bad_files.csv")

Pixels are decoded by :mod:`kvision.preprocess`, the one decode -> mode conversion -> resize
path that predict, benchmark and serve use too (EXIF orientation applied; alpha dropped; 16-bit
samples keep their high byte), so training and serving see the same numbers.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import tensorflow as tf

from kvision.data.idx import DatasetError
from kvision.errors import InputValueError
from kvision.io import atomic_write_text
from kvision.preprocess import (  # noqa: F401  (ImageError re-exported: the folder API raises it)
    ImageError,
    check_channels,
    check_size,
    decode_image,
    is_gray,
    load_pixels,
    read_bytes,
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
ON_ERROR_VALUES = ("skip", "raise")
BAD_FILES_CSV = "bad_files.csv"

_JUNK_NAMES = {"Thumbs.db", "desktop.ini", "__MACOSX"}  # ignored silently, like hidden files


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
        image_size: ``(height, width)`` most common among the good files (upright, after
            their EXIF orientation).
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
                image = decode_image(read_bytes(path), path)
                good.append((str(path), is_gray(image), (image.height, image.width)))
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


def load_image(
    path: str | Path, channels: int, size: tuple[int, int] | None = None, resize: str = "stretch"
) -> np.ndarray:
    """Decode one image file into a ``uint8`` array of shape ``(height, width, channels)``.

    The same as :func:`kvision.preprocess.load_pixels` (its module docstring states the rules:
    EXIF orientation applied; palette, CMYK and 1-bit converted; alpha dropped; 16-bit samples
    keep their high byte; RGB to gray uses ITU-R 601 luma; Pillow bilinear resize).

    Args:
        path: the image file.
        channels: 1 (grayscale) or 3 (RGB).
        size: ``(height, width)`` to resize to; ``None`` (default) keeps the size.
        resize: ``"stretch"`` (default) or ``"letterbox"``.

    Raises:
        ImageError: the file is missing, corrupt, truncated, not an image or in an unsupported
            mode; the message names the file and the reason.

    Example:
        >>> load_image("data/train/cat/1.png", channels=3, size=(32, 32)).shape
        (32, 32, 3)
    """
    return load_pixels(path, channels, size, resize)


def file_dataset(
    files: list[str],
    labels,
    channels: int,
    size: tuple[int, int],
    on_error: str = "skip",
    resize: str = "stretch",
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
        resize: ``"stretch"`` (default) or ``"letterbox"`` (the contract's mode).

    Example:
        >>> ds = file_dataset(scan.files, scan.labels, 1, (28, 28)).batch(32)
    """
    _check_on_error(on_error)
    check_channels(channels)
    height, width = check_size(size)
    labels = np.asarray(labels)
    if labels.shape != (len(files),) or (labels.size and labels.dtype.kind not in "iu"):
        raise InputValueError(
            f"`labels` should hold one integer per file ({len(files)} files). "
            f"Received: labels with shape {labels.shape} and dtype {labels.dtype}"
        )
    decode = partial(_decode_for_tf, channels=channels, size=(height, width), on_error=on_error,
                     resize=resize)  # fmt: skip

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


def _decode_for_tf(
    path: bytes, channels: int, size: tuple[int, int], on_error: str, resize="stretch"
):
    """``tf.numpy_function`` body: (image, True), or (zeros, False) for a skipped bad file."""
    try:
        return load_image(os.fsdecode(path), channels, size, resize), np.bool_(True)
    except ImageError as exc:
        if on_error == "raise":
            raise
        logger.warning("Skipping bad image file %s: %s", exc.path, exc.reason)
        return np.zeros((*size, channels), dtype=np.uint8), np.bool_(False)


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
        raise InputValueError(
            f"`on_error` should be one of {', '.join(ON_ERROR_VALUES)}. "
            f"Received: on_error={on_error!r}"
        )


def _check_extensions(extensions) -> tuple[str, ...]:
    if (
        isinstance(extensions, str)
        or not extensions
        or not all(isinstance(e, str) and e.startswith(".") and len(e) > 1 for e in extensions)
    ):
        raise InputValueError(
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
        raise InputValueError(
            "`class_names` should list at least 2 unique, non-empty class names. "
            f"Received: class_names={class_names!r}"
        )
    return names
