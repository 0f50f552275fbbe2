"""Throughput of kvision's augmentation in ``tf.data`` vs a Keras-only baseline and no augmentation.

One run times three pipelines on the same images (Fashion-MNIST training images, or random images
with a notice when the file is missing), interleaving their repeats so machine load affects all
three alike:

* ``kvision``: ``build_augmenter`` with :data:`BENCH_SPECS` (flip horizontal, translate 0.1,
  erase p=0.25 max_area=0.15; erase runs in albumentations): the same work as the baseline. (The
  default pipeline uses flip only, which trained best at its time budget.)
* ``keras``: the nearest Keras-only equivalent: ``RandomFlip("horizontal")`` +
  ``RandomTranslation(0.1, 0.1)`` + a random-erasing cutout written in TF ops (p=0.25, area
  0.02-0.15, aspect 0.3-3.3, fill 0), all in the graph.
* ``none``: no augmentation (the pipeline's ceiling).

Each pipeline is ``from_tensor_slices -> batch(drop_remainder) -> uint8 to float [0, 1] ->
map(augment, AUTOTUNE) -> prefetch``. Usage::

    .venv/bin/python tools/bench_augment.py --images 4096 --batch 128 --repeats 5 --json out.json

JSON schema (``kvision.bench_augment/1``): ``images``, ``batch``, ``repeats``, ``source``
(``fashion-mnist`` or ``random``), ``image_shape``, ``machine`` (cpus, versions),
``pipelines``: list of ``{name, description, images_per_s: [per repeat], median_images_per_s}``,
``ratio_kvision_over_keras`` (median (a) / median (b)).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGES = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SCHEMA = "kvision.bench_augment/1"


def load_images(n: int, path: str | Path = DEFAULT_IMAGES, seed: int = 0):
    """The first ``n`` images of an IDX file as ``(n, H, W, 1)`` uint8, and where they came from.

    Falls back to random 28x28 images (with a notice on stderr) when ``path`` does not exist.
    """
    path = Path(path)
    if path.exists():
        from kvision.data.idx import read_idx

        images = read_idx(path)[:n]
        return images.reshape(
            images.shape + (1,) if images.ndim == 3 else images.shape
        ), "fashion-mnist"
    print(
        f"notice: {path} not found; benchmarking on random 28x28 images instead.", file=sys.stderr
    )
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8), "random"


BENCH_SPECS = [
    {"name": "flip", "mode": "horizontal"},
    {"name": "translate", "factor": 0.1},
    {"name": "erase", "p": 0.25, "max_area": 0.15},
]


def kvision_augmenter(seed: int = 0):
    """kvision's augmenter doing the baseline's work (:data:`BENCH_SPECS`)."""
    from kvision.augment import build_augmenter

    return build_augmenter(BENCH_SPECS, seed=seed)


def keras_augmenter(seed: int = 0, p: float = 0.25, area=(0.02, 0.15), aspect=(0.3, 3.3)):
    """Keras-only baseline: RandomFlip + RandomTranslation + random erasing in TF ops."""
    import tensorflow as tf

    from kvision._keras import keras

    flip = keras.layers.RandomFlip("horizontal", seed=seed, dtype="float32")
    shift = keras.layers.RandomTranslation(0.1, 0.1, seed=seed + 1, dtype="float32")
    gen = tf.random.Generator.from_seed(seed + 2)
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))

    def erase(images):
        b, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
        hf, wf = float(h), float(w)
        target = gen.uniform([b], area[0], area[1]) * hf * wf
        ratio = tf.exp(gen.uniform([b], *log_aspect))
        eh = tf.clip_by_value(tf.round(tf.sqrt(target * ratio)), 1.0, hf)
        ew = tf.clip_by_value(tf.round(tf.sqrt(target / ratio)), 1.0, wf)
        y0 = tf.floor(gen.uniform([b]) * (hf - eh + 1.0))
        x0 = tf.floor(gen.uniform([b]) * (wf - ew + 1.0))
        rows = tf.range(hf)[None, :]
        cols = tf.range(wf)[None, :]
        in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])
        in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])
        chosen = gen.uniform([b]) < p
        mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
        return tf.where(mask[..., None], tf.zeros_like(images), images)

    def augment(images, labels):
        x = shift(flip(images, training=True), training=True)
        return tf.clip_by_value(erase(x), 0.0, 1.0), labels

    return augment


def make_dataset(images: np.ndarray, labels: np.ndarray, batch: int, augment=None):
    """The benchmarked pipeline: batch -> to float [0, 1] -> augment (AUTOTUNE) -> prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch, drop_remainder=True)
    ds = ds.map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE
    )
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def time_pipeline(ds) -> float:
    """Iterate ``ds`` once; return images per second."""
    count = 0
    start = time.perf_counter()
    for x, _ in ds:
        count += int(x.shape[0])
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 else float("inf")


