"""A PNG grid that shows what augmentation does: originals on top, the same images augmented below.

write_preview(images, aug, "runs/x/augment_preview.png", n=16, cols=8)
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from kvision.io import atomic_write_bytes

_DPI = 100
_TILE_PX = 100  # each image tile, label included
_HEADER_PX = 40  # figure title
_MARGIN_PX = 30  # left margin with the "original" / "augmented" row labels


def preview_size(n: int, cols: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of the PNG that ``write_preview`` writes for ``n`` images.

    Width is ``30 + cols * 100``; height is ``40 + 2 * ceil(n / cols) * 100``.
    """
    rows = math.ceil(n / cols)
    return _MARGIN_PX + cols * _TILE_PX, _HEADER_PX + 2 * rows * _TILE_PX


def write_preview(
    images, augmenter, path, n: int = 16, cols: int = 8, seed: int = 0, labels=None
) -> Path:
    """Write a labelled PNG grid: the first ``n`` images, then the same images augmented.

    The images are augmented by a fresh copy of ``augmenter`` built from its config with
    ``seed``, so writing a preview never changes the random state of the augmenter used for
    training. A plain callable (no ``to_config``) is called as is.

    Args:
        images: ``(N, H, W, C)`` uint8 (0..255) or float (0..1) images, C = 1 or 3.
        augmenter: an :class:`~kvision.augment.Augmenter` (or a callable
            ``(images, labels) -> (images, labels)`` on float32 batches).
        path: output PNG path (written atomically; parent folders are created).
        n: number of images to show (default 16; fewer if fewer are given).
        cols: images per row (default 8).
        seed: seed of the preview's augmenter copy (default 0).
        labels: optional labels (class names or ids) shown above each original.

    Returns:
        The path written. Its size is :func:`preview_size` ``(min(n, N), cols)``.

    Example:
        >>> aug = build_augmenter(["flip"])
        >>> write_preview(np.zeros((4, 28, 28, 1), np.uint8), aug, "/tmp/p.png", n=4, cols=4)
        PosixPath('/tmp/p.png')
    """
    import tensorflow as tf

    for name, value in (("n", n), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` should be a positive integer. Received: {name}={value!r}")
    x = _to_unit(images)[:n]
    n = len(x)
    if hasattr(augmenter, "to_config"):
        from kvision.augment.augmenter import build_augmenter

        augmenter = build_augmenter(augmenter.to_config(), seed=seed)
    augmented, _ = augmenter(tf.constant(x), tf.zeros((n,), tf.int64))
    augmented = np.asarray(augmented, dtype=np.float32)
    title = "augmentation preview"
    if hasattr(augmenter, "to_config"):
        names = [c["name"] for c in augmenter.to_config()]
        title += ": " + (" -> ".join(names) if names else "(none)") + f"  (seed {seed})"
    label_text = None if labels is None else [str(v) for v in list(labels)[:n]]
    png = _render(x, augmented, cols, title, label_text)
    return atomic_write_bytes(path, png)


def _to_unit(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise ValueError(
            f"`images` should be a non-empty (N, H, W, C) array with C = 1 or 3. "
            f"Received: images.shape={x.shape}"
        )
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(
            f"`images` should be uint8 or floats in [0, 1]. "
            f"Received: values in [{x.min():.3g}, {x.max():.3g}]"
        )
    return x


def _render(originals, augmented, cols, title, labels) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(originals)
    width, height = preview_size(n, cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.text(0.5, 1 - (_HEADER_PX / 2) / height, title, ha="center", va="center", fontsize=9)
    gray = originals.shape[-1] == 1
    for block, (name, batch) in enumerate((("original", originals), ("augmented", augmented))):
        top_px = _HEADER_PX + block * rows * _TILE_PX
        fig.text(
            _MARGIN_PX / 2 / width,
            1 - (top_px + rows * _TILE_PX / 2) / height,
            name,
            rotation=90,
            ha="center",
            va="center",
            fontsize=9,
        )
        for i, image in enumerate(batch):
            r, c = divmod(i, cols)
            pad = 8
            left = (_MARGIN_PX + c * _TILE_PX + pad) / width
            bottom = 1 - (top_px + (r + 1) * _TILE_PX - pad / 2) / height
            size_w, size_h = (_TILE_PX - 2 * pad) / width, (_TILE_PX - 2.5 * pad) / height
            ax = fig.add_axes((left, bottom, size_w, size_h))
            shown = image[..., 0] if gray else image
            ax.imshow(
                shown, cmap="gray" if gray else None, vmin=0.0, vmax=1.0, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if labels is not None and block == 0:
                ax.set_title(labels[i], fontsize=7, pad=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()
