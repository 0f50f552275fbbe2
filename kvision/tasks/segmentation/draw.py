"""Colour-coded class masks over images, and the worst-images gallery grid."""

from __future__ import annotations

import numpy as np

ALPHA = 0.45


def colorize(classes, num_classes: int) -> np.ndarray:
    """uint8 ``[H, W, 3]``: each class id in its palette colour (class 0 black); ids outside
    the palette (e.g. ``ignore_index``) white."""
    from kvision.tasks.segmentation.task import palette

    colours = np.concatenate([palette(num_classes), np.full((1, 3), 255, np.uint8)])
    ids = np.asarray(classes).astype(np.int64)
    return colours[np.where((ids >= 0) & (ids < num_classes), ids, num_classes)]


def overlay(pixels, classes, num_classes: int, alpha: float = ALPHA) -> np.ndarray:
    """``pixels`` (uint8 ``[H, W, C]``) with every non-background class blended in its colour
    (``alpha``) and class borders drawn opaque: uint8 ``[H, W, 3]``."""
    image = np.asarray(pixels, np.uint8)
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    ids = np.asarray(classes)
    color = colorize(ids, num_classes).astype(np.float32)
    out = image.astype(np.float32)
    fg = ids != 0
    out[fg] = (1 - alpha) * out[fg] + alpha * color[fg]
    edge = np.zeros_like(fg)
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge &= fg
    out[edge] = color[edge]
    return out.round().clip(0, 255).astype(np.uint8)


def side_by_side(tiles: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Tiles of one height joined left to right with white gaps."""
    h = max(t.shape[0] for t in tiles)
    parts = []
    for t in tiles:
        pad = np.full((h, t.shape[1], 3), 255, np.uint8)
        pad[: t.shape[0]] = t
        parts += [pad, np.full((h, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def write_mask_png(classes, path, num_classes: int):
    """A palette PNG whose pixel values are the class ids (viewers show the palette colours)."""
    import io

    from PIL import Image

    from kvision.io import atomic_write_bytes
    from kvision.tasks.segmentation.task import palette

    image = Image.fromarray(np.asarray(classes, np.uint8), mode="P")
    colours = np.zeros((256, 3), np.uint8)
    colours[:num_classes] = palette(num_classes)
    colours[255] = 255
    image.putpalette(colours.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
