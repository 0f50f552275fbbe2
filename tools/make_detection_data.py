#!/usr/bin/env python3
"""Write a deterministic COCO-JSON object-detection dataset: real objects on real photographs.

Objects are Fashion-MNIST items (Debian ``dataset-fashion-mnist``) and, when asked for, OpenCV's
handwritten digits (Debian ``opencv-doc``): bright objects on black whose pixels above
``MASK_THRESHOLD`` are the instance mask. Each is scaled so its longer side is ``object_size``
pixels (log-uniform; default 24-96 on 160x160: about half COCO "small", half "medium"; none is
"large" (> 96^2 px) unless ``object_size`` goes past ~110) and pasted, mask as alpha, on a crop
of a photograph bundled with scikit-image. A later object may cover an earlier one, whose
mask, box and area are then its visible part; a placement that would hide more than
``max_occluded`` of an earlier object (or leave it under ``MIN_AREA`` pixels) is retried, then
dropped: every visible object is annotated.

Contrast rule: an object keeps its own intensity pattern (an affine map of its pixels plus a
zero-luminance tint) with a mean luminance at least ``min_contrast`` (of 255) away from the mean
luminance of the pixels it covers: bright on dark, dark on bright. The rule holds before the
image-wide light change (linear gradient up to +-30 %, contrast 0.8-1.2, brightness +-8 %,
gamma 0.8-1.25).

Default classes (trouser, dress, sneaker, bag, ankle_boot): among the Fashion-MNIST classes a
classifier separates best, with distinct silhouettes and aspect ratios (tall; tall and wide at
the hem; low and wide; square with a handle; L-shaped), so a small detector learns them in
minutes on two CPU cores. The shirt-like classes differ mostly in texture a 24-px object loses.

Splits: train and val objects are disjoint items of Fashion-MNIST's train set (1/6 per class for
val), test objects come from its test set; digits split 325/75/100 per class. Backgrounds come
from disjoint bands of each photograph (along its longer side: 60 % train, 20 % val, 20 % test).
The same ``seed`` gives byte-identical files; each split has its own random stream.

Output (``OUT`` appears whole: a finished temporary folder is renamed into place)::

    OUT/dataset.json                        parameters and per-split statistics
    OUT/preview.png                         with --preview N: N train images with boxes
    OUT/{train,val,test}/images/000001.png  RGB, image_size x image_size
    OUT/{train,val,test}/annotations.json   COCO: images (id, file_name in images/, width,
        height); annotations (id, image_id, category_id, bbox [x, y, w, h] float pixels = tight
        box of the visible mask, area = its pixel count, iscrowd 0, segmentation RLE with str
        counts, extra "source" {dataset, set, index} and "occluded" = hidden fraction);
        categories (id 1..K in CATALOGUE order, name, supercategory)

Usage (the CLI mirrors :func:`generate`; import with ``sys.path.insert(0, "tools")``)::

    python tools/make_detection_data.py --out data/det --preview 16
    python tools/make_detection_data.py --out data/det --classes trouser,bag,digit_3 --seed 1
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _sibling(name: str):
    """The module ``tools/<name>.py`` beside this file, imported once as ``name``: ``tools/`` is
    not a package, and this file runs as a script or is loaded by path (tests)."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    module = sys.modules.get(name)
    if module is None or Path(getattr(module, "__file__", "") or "").resolve() != path:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


_sibling("detection_render")
from detection_render import (  # noqa: E402  (loaded just above, from this file's folder)
    BACKGROUNDS,
    BAND_EDGES,
    MASK_THRESHOLD,
    MIN_AREA,
    PLACEMENT_TRIES,
    SPLITS,
    Layer,
    _make_image,
    _require,
    compose,
    crop_background,
    illuminate,
    load_backgrounds,
    prepare_item,
    render_object,
)

__all__ = [  # the image side (detection_render.py) is re-exported here
    "BACKGROUNDS",
    "BAND_EDGES",
    "CATALOGUE",
    "DEFAULT_CLASSES",
    "DEFAULT_DIGITS_SHEET",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "MASK_THRESHOLD",
    "MIN_AREA",
    "PLACEMENT_TRIES",
    "SPLITS",
    "Layer",
    "compose",
    "crop_background",
    "format_summary",
    "generate",
    "illuminate",
    "load_backgrounds",
    "main",
    "prepare_item",
    "render_object",
    "source_pools",
    "write_preview",
]

