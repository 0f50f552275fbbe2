"""The image side of ``make_detection_data.py``: backgrounds, objects and how they are pasted.

Photographs cropped from per-split bands (:func:`load_backgrounds`, :func:`crop_background`),
source items cut to their silhouette (:func:`prepare_item`) and coloured by the contrast rule
(:func:`render_object`), placed without hiding too much of earlier objects and pasted mask as
alpha (:func:`compose`), then an image-wide light change (:func:`illuminate`). The rules are
described in ``make_detection_data.py``'s docstring. Needs only NumPy, Pillow, SciPy and
scikit-image (and kvision for its error types).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Photographs bundled with scikit-image (no download), colour or gray.
BACKGROUNDS = tuple(
    "astronaut coffee chelsea rocket camera coins brick grass gravel page text moon clock "
    "hubble_deep_field immunohistochemistry retina cell".split()
)
SPLITS = ("train", "val", "test")
BAND_EDGES = (0.0, 0.6, 0.8, 1.0)  # background bands per split, along each photo's longer side
MASK_THRESHOLD = 16.0  # object pixel: intensity above this (0..255)
MIN_AREA = 24  # pixels an object (or its visible part) keeps
PLACEMENT_TRIES = 20
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _require(ok: bool, message: str) -> None:
    """Raise ``InputValueError(message)`` unless ``ok``."""
    if not ok:
        from kvision.errors import InputValueError

        raise InputValueError(message)


@dataclass
class Layer:
    """One object to paste: ``rgb`` uint8 ``[h, w, 3]``, ``mask`` bool ``[h, w]`` (alpha), and
    its top-left corner ``(x, y)`` on the canvas in pixels."""

    rgb: np.ndarray
    mask: np.ndarray
    x: int
    y: int


def compose(background: np.ndarray, layers: list[Layer]) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``layers`` in order onto ``background``; a later layer covers earlier ones.

    Args:
        background: uint8 ``[H, W, 3]``, not modified. layers: each wholly inside the canvas.

    Returns:
        ``(image, visible)``: uint8 ``[H, W, 3]`` and bool ``[len(layers), H, W]``, each layer's
        mask on the canvas minus what later layers cover.

    Raises:
        InputValueError: a layer leaves the canvas, or its rgb and mask shapes differ.

    Example:
        >>> bg = np.zeros((8, 8, 3), np.uint8)
        >>> a = Layer(np.full((4, 4, 3), 200, np.uint8), np.ones((4, 4), bool), 0, 0)
        >>> b = Layer(np.full((4, 4, 3), 90, np.uint8), np.ones((4, 4), bool), 2, 2)
        >>> int(compose(bg, [a, b])[1][0].sum())
        12
    """
    image = np.array(background, dtype=np.uint8, copy=True)
    visible = np.zeros((len(layers), *image.shape[:2]), dtype=bool)
    for k, layer in enumerate(layers):
        _paste(image, visible[:k], layer, visible[k])
    return image, visible


def _paste(image: np.ndarray, earlier: np.ndarray, layer: Layer, out: np.ndarray) -> None:
    """In place: draw ``layer`` on ``image``, remove it from ``earlier`` masks, set ``out``."""
    (h, w), (height, width) = layer.mask.shape, image.shape[:2]
    shape_ok = layer.rgb.shape == (h, w, 3)
    _require(shape_ok, f"Layer rgb {layer.rgb.shape} should be [h, w, 3] of mask {(h, w)}.")
    inside = 0 <= layer.x <= width - w and 0 <= layer.y <= height - h
    _require(
        inside, f"Layer {w}x{h} at x={layer.x}, y={layer.y} leaves the {width}x{height} image."
    )
    rows, cols = slice(layer.y, layer.y + h), slice(layer.x, layer.x + w)
    earlier[:, rows, cols] &= ~layer.mask
    out[rows, cols] = layer.mask
    image[rows, cols][layer.mask] = layer.rgb[layer.mask]


