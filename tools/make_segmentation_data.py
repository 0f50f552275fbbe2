#!/usr/bin/env python3
"""Write the nuclei segmentation dataset: real fluorescence nuclei, tiled, with a held-out region.

Source: the 512x512 fluorescence microscopy image and its 125 hand-annotated nucleus instances
that the ``stardist`` package ships (``stardist/data/images/img2d.tif`` and ``mask2d.tif``, from
the 2018 Data Science Bowl, Caicedo et al., Nature Methods 2019), read with ``tifffile``; no
network. The image is 8-bit already (values 0..235), so its pixels are written as they are.

Classes (the 3-class nuclei U-Net recipe, e.g. Caicedo et al., Cytometry A 2019): ``background``
0, ``nucleus`` 1 (interior), ``boundary`` 2 (the instance's own border pixels,
``skimage.segmentation.find_boundaries(mode="inner")``), so that touching nuclei are split by
their boundary class and instances come back by connected components / watershed.

Regions (no pixel in two splits)::

    x 0..383,  y 0..383   train: 128x128 tiles every 64 px (25 tiles, overlapping)
    x 0..383,  y 384..511 val:   3 tiles of 128x128
    x 384..511, y 0..511  test:  4 tiles of 128x128 (the held-out region, 25 % of the image)

A nucleus that straddles a region border is cut there, in its masks and its instance ids alike.

Output (mask-folder layout of :mod:`kvision.tasks.segmentation.data`; ``OUT`` appears whole)::

    OUT/{train,val,test}/images/<y>_<x>.png      8-bit gray
    OUT/{train,val,test}/masks/<y>_<x>.png       class ids 0, 1, 2
    OUT/{train,val,test}/instances/<y>_<x>.png   16-bit instance ids (0 = background)
    OUT/{train,val,test}/labels.txt              background, nucleus, boundary
    OUT/dataset.json                             source, regions, tile counts, nuclei per split

Usage::

    python tools/make_segmentation_data.py --out data/nuclei
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

LABELS = ["background", "nucleus", "boundary"]
TILE = 128
#: (split, x range, y range, stride)
REGIONS = (
    ("train", (0, 384), (0, 384), 64),
    ("val", (0, 384), (384, 512), 128),
    ("test", (384, 512), (0, 512), 128),
)


def load_nuclei():
    """``(image uint8 [512, 512], instances int32 [512, 512])`` from the stardist package.

    Raises:
        SystemExit: stardist or tifffile missing (says what to install).
    """
    try:
        import stardist
        import tifffile
    except ImportError as exc:
        sys.exit(f"error: {exc.name} is needed: pip install 'kvision[segmentation]'")
    folder = Path(stardist.__file__).parent / "data" / "images"
    image = tifffile.imread(folder / "img2d.tif")
    instances = tifffile.imread(folder / "mask2d.tif").astype(np.int32)
    if image.max() > 255:  # not the case for the shipped image; kept for another copy
        image = image.astype(np.float64) * 255.0 / float(image.max())
    return image.astype(np.uint8), instances


def three_classes(instances: np.ndarray) -> np.ndarray:
    """Instance ids ``[H, W]`` -> class ids: 0 background, 1 nucleus interior, 2 boundary."""
    from skimage.segmentation import find_boundaries

    classes = (instances > 0).astype(np.uint8)
    classes[find_boundaries(instances, mode="inner")] = 2
    return classes


def _relabel(ids: np.ndarray) -> np.ndarray:
    """Instance ids made consecutive (1..n) within one region."""
    out = np.zeros_like(ids)
    for i, v in enumerate(np.unique(ids[ids > 0]), start=1):
        out[ids == v] = i
    return out


def generate(out: Path) -> dict:
    """Write the dataset into ``out`` (replaced whole) and return its statistics."""
    from PIL import Image

    image, instances = load_nuclei()
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=".nuclei-", dir=out.parent if out.parent.exists() else None))
    stats = {"source": "stardist/data/images/img2d.tif + mask2d.tif (2018 DSB, 125 nuclei)",
             "labels": LABELS, "tile": TILE, "splits": {}}  # fmt: skip
    for split, (x0, x1), (y0, y1), stride in REGIONS:
        region_ids = _relabel(instances[y0:y1, x0:x1])  # cut at the region's border
        region_classes = three_classes(region_ids)
        folder = tmp / split
        for sub in ("images", "masks", "instances"):
            (folder / sub).mkdir(parents=True)
        (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
        n = 0
        for y in range(0, y1 - y0 - TILE + 1, stride):
            for x in range(0, x1 - x0 - TILE + 1, stride):
                name = f"{y0 + y:03d}_{x0 + x:03d}.png"
                window = np.s_[y : y + TILE, x : x + TILE]
                pixels = image[y0:y1, x0:x1][window]
                Image.fromarray(pixels).save(folder / "images" / name)
                Image.fromarray(region_classes[window]).save(folder / "masks" / name)
                ids = _relabel(region_ids[window]).astype(np.uint16)
                Image.fromarray(ids).save(folder / "instances" / name)
                n += 1
        stats["splits"][split] = {"region_xy": [[x0, x1], [y0, y1]], "tiles": n,
                                  "nuclei": int(region_ids.max())}  # fmt: skip
    (tmp / "dataset.json").write_text(json.dumps(stats, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (replaced)")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stats = generate(args.out)
    for split, s in stats["splits"].items():
        print(f"{split}: {s['tiles']} tiles, {s['nuclei']} nuclei (cut at region borders)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
