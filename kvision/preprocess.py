"""The one decode -> mode conversion -> resize -> normalize path for every image kvision reads.

Training and evaluation (``kvision.data``: image folders and arrays), ``kvision predict``, the
benchmark's data (``deploy.benchmark.data``), ``kvision convert``'s calibration images and
``kvision serve``'s ``b64`` images all call these functions, so one image gives the same model
input everywhere (``tests/test_preprocess_parity.py`` checks it)::

    pixels = load_pixels("cat.png", channels=3, size=(96, 96))   # uint8 [96, 96, 3]
    x = contract.normalize(pixels)                                 # float32 model input

The rules, applied in this order:

1. **Decode** with Pillow, verified and fully loaded: a corrupt, truncated, empty or non-image
   file raises :class:`ImageError` naming it and the reason.
2. **EXIF orientation** is applied (``ImageOps.exif_transpose``): pixels are what an image
   viewer shows, so a phone JPEG stored sideways is upright (and its size is the upright one).
3. **Mode conversion** to ``"L"`` (``channels=1``) or ``"RGB"`` (``channels=3``):

   * 16-bit (and 32-bit integer) samples keep their high byte: ``v >> 8`` after clipping to
     0..65535 (65535 -> 255, 32768 -> 128, 255 -> 0), as libpng's strip-16 and
     ``tf.image.decode_png(dtype=tf.uint8)`` do; never clipped at 255.
   * alpha is dropped (RGBA, LA, PA, palette transparency): the stored colour is kept, not
     composited on a background, as ``tf.image.decode_png(channels=3)`` does.
   * palette images are looked up; CMYK uses Pillow's CMYK -> RGB (no colour profile);
     1-bit images become 0 / 255.
   * RGB -> L is ITU-R 601-2 luma (Pillow: ``L = R*299/1000 + G*587/1000 + B*114/1000``);
     L -> RGB repeats the gray value.
   * float images (mode ``F``) are refused: they have no agreed range.

4. **Resize** to ``(height, width)`` with Pillow's bilinear filter on the 8-bit image (which
   widens its support when shrinking, i.e. antialiases), rounded to ``uint8``; skipped when the
   size already matches. The contract's ``resize`` mode picks how: ``"stretch"`` (default)
   scales each axis to fit; ``"letterbox"`` keeps the aspect ratio (one scale, the largest that
   fits), centres the image and fills the borders with gray :data:`LETTERBOX_FILL` (114, as
   YOLO does). :func:`letterbox_geometry` gives the scale and padding that map coordinates
   between the original image and the model input.
5. **Normalize** with the model's contract: ``x = pixels * scale + offset`` in float32
   (:meth:`kvision.models.InputContract.normalize`).

Arrays (IDX, ``.npz``) are already 8-bit; :func:`fit_pixels` takes them through steps 3 (channel
conversion) and 4 with the same Pillow calls, so an array and the PNG holding it agree.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from kvision.errors import InputValueError

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)) - {0x7F})
_INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # 16/32-bit integer samples
_GRAY_MODES = {"1", "L", "LA", "La"} | _INT_MODES


RESIZE_MODES = ("stretch", "letterbox")
#: the border value of a letterboxed image (YOLO's gray)
LETTERBOX_FILL = 114


def check_resize(resize) -> str:
    """``resize`` if it is one of :data:`RESIZE_MODES`, else ``ValueError`` naming it."""
    if resize not in RESIZE_MODES:
        raise InputValueError(
            f"`resize` should be one of {', '.join(RESIZE_MODES)}. Received: resize={resize!r}"
        )
    return resize


def letterbox_geometry(width: int, height: int, size) -> tuple[float, int, int, int, int]:
    """``(scale, pad_x, pad_y, new_width, new_height)`` of letterboxing a ``width`` x ``height``
    image into ``size`` = ``(height, width)``: the image is scaled by ``scale`` to
    ``new_width`` x ``new_height`` (rounded) and placed at ``(pad_x, pad_y)``. A point ``(x, y)``
    of the original lands at ``(x * sx + pad_x, y * sy + pad_y)`` with ``sx = new_width / width``
    and ``sy = new_height / height`` (both ``scale`` up to rounding).

    Example:
        >>> letterbox_geometry(200, 100, (160, 160))
        (0.8, 0, 40, 160, 80)
    """
    target_h, target_w = check_size(size)
    scale = min(target_w / width, target_h / height)
    new_w = max(1, min(target_w, int(round(width * scale))))
    new_h = max(1, min(target_h, int(round(height * scale))))
    return scale, (target_w - new_w) // 2, (target_h - new_h) // 2, new_w, new_h


def letterbox_boxes(boxes, width: int, height: int, size, inverse: bool = False) -> np.ndarray:
    """Map xyxy pixel boxes of a ``width`` x ``height`` image into its letterboxed model input
    of ``size`` = ``(height, width)`` (``inverse=True``: from the input back to the image).
    float32 ``[N, 4]``."""
    _, pad_x, pad_y, new_w, new_h = letterbox_geometry(width, height, size)
    scale = np.float32([new_w / width, new_h / height] * 2)
    pad = np.float32([pad_x, pad_y] * 2)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return (boxes - pad) / scale if inverse else boxes * scale + pad


class ImageError(ValueError):
    """One image cannot be used. ``path`` and ``reason`` say which and why.

    Args:
        path: the file (or a description such as ``"instances[0].b64"``).
        reason: short and specific, e.g. ``"truncated PNG file"``.
        hint: optional sentence appended to the message (what to do about it).
    """

    def __init__(self, path: str, reason: str, hint: str = ""):
        self.path, self.reason, self.hint = str(path), reason, hint
        super().__init__(f"Bad image file {path}: {reason}." + (f" {hint}" if hint else ""))

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.hint)


def read_bytes(path: str | Path) -> bytes:
    """The bytes of an image file; ``ImageError`` when it is missing or unreadable."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"unreadable file ({type(exc).__name__}: {exc.strerror})") from None


