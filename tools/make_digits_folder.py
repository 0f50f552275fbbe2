#!/usr/bin/env python3
"""Write OpenCV's handwritten digits sheet as an image-folder dataset (one sub-folder per class).

OpenCV's ``digits.png`` (Debian package ``opencv-doc``) holds 5,000 handwritten digits of 20x20
pixels: 100 columns by 50 rows of cells, five rows per digit 0..9. This tool cuts it into PNG
files and splits them, stratified and seeded, into ``train/<digit>/`` and ``test/<digit>/``::

    python tools/make_digits_folder.py --out data/digits            # 4,000 train / 1,000 test
    kvision pipeline data.dataset=folder data.path=data/digits/train \\
        data.test_path=data/digits/test

The same seed gives the same split, file names and bytes. Exit status 2 with the ``apt-get``
line when the sheet is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_SHEET = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
CELL = 20  # pixels
PER_CLASS = 500


def load_sheet(path: Path = DEFAULT_SHEET) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of OpenCV's sheet.

    Returns:
        ``(images, labels)``: uint8 ``(5000, 20, 20)`` and int64 ``(5000,)``, in sheet order
        (row-major: 500 zeros first).

    Raises:
        FileNotFoundError: the sheet is missing (names the package to install).
        ValueError: the image is not the 2000x1000 sheet.
    """
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it ships with Debian's opencv-doc package "
            "(sudo apt-get install -y opencv-doc), or pass --sheet PATH."
        )
    with Image.open(path) as img:
        sheet = np.asarray(img.convert("L"))
    if sheet.shape != (50 * CELL, 100 * CELL):
        raise ValueError(
            f"{path} should be a 2000x1000 sheet of 20x20 digits. Received: {sheet.shape[::-1]}"
        )
    cells = sheet.reshape(50, CELL, 100, CELL).transpose(0, 2, 1, 3).reshape(-1, CELL, CELL)
    labels = np.repeat(np.arange(10), PER_CLASS).astype(np.int64)
    return cells, labels


def split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test indices (each class split in the same proportion)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` should be in (0, 1). Received: {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * test_fraction))
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(test))


def write_folder(out: Path, images, labels, indices, name: str) -> int:
    """Write ``images[indices]`` as ``out/name/<label>/<index>.png``; returns the count."""
    import io

    from PIL import Image

    from kvision.io import atomic_write_bytes

    for i in indices:
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, format="PNG")
        atomic_write_bytes(out / name / str(int(labels[i])) / f"{int(i):04d}.png", buf.getvalue())
    return len(indices)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (train/ and test/ inside)")
    p.add_argument("--sheet", type=Path, default=DEFAULT_SHEET, help="digits.png path")
    p.add_argument("--test-fraction", type=float, default=0.2, help="default 0.2")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = p.parse_args(argv)
    try:
        images, labels = load_sheet(args.sheet)
    except (FileNotFoundError, ValueError) as exc:
        print(f"make_digits_folder: error: {exc}", file=sys.stderr)
        return 2
    train, test = split(labels, args.test_fraction, args.seed)
    out = Path(args.out)
    n_train = write_folder(out, images, labels, train, "train")
    n_test = write_folder(out, images, labels, test, "test")
    print(f"wrote {n_train} train and {n_test} test digits (20x20 PNG) under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