FASHION_CLASSES = tuple(
    "tshirt_top trouser pullover dress coat sandal shirt sneaker bag ankle_boot".split()
)
DIGIT_CLASSES = tuple(f"digit_{d}" for d in range(10))
CATALOGUE = FASHION_CLASSES + DIGIT_CLASSES  # category ids follow this order
DEFAULT_CLASSES = ("trouser", "dress", "sneaker", "bag", "ankle_boot")
VAL_SOURCE_FRACTION = 1 / 6  # of Fashion-MNIST train items per class
DIGIT_VAL_TEST = (75, 100)  # of the 500 digits per class
SMALL_AREA, LARGE_AREA = 32**2, 96**2  # COCO size buckets
DEFAULT_DIGITS_SHEET = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
_GENERATOR = "tools/make_detection_data.py"


# ---------------------------------------------------------------------------------- sources
@dataclass
class _Pool:
    """Source items of one class for one split, drawn in order (cycling when exhausted)."""

    dataset: str
    subset: str
    images: np.ndarray
    index: np.ndarray
    drawn: int = 0

    def draw(self) -> tuple[np.ndarray, dict]:
        i = int(self.index[self.drawn % len(self.index)])
        self.drawn += 1
        return self.images[i], {"dataset": self.dataset, "set": self.subset, "index": i}