def decode_image(data: bytes, source: str | Path = "<bytes>") -> Image.Image:
    """Steps 1-2: verify and fully decode ``data``, apply its EXIF orientation.

    Args:
        data: the encoded file (PNG, JPEG, BMP, anything Pillow reads).
        source: the file or field named in errors.

    Returns:
        The loaded, upright Pillow image in its own mode (``"I;16"``, ``"P"``, ``"CMYK"`` ...).

    Raises:
        ImageError: empty, not an image, corrupt, truncated, too large, or an unsupported mode.

    Example:
        >>> decode_image(Path("cat.jpg").read_bytes(), "cat.jpg").size
        (640, 480)
    """
    if not data:
        raise ImageError(source, "zero-byte file")
    kind = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette transparency notes
            image = Image.open(io.BytesIO(data))
            if type(image).verify is not ImageFile.ImageFile.verify:  # PNG: checksums, chunks
                image.verify()
                image = Image.open(io.BytesIO(data))
            image.load()  # full decode: catches data cut short
    except UnidentifiedImageError:
        if kind:
            raise ImageError(source, f"corrupt {kind} file (header cannot be read)") from None
        if not data[:1024].translate(None, _TEXT_BYTES):
            suffix = Path(str(source)).suffix or "(no extension)"
            raise ImageError(source, f"not an image (text file named {suffix})") from None
        raise ImageError(source, "not an image (cannot identify)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(source, f"image too large ({exc})") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        kind = kind or "image"
        message = str(exc)
        if isinstance(exc, EOFError) or "truncated" in message.lower():
            raise ImageError(source, f"truncated {kind} file") from None
        raise ImageError(source, f"corrupt {kind} file ({message or type(exc).__name__})") from None
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block: say so rather than guess the orientation
        raise ImageError(source, f"unreadable EXIF orientation ({exc})") from None
    if upright is not None:
        image = upright
    _convert(image, source, "L" if is_gray(image) else "RGB")  # unsupported modes fail here
    return image


def is_gray(image: Image.Image) -> bool:
    """True for grayscale modes and for palette images whose colours are all gray."""
    if image.mode in ("P", "PA"):
        palette = np.array(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
        return bool(palette.size) and bool((palette == palette[:, :1]).all())
    return image.mode in _GRAY_MODES or image.mode == "F"


def image_pixels(
    image: Image.Image,
    channels: int,
    size: tuple[int, int] | None = None,
    source: str | Path = "<image>",
    resize: str = "stretch",
) -> np.ndarray:
    """Steps 3-4: a decoded image -> ``uint8`` array ``(height, width, channels)``.

    Args:
        image: a Pillow image (from :func:`decode_image`).
        channels: 1 (grayscale) or 3 (RGB).
        size: ``(height, width)`` to resize to; ``None`` (default) keeps the size.
        source: named in errors.
        resize: ``"stretch"`` (default) or ``"letterbox"`` (module docstring, step 4).

    Raises:
        ImageError: an unsupported mode (e.g. ``"F"``).
        ValueError: bad ``channels``, ``size`` or ``resize``.
    """
    check_channels(channels)
    check_resize(resize)
    if size is not None:
        size = check_size(size)
    image = _convert(image, source, "L" if channels == 1 else "RGB")
    if size is not None and (image.height, image.width) != size:
        if resize == "letterbox":
            _, pad_x, pad_y, new_w, new_h = letterbox_geometry(image.width, image.height, size)
            fill = LETTERBOX_FILL if image.mode == "L" else (LETTERBOX_FILL,) * 3
            canvas = Image.new(image.mode, (size[1], size[0]), fill)
            canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR), (pad_x, pad_y))
            image = canvas
        else:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def decode_pixels(
    data: bytes,
    channels: int,
    size: tuple[int, int] | None = None,
    source="<bytes>",
    resize: str = "stretch",
) -> np.ndarray:
    """Steps 1-4 on encoded bytes (e.g. a ``b64`` image): ``uint8 (height, width, channels)``.

    Raises:
        ImageError: see :func:`decode_image`; ``source`` names the bytes.
    """
    check_channels(channels)
    return image_pixels(decode_image(data, source), channels, size, source, resize)


