"""Draw boxes, labels and scores on images, and lay images out in a grid (Pillow).

tile = draw_detections(pixels, det, labels, min_score=0.3)   # uint8 [H, W, 3]
write_grid([tile, ...], "runs/x/predictions.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: one colour per class, cycled (tab10)
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def draw_boxes(
    pixels,
    boxes,
    classes=None,
    labels=None,
    scores=None,
    color: tuple | None = None,
    width: int = 2,
) -> np.ndarray:
    """A copy of ``pixels`` with ``boxes`` drawn.

    Args:
        pixels: uint8 ``[H, W, C]`` (C = 1 or 3).
        boxes: ``[K, 4]`` xyxy in pixels of ``pixels``.
        classes: int ``[K]`` (picks the colour and the label), or ``None``.
        labels: class names (a box is captioned ``label score``), or ``None`` for no caption.
        scores: ``[K]`` in [0, 1], or ``None``.
        color: one RGB colour for every box (default: by class).
        width: line width in pixels.

    Returns:
        uint8 ``[H, W, 3]``.
    """
    array = np.asarray(pixels, np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    image = Image.fromarray(array).convert("RGB")
    draw = ImageDraw.Draw(image)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    for i, box in enumerate(boxes):
        k = int(classes[i]) if classes is not None else 0
        c = color or PALETTE[k % len(PALETTE)]
        draw.rectangle([float(v) for v in box], outline=c, width=width)
        if labels is not None and classes is not None:
            text = str(labels[k]) + (f" {float(scores[i]):.2f}" if scores is not None else "")
            x, y = float(box[0]), max(0.0, float(box[1]) - 11)
            left, top, right, bottom = draw.textbbox((x, y), text)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=c)
            draw.text((x, y), text, fill=(255, 255, 255))
    return np.asarray(image)


def draw_detections(pixels, detections, labels, min_score: float = 0.0) -> np.ndarray:
    """``pixels`` with the ``Detections`` scoring at least ``min_score`` drawn: a box in the
    class's colour captioned ``label score``. uint8 ``[H, W, 3]``."""
    keep = detections.scores >= min_score
    return draw_boxes(pixels, detections.boxes[keep], detections.classes[keep], labels,
                      detections.scores[keep])  # fmt: skip


def write_grid(tiles, path, columns: int = 4, pad: int = 4) -> Path:
    """Write ``tiles`` (uint8 ``[H, W, 3]`` arrays, any sizes) as one PNG grid, atomically."""
    import io

    from kvision.io import atomic_write_bytes

    tiles = [np.asarray(t, np.uint8) for t in tiles]
    if not tiles:
        raise ValueError("write_grid needs at least one image")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    canvas = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas.paste(Image.fromarray(tile), (pad + c * (w + pad), pad + r * (h + pad)))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