def run_benchmark(
    images: np.ndarray,
    batch: int = 128,
    repeats: int = 5,
    seed: int = 0,
    source: str = "given",
    progress: bool = True,
) -> dict:
    """Time the three pipelines on ``images`` (uint8 ``(N, H, W, C)``) and return the report dict.

    Each pipeline gets one untimed warm-up pass; then the repeats are interleaved
    (kvision, keras, none, kvision, ...).
    """
    if batch < 1 or repeats < 1:
        raise ValueError(
            f"`batch` and `repeats` should be >= 1. Received: batch={batch}, repeats={repeats}"
        )
    if len(images) < batch:
        raise ValueError(f"Need at least one full batch: {len(images)} images < batch={batch}.")
    labels = np.zeros(len(images), np.int64)
    pipelines = [
        (
            "kvision",
            "build_augmenter(BENCH_SPECS): flip horizontal, translate 0.1, "
            "erase p=0.25 max_area=0.15 (albumentations)",
            kvision_augmenter(seed),
        ),
        (
            "keras",
            "RandomFlip(horizontal) + RandomTranslation(0.1) + TF-ops random erasing "
            "(p=0.25, area 0.02-0.15)",
            keras_augmenter(seed),
        ),
        ("none", "no augmentation", None),
    ]
    datasets = {name: make_dataset(images, labels, batch, fn) for name, _, fn in pipelines}
    for ds in datasets.values():
        time_pipeline(ds)  # warm-up: tracing, thread pools
    rates: dict[str, list[float]] = {name: [] for name, _, _ in pipelines}
    bar = _progress(repeats * len(pipelines), progress)
    for r in range(repeats):
        for name, _, _ in pipelines:
            rates[name].append(time_pipeline(datasets[name]))
            if bar is not None:
                bar.set_postfix_str(f"repeat {r + 1} {name}: {rates[name][-1]:,.0f} img/s")
                bar.update(1)
    if bar is not None:
        bar.close()
    rows = [
        {
            "name": name,
            "description": desc,
            "images_per_s": [round(v, 1) for v in rates[name]],
            "median_images_per_s": round(statistics.median(rates[name]), 1),
        }
        for name, desc, _ in pipelines
    ]
    med = {row["name"]: row["median_images_per_s"] for row in rows}
    return {
        "schema": SCHEMA,
        "images": int(len(images)),
        "batch": int(batch),
        "repeats": int(repeats),
        "source": source,
        "image_shape": [int(v) for v in images.shape[1:]],
        "machine": _machine(),
        "pipelines": rows,
        "ratio_kvision_over_keras": round(med["kvision"] / med["keras"], 3),
    }


def format_markdown(report: dict) -> str:
    """The report as a Markdown table plus the (a)/(b) ratio."""
    lines = [
        f"Augmentation throughput: {report['images']} {report['source']} images "
        f"{tuple(report['image_shape'])}, batch {report['batch']}, "
        f"{report['repeats']} repeats, {report['machine']['cpus']} CPUs",
        "",
        "| pipeline | images/s (median) | min | max | what |",
        "|---|---:|---:|---:|---|",
    ]
    for row in report["pipelines"]:
        v = row["images_per_s"]
        lines.append(
            f"| {row['name']} | {row['median_images_per_s']:,.0f} | {min(v):,.0f} | "
            f"{max(v):,.0f} | {row['description']} |"
        )
    lines += ["", f"kvision / keras (median images/s): {report['ratio_kvision_over_keras']:.2f}"]
    return "\n".join(lines)


def _machine() -> dict:
    import tensorflow as tf

    from kvision.augment.albu import import_albumentations

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "albumentations": import_albumentations().__version__,
    }


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="bench_augment", unit="run", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096, help="number of images (default 4096)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per pipeline")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")
    parser.add_argument("--data", default=str(DEFAULT_IMAGES), help="IDX images file")
    parser.add_argument("--json", default=None, help="write the report as JSON to this path")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images should be >= 1. Received: {args.images}")
    images, source = load_images(args.images, args.data, seed=args.seed)
    report = run_benchmark(
        images,
        batch=args.batch,
        repeats=args.repeats,
        seed=args.seed,
        source=source,
        progress=not args.quiet,
    )
    print(format_markdown(report))
    if args.json:
        from kvision.io import atomic_write_json

        print(f"wrote {atomic_write_json(args.json, report)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