def prepare_item(item: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop a bright-on-black uint8 ``[h, w]`` item to its silhouette (specks under 3 px or 2 %
    of it removed) and scale it (bilinear, antialiased) so its longer side is ``size`` pixels.

    Returns:
        ``(intensity, mask)``: float32 ``[h', w']`` (0..255) and bool ``intensity >
        MASK_THRESHOLD``; ``None`` when no pixel is above the threshold.
    """
    from PIL import Image
    from scipy import ndimage

    mask = item > MASK_THRESHOLD
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= max(3, 0.02 * sizes.sum())) + 1
    mask = np.isin(labels, keep)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = np.where(mask, item, 0)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = size / max(crop.shape)
    new_w, new_h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    img = Image.fromarray(crop.astype(np.float32), mode="F")
    intensity = np.asarray(img.resize((new_w, new_h), Image.Resampling.BILINEAR), np.float32)
    return intensity, intensity > MASK_THRESHOLD


def render_object(
    intensity: np.ndarray,
    mask: np.ndarray,
    background_luminance: float,
    rng: np.random.Generator,
    min_contrast: float = 50.0,
) -> np.ndarray:
    """Colour an object from its own intensity so it stands out from what it covers.

    Luminance = ``m + s * (i - mean(i))`` over the mask (``i`` = intensity / its max), with mean
    ``m`` = background luminance +- (``min_contrast`` + 1 + U(0, 60)), clipped to 0..255 (bright
    on a background darker than 128, dark otherwise), spread ``s`` ~ U(90, 170) shrunk to stay in
    0..255; then a random tint of zero luminance (up to 50 levels), dropped if clipping it
    would break the contrast. Luminance weights: ITU-R BT.601 (0.299, 0.587, 0.114).

    Args:
        intensity: float ``[h, w]`` object intensity (0..255).
        mask: bool ``[h, w]`` object pixels (at least one).
        background_luminance: mean luminance (0..255) of the pixels the mask will cover.
        rng: the random stream.
        min_contrast: least difference of mean luminance, object vs covered pixels, default 50.

    Returns:
        uint8 ``[h, w, 3]``; pixels outside ``mask`` are 0. ``|mean luma(object) -
        background_luminance| >= min_contrast`` (for ``min_contrast <= 127``).
    """
    i = intensity[mask].astype(np.float64)
    dev = i / max(i.max(), 1e-6)
    dev -= dev.mean()
    margin = min_contrast + 1.0 + rng.uniform(0.0, 60.0)
    bright = background_luminance < 128.0
    mean = float(np.clip(background_luminance + (margin if bright else -margin), 0.0, 255.0))
    spread = rng.uniform(90.0, 170.0)
    if dev.max() > 0:
        spread = min(spread, (255.0 - mean) / dev.max(), mean / -dev.min())
    luma = mean + spread * dev
    tint = rng.normal(size=3)
    tint -= tint @ _LUMA
    tint *= rng.uniform(0.0, 50.0) / max(np.abs(tint).max(), 1e-6)
    pixels = np.rint(np.clip(luma[:, None] + tint, 0.0, 255.0))
    if abs((pixels @ _LUMA).mean() - background_luminance) < min_contrast:
        pixels = np.repeat(np.rint(luma)[:, None], 3, axis=1)
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    out[mask] = pixels.astype(np.uint8)
    return out


def illuminate(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Image-wide light change: a linear gradient (x(1 +- up to 0.3)), contrast 0.8-1.2 about
    mid-gray, brightness +-0.08, gamma 0.8-1.25 (log-uniform). uint8 ``[H, W, 3]`` in and out."""
    h, w = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    angle, amp = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, 0.3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.cos(angle) * (xx / max(w - 1, 1) - 0.5) + np.sin(angle) * (yy / max(h - 1, 1) - 0.5)
    x *= (1.0 + 2.0 * amp * ramp)[..., None]
    x = (x - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.08, 0.08)
    x = np.clip(x, 0.0, 1.0) ** np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    return np.rint(x * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------- backgrounds


def load_backgrounds(names=BACKGROUNDS) -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs as uint8 RGB ``[H, W, 3]``; ones that need a
    download are skipped. Raises ``DatasetError`` when none loads."""
    import skimage.data

    from kvision.data.idx import DatasetError

    photos = {}
    for name in names:
        try:
            photo = np.asarray(getattr(skimage.data, name)())
        except (AttributeError, ImportError, OSError, ValueError):
            continue
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        photos[name] = np.ascontiguousarray(photo[..., :3].astype(np.uint8))
    if not photos:
        raise DatasetError(f"None of scikit-image's photographs {list(names)} loads offline.")
    return photos


def crop_background(photo: np.ndarray, split: str, size: int, rng) -> np.ndarray:
    """A random square crop from ``split``'s band of ``photo`` (see ``BAND_EDGES``), side
    U(0.5, 1) of the band's shorter side, resized to ``size`` x ``size``, maybe mirrored."""
    from PIL import Image

    h, w = photo.shape[:2]
    k = SPLITS.index(split)
    length = max(h, w)
    lo, hi = round(length * BAND_EDGES[k]), round(length * BAND_EDGES[k + 1])
    band = photo[:, lo:hi] if w >= h else photo[lo:hi]
    side = max(8, int(rng.uniform(0.5, 1.0) * min(band.shape[:2])))
    y = int(rng.integers(0, band.shape[0] - side + 1))
    x = int(rng.integers(0, band.shape[1] - side + 1))
    crop = Image.fromarray(band[y : y + side, x : x + side])
    crop = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))
    return crop[:, ::-1] if rng.random() < 0.5 else crop


