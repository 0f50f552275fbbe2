"""A text line with its decoded text written under it."""

from __future__ import annotations

import numpy as np


def caption(pixels, text: str, truth: str | None = None) -> np.ndarray:
    """uint8 ``[H + band, W', 3]``: the line (gray or RGB) above a white band with ``text`` (and,
    when given, the ground truth ``truth``, red when they differ)."""
    from PIL import Image, ImageDraw

    image = np.asarray(pixels, np.uint8)
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    lines = [(f"pred: {text}", (0, 0, 0))]
    if truth is not None:
        lines.append((f"true: {truth}", (0, 110, 0) if truth == text else (200, 0, 0)))
    width = max(image.shape[1], 7 * max(len(t) for t, _ in lines) + 8)
    band = 14 * len(lines) + 4
    canvas = Image.new("RGB", (width, image.shape[0] + band), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (t, colour) in enumerate(lines):
        draw.text((3, image.shape[0] + 2 + 14 * i), t, fill=colour)
    return np.asarray(canvas)