@functools.lru_cache(maxsize=2)
def _fashion_mnist(path: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from kvision.data.datasets import find_idx_dir
    from kvision.data.idx import read_idx

    d = find_idx_dir("fashion_mnist", path)
    out = {}
    for subset, stem in (("train", "train"), ("test", "t10k")):
        images = read_idx(next(d.glob(f"{stem}-images-idx3-ubyte*")))
        labels = read_idx(next(d.glob(f"{stem}-labels-idx1-ubyte*")))
        images.flags.writeable = labels.flags.writeable = False
        out[subset] = (images, labels)
    return out


def _digits(sheet: Path) -> tuple[np.ndarray, np.ndarray]:
    from kvision.data.idx import DatasetError

    path = Path(__file__).with_name("make_digits_folder.py")
    spec = importlib.util.spec_from_file_location("make_digits_folder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.load_sheet(Path(sheet))
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(
            f"Digit classes need OpenCV's digits sheet: {exc} Or drop them."
        ) from exc


def source_pools(classes, seed: int, fashion_dir=None, digits_sheet=DEFAULT_DIGITS_SHEET):
    """``{split: {class_name: _Pool}}``: the disjoint source items objects are drawn from
    (module docstring). Raises ``DatasetError`` when Fashion-MNIST or the sheet is missing."""
    rng = np.random.default_rng([seed, len(SPLITS)])
    pools = {s: {} for s in SPLITS}
    if any(c in FASHION_CLASSES for c in classes):
        data = _fashion_mnist(None if fashion_dir is None else str(fashion_dir))
        (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    if any(c in DIGIT_CLASSES for c in classes):
        digit_x, digit_y = _digits(digits_sheet)
    for name in classes:
        if name in FASHION_CLASSES:
            label = FASHION_CLASSES.index(name)
            items = rng.permutation(np.flatnonzero(train_y == label))
            n_val = round(len(items) * VAL_SOURCE_FRACTION)
            test_items = rng.permutation(np.flatnonzero(test_y == label))
            parts = (("train", train_x, items[n_val:]), ("train", train_x, items[:n_val]))
            parts += (("test", test_x, test_items),)
            source = "fashion_mnist"
        else:
            items = rng.permutation(np.flatnonzero(digit_y == DIGIT_CLASSES.index(name)))
            n_val, n_test = DIGIT_VAL_TEST
            bounds = (n_test + n_val, len(items)), (n_test, n_test + n_val), (0, n_test)
            parts = tuple(("sheet", digit_x, items[a:b]) for a, b in bounds)
            source = "opencv_digits"
        for split, (subset, images, index) in zip(SPLITS, parts, strict=True):
            pools[split][name] = _Pool(source, subset, images, index)
    return pools


# ---------------------------------------------------------------------------------- annotations


def _annotations(masks, objects, image_id: int, first_id: int, cat_ids: dict) -> list[dict]:
    """COCO annotations of one image's visible masks (bbox = tight box, area = pixel count)."""
    from pycocotools import mask as mask_util

    out = []
    for k, (mask, (name, source, full_area)) in enumerate(zip(masks, objects, strict=True)):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        area = int(mask.sum())
        out.append(
            {"id": first_id + k, "image_id": image_id, "category_id": cat_ids[name]}
            | {"bbox": [float(v) for v in box], "area": float(area), "iscrowd": 0}
            | {"segmentation": rle, "source": source, "occluded": round(1 - area / full_area, 4)}
        )
    return out


def _write_split(root: Path, split: str, n: int, photos, pools, categories, opts, progress):
    """Write ``root/split/images/*.png`` and ``annotations.json``; return the split's stats."""
    from PIL import Image
    from tqdm import tqdm

    from kvision.io import atomic_write_text

    rng = np.random.default_rng([opts["seed"], SPLITS.index(split)])
    photo_names, cat_ids = list(photos), {c["name"]: c["id"] for c in categories}
    names = list(cat_ids)
    size = opts["image_size"]
    (root / split / "images").mkdir(parents=True)
    images, annotations, dropped = [], [], 0
    for i in tqdm(range(1, n + 1), desc=split, unit="img", disable=not progress, leave=False):
        photo = photos[photo_names[int(rng.integers(len(photo_names)))]]
        image, masks, objects, lost = _make_image(photo, split, pools[split], names, opts, rng)
        dropped += lost
        file_name = f"{i:06d}.png"
        Image.fromarray(image).save(root / split / "images" / file_name, compress_level=1)
        images.append({"id": i, "file_name": file_name, "width": size, "height": size})
        annotations += _annotations(masks, objects, i, len(annotations) + 1, cat_ids)
    info = {"description": f"kvision synthetic detection set ({split})", "version": "1"}
    coco = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(root / split / "annotations.json", json.dumps(coco, separators=(",", ":")))
    per_class = dict.fromkeys(names, 0)
    by_size = dict.fromkeys(("small", "medium", "large"), 0)
    for ann in annotations:
        per_class[names[ann["category_id"] - 1]] += 1
        area = ann["area"]
        by_size["small" if area < SMALL_AREA else "large" if area > LARGE_AREA else "medium"] += 1
    stats = {"images": n, "objects": len(annotations), "per_class": per_class, "by_size": by_size}
    return stats | {"occluded": sum(a["occluded"] > 0 for a in annotations), "dropped": dropped}


_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
_PALETTE += [(145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def write_preview(split_dir: str | Path, n: int, path: str | Path, scale: int = 2) -> Path:
    """Write a PNG grid of a split's first ``n`` images with boxes and class names, atomically.

    Args:
        split_dir: folder with ``annotations.json`` (COCO) and ``images/``.
        n: number of images. path: the PNG to write. scale: integer upscaling, default 2.

    Example:
        >>> write_preview("data/det/val", 9, "val_preview.png")  # doctest: +SKIP
    """
    import io

    from PIL import Image, ImageDraw

    from kvision.io import atomic_write_bytes

    coco = json.loads((Path(split_dir) / "annotations.json").read_text())
    infos, names = coco["images"][:n], {c["id"]: c["name"] for c in coco["categories"]}
    cols = max(1, int(np.ceil(np.sqrt(len(infos)))))
    tile = max((max(i["width"], i["height"]) for i in infos), default=1) * scale + 4
    grid = Image.new("RGB", (cols * tile + 4, -(-len(infos) // cols) * tile + 4), "white")
    for k, info in enumerate(infos):
        with Image.open(Path(split_dir) / "images" / info["file_name"]) as img:
            size = (info["width"] * scale, info["height"] * scale)
            img = img.convert("RGB").resize(size, Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(img)
        for ann in (a for a in coco["annotations"] if a["image_id"] == info["id"]):
            x, y, w, h = (v * scale for v in ann["bbox"])
            colour = _PALETTE[(ann["category_id"] - 1) % len(_PALETTE)]
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=2)
            label = names[ann["category_id"]]
            draw.rectangle(draw.textbbox((x + 2, y + 2), label), fill=colour)
            draw.text((x + 2, y + 2), label, fill=(0, 0, 0))
        grid.paste(img, (4 + (k % cols) * tile, 4 + (k // cols) * tile))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------- driver
def _check_classes(classes) -> list[str]:
    """The requested classes in catalogue order (category ids follow it)."""
    names = [c.strip() for c in ([classes] if isinstance(classes, str) else list(classes))]
    for name in names:
        close = difflib.get_close_matches(name, CATALOGUE, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        _require(
            name in CATALOGUE, f"Unknown class {name!r}.{hint} Allowed: {', '.join(CATALOGUE)}."
        )
    ok = len(set(names)) == len(names) > 0
    _require(ok, f"`classes` should be distinct class names, at least one. Received: {names}")
    return sorted(names, key=CATALOGUE.index)


def _check_options(seed, counts, image_size, per_image, object_size, max_occluded, min_contrast):
    for name, value in {"seed": seed, **counts, "image_size": image_size}.items():
        ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0
        _require(ok, f"`{name}` should be an integer >= 0. Received: {name}={value!r}")
    _require(sum(counts.values()) > 0, f"At least one split should have images. Got {counts}")
    _require(32 <= image_size <= 4096, f"`image_size` should be 32..4096. Got {image_size}")
    for name, pair, hi in (("objects_per_image", per_image, 50), ("object_size", object_size, 0)):
        hi = hi or image_size
        ok = np.shape(pair) == (2,) and all(isinstance(v, int | np.integer) for v in pair)
        ok = ok and 1 <= pair[0] <= pair[1] <= hi
        _require(ok, f"`{name}` should be two integers 1 <= min <= max <= {hi}. Got {pair!r}")
    _require(0 <= max_occluded < 1, f"`max_occluded` should be in [0, 1). Got {max_occluded}")
    _require(0 <= min_contrast <= 120, f"`min_contrast` should be 0..120. Got {min_contrast}")
    return {"seed": int(seed), "image_size": int(image_size)} | {
        "objects_per_image": [int(v) for v in per_image],
        "object_size": [int(v) for v in object_size],
        "max_occluded": float(max_occluded),
        "min_contrast": float(min_contrast),
    }


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a file, a foreign non-empty folder, or (without ``overwrite``) an earlier set."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder path.")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / "dataset.json").read_text()).get("generator") == _GENERATOR
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise FileExistsError(f"--out {out} is not empty and not a dataset of this tool.")
        if not overwrite:
            raise FileExistsError(f"--out {out} holds a dataset; pass --overwrite to replace it.")


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out`` (replacing an earlier dataset there)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.rename(out, old / "dataset")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 3000,
    n_val: int = 500,
    n_test: int = 500,
    image_size: int = 160,
    classes=DEFAULT_CLASSES,
    objects_per_image=(1, 4),
    object_size=(24, 96),
    max_occluded: float = 0.6,
    min_contrast: float = 50.0,
    preview: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    fashion_dir=None,
    digits_sheet=DEFAULT_DIGITS_SHEET,
) -> dict:
    """Write the dataset described in the module docstring to ``out_dir``.

    Args:
        out_dir: output folder: new, empty, or (with ``overwrite``) an earlier dataset.
        seed: integer >= 0, default 0; the same seed gives byte-identical files.
        n_train, n_val, n_test: images per split, defaults 3000, 500, 500.
        image_size: square canvas side, pixels, default 160.
        classes: names from ``CATALOGUE``, default ``DEFAULT_CLASSES``; ``digit_*`` need the
            OpenCV sheet. Category ids 1..K follow catalogue order.
        objects_per_image: (min, max) objects tried per image, default (1, 4).
        object_size: (min, max) longer side of an object, pixels, log-uniform, default (24, 96).
        max_occluded: largest hidden fraction of an earlier object, default 0.6.
        min_contrast: least mean-luminance gap object vs covered pixels (0..255), default 50.
        preview: write ``preview.png`` with this many train images; default 0 (none).
        overwrite: replace an earlier dataset of this tool at ``out_dir``; default False.
        progress: tqdm progress bars, default True.
        fashion_dir: Fashion-MNIST IDX folder; default None (the Debian location).
        digits_sheet: OpenCV's ``digits.png``; default: the Debian ``opencv-doc`` path.

    Returns:
        ``dataset.json``'s content (``generator``, ``params``, ``categories``, ``backgrounds``,
        ``splits``: per split ``images``, ``objects``, ``per_class``, ``by_size``,
        ``occluded``, ``dropped``) plus ``out_dir`` and ``seconds``.

    Raises:
        InputValueError: a bad argument. DatasetError: Fashion-MNIST, the digits sheet or every
        photograph is missing. FileExistsError: ``out_dir`` is a file, a foreign non-empty
        folder, or a dataset and ``overwrite`` is False.

    Example:
        >>> generate("/tmp/det", n_train=8, n_val=2, n_test=2, progress=False)  # doctest: +SKIP
    """
    from kvision.io import atomic_write_text

    start = time.perf_counter()
    class_names = _check_classes(classes)
    counts = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    args = (seed, counts, image_size, objects_per_image, object_size, max_occluded, min_contrast)
    opts = _check_options(*args)
    _require(
        isinstance(preview, int) and 0 <= preview <= n_train,
        f"`preview` should be 0..n_train ({n_train}). Received: preview={preview!r}",
    )
    out = Path(out_dir)
    _check_out(out, overwrite)
    pools = source_pools(class_names, opts["seed"], fashion_dir, digits_sheet)
    photos = load_backgrounds()
    categories = [
        {"id": k + 1, "name": n, "supercategory": "digit" if n in DIGIT_CLASSES else "fashion"}
        for k, n in enumerate(class_names)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        umask = os.umask(0o22)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        stats = {
            split: _write_split(tmp, split, n, photos, pools, categories, opts, progress)
            for split, n in zip(SPLITS, counts.values(), strict=True)
        }
        dataset = {"generator": _GENERATOR, "params": opts | counts | {"classes": class_names}}
        dataset |= {"categories": categories, "backgrounds": list(photos), "splits": stats}
        atomic_write_text(tmp / "dataset.json", json.dumps(dataset, indent=2) + "\n")
        if preview:
            write_preview(tmp / "train", preview, tmp / "preview.png")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataset | {"out_dir": str(out), "seconds": round(time.perf_counter() - start, 2)}


def format_summary(summary: dict) -> str:
    """The table the command prints: images, objects per class and by COCO size, per split."""
    names, p = summary["params"]["classes"], summary["params"]
    rows = [["split", "images", "objects", "dropped", "small", "medium", "large", *names]]
    for split, s in summary["splits"].items():
        counts = [s[k] for k in ("images", "objects", "dropped")]
        counts += [s["by_size"][k] for k in ("small", "medium", "large")]
        rows.append([split, *counts, *(s["per_class"][n] for n in names)])
    widths = [max(len(str(v)) for v in col) for col in zip(*rows, strict=True)]
    table = "\n".join(
        "  ".join(f"{v!s:>{w}}" for v, w in zip(r, widths, strict=True)) for r in rows
    )
    return (
        f"wrote {summary['out_dir']} in {summary['seconds']} s (seed {p['seed']}, "
        f"{p['image_size']}x{p['image_size']}, {len(summary['backgrounds'])} photos)\n{table}\n"
        "by COCO area: small < 32^2, medium, large > 96^2 px; dropped: objects not placed (under "
        f"{MIN_AREA} px, or hiding > {p['max_occluded']:.0%} of an earlier one in every try)"
    )


def main(argv=None) -> int:
    """``python tools/make_detection_data.py --out DIR [options]`` (mirrors :func:`generate`);
    returns the exit status: 0, or 2 with one line on stderr for a user error."""
    epilog = f"classes: {', '.join(CATALOGUE)} (digit_*: Debian opencv-doc)"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=epilog)
    add = p.add_argument
    add("--out", required=True, help="output folder")
    add("--seed", type=int, default=0, help="default 0")
    for split, n in (("train", 3000), ("val", 500), ("test", 500)):
        add(f"--n-{split}", type=int, default=n, help=f"{split} images (default {n})")
    add("--image-size", type=int, default=160, help="square side, px (default 160)")
    add(
        "--classes", default=",".join(DEFAULT_CLASSES), help="comma-separated (default %(default)s)"
    )
    pair = {"type": int, "nargs": 2, "metavar": ("MIN", "MAX")}
    add("--objects-per-image", **pair, default=(1, 4), help="objects per image (default 1 4)")
    add("--object-size", **pair, default=(24, 96), help="objects' longer side, px (default 24 96)")
    add("--max-occluded", type=float, default=0.6, help="default 0.6")
    add("--min-contrast", type=float, default=50.0, help="0..120 (default 50)")
    add("--preview", type=int, default=0, metavar="N", help="write preview.png of N train images")
    add("--overwrite", action="store_true", help="replace an earlier dataset of this tool")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add("--fashion-dir", default=None, help="Fashion-MNIST IDX folder")
    add("--digits-sheet", default=str(DEFAULT_DIGITS_SHEET), help="default %(default)s")
    kwargs = vars(p.parse_args(argv))
    kwargs["classes"] = [c for c in kwargs["classes"].split(",") if c.strip()]
    try:
        summary = generate(kwargs.pop("out"), **kwargs)
    except Exception as exc:
        from kvision.errors import is_user_error

        if not is_user_error(exc):
            raise
        print(f"make_detection_data: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