# --------------------------------------------------------------------------------------- images


def _make_image(photo, split, pools, class_names, opts, rng):
    """One image: ``(image, visible masks [n, H, W], [(class, source, full area)], dropped)``."""
    size = opts["image_size"]
    image = np.array(crop_background(photo, split, size, rng), dtype=np.uint8)
    lo, hi = opts["objects_per_image"]
    wanted = int(rng.integers(lo, hi + 1))
    masks = np.zeros((wanted, size, size), dtype=bool)
    objects = []
    for _ in range(wanted):
        name = class_names[int(rng.integers(len(class_names)))]
        item, source = pools[name].draw()
        side = round(float(np.exp(rng.uniform(*np.log(opts["object_size"])))))
        prepared = prepare_item(item, side)
        if prepared is None or prepared[1].sum() < MIN_AREA:
            continue
        intensity, mask = prepared
        k = len(objects)
        place = _place(mask, masks[:k], [o[2] for o in objects], opts["max_occluded"], rng)
        if place is None:
            continue
        x, y = place
        covered = image[y : y + mask.shape[0], x : x + mask.shape[1]][mask] @ _LUMA
        rgb = render_object(intensity, mask, float(covered.mean()), rng, opts["min_contrast"])
        _paste(image, masks[:k], Layer(rgb, mask, x, y), masks[k])
        objects.append((name, source, int(mask.sum())))
    return illuminate(image, rng), masks[: len(objects)], objects, wanted - len(objects)


def _place(mask, masks, full_areas, max_occluded, rng):
    """A top-left corner where ``mask`` hides at most ``max_occluded`` of each earlier object
    and leaves it ``MIN_AREA`` pixels; ``None`` after ``PLACEMENT_TRIES`` tries."""
    (h, w), size = mask.shape, masks.shape[1]
    visible = masks.sum(axis=(1, 2))
    least = np.maximum(MIN_AREA, (1.0 - max_occluded) * np.asarray(full_areas, dtype=float))
    for _ in range(PLACEMENT_TRIES):
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        hidden = (masks[:, y : y + h, x : x + w] & mask).sum(axis=(1, 2))
        if np.all(visible - hidden >= least):
            return x, y
    return None