def load_pixels(
    path: str | Path, channels: int, size: tuple[int, int] | None = None, resize: str = "stretch"
):
    """Steps 1-4 on a file: ``uint8`` array ``(height, width, channels)``.

    Args:
        path: the image file.
        channels: 1 (grayscale) or 3 (RGB).
        size: ``(height, width)`` to resize to; ``None`` (default) keeps the (upright) size.

    Raises:
        ImageError: the file is missing, corrupt, truncated, not an image or in an unsupported
            mode; the message names the file and the reason.
        ValueError: bad ``channels`` or ``size``.

    Example:
        >>> load_pixels("data/train/cat/1.png", channels=3, size=(32, 32)).shape
        (32, 32, 3)
    """
    check_channels(channels)
    if size is not None:
        size = check_size(size)
    return image_pixels(decode_image(read_bytes(path), path), channels, size, path, resize)


def fit_pixels(images, channels: int, size: tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """Steps 3-4 on 8-bit arrays: ``[N, H, W, C]`` (or one ``[H, W, C]``) -> ``uint8`` at
    ``size`` with ``channels``, through the same Pillow calls as files (a no-op copy-free
    return when they already fit).

    Args:
        images: uint8 pixels (or whole numbers in 0..255 of another dtype), C of 1 or 3.
        channels: 1 or 3.
        size: ``(height, width)``.
        resize: ``"stretch"`` (default) or ``"letterbox"``.

    Raises:
        ValueError: not ``[N, H, W, 1 or 3]`` / ``[H, W, 1 or 3]``, or values outside 0..255.
    """
    check_channels(channels)
    check_resize(resize)
    height, width = check_size(size)
    x = np.asarray(images)
    single = x.ndim == 3
    batch = x[None] if single else x
    if batch.ndim != 4 or batch.shape[-1] not in (1, 3):
        raise InputValueError(
            f"`images` should be uint8 pixels [N, H, W, 1 or 3] or [H, W, 1 or 3]. "
            f"Received: shape={x.shape}"
        )
    batch = _as_uint8(batch)
    if batch.shape[1:] != (height, width, channels):
        fitted = np.empty((len(batch), height, width, channels), np.uint8)
        for i, img in enumerate(batch):
            image = Image.fromarray(img[:, :, 0] if img.shape[-1] == 1 else img)  # L or RGB
            fitted[i] = image_pixels(image, channels, (height, width), resize=resize)
        batch = fitted
    return batch[0] if single else batch


def model_inputs(images, contract) -> np.ndarray:
    """8-bit arrays ``[N, H, W, C]`` -> float32 model inputs for ``contract`` (steps 3-5).

    Example:
        >>> model_inputs(test_images, contract).shape     # uint8 [N, 28, 28, 1] in
        (10000, 96, 96, 3)
    """
    size = (contract.height, contract.width)
    pixels = fit_pixels(images, contract.channels, size, getattr(contract, "resize", "stretch"))
    return contract.normalize(pixels)


def file_inputs(files, contract) -> np.ndarray:
    """Image files -> float32 model inputs ``[N, H, W, C]`` for ``contract`` (steps 1-5).

    Raises:
        ImageError: a file that cannot be used (named).
    """
    size, resize = (contract.height, contract.width), getattr(contract, "resize", "stretch")
    pixels = [load_pixels(f, contract.channels, size, resize) for f in files]
    if not pixels:
        return np.zeros((0, *contract.shape), np.float32)
    return contract.normalize(np.stack(pixels))


def check_channels(channels) -> None:
    """Raise ``ValueError`` unless ``channels`` is 1 or 3."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise InputValueError(f"`channels` should be 1 or 3. Received: channels={channels!r}")


def check_size(size) -> tuple[int, int]:
    """``(height, width)`` as ints, or ``ValueError`` naming the received value."""
    ok = isinstance(size, tuple | list) and len(size) == 2
    if not ok or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise InputValueError(
            f"`size` should be a (height, width) pair of positive integers. Received: size={size!r}"
        )
    return int(size[0]), int(size[1])


def _as_uint8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf":
        raise InputValueError(f"`images` should hold uint8 pixels. Received: dtype={x.dtype}")
    if x.size and (
        not np.isfinite(x).all() or x.min() < 0 or x.max() > 255 or np.any(x != np.round(x))
    ):
        raise InputValueError(
            f"`images` should hold 8-bit pixel values (whole numbers 0..255). Received: "
            f"{x.dtype} values in [{x.min():g}, {x.max():g}]"
        )
    return x.astype(np.uint8)


def _convert(image: Image.Image, source, mode: str) -> Image.Image:
    """Step 3: convert to ``"L"`` or ``"RGB"``, or raise ``ImageError`` for an unsupported mode."""
    if image.mode == mode:
        return image
    if image.mode in _INT_MODES:  # 16/32-bit: keep the high byte, like libpng and tf.image
        high = (np.clip(np.asarray(image), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(high).convert(mode)
    if image.mode != "F":  # float images have no agreed range: refuse rather than guess
        for route in ((mode,), ("RGB", mode)):
            try:
                converted = image
                for step in route:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        converted = converted.convert(step)
                return converted
            except ValueError:
                continue
    raise ImageError(source, f"unsupported image mode {image.mode!r}")
