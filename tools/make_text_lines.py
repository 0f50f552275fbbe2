#!/usr/bin/env python3
"""Write a deterministic text-line recognition dataset: words and random strings rendered with
Debian fonts, plainly, with distortions, and as captchas.

Each line has one of three **kinds** (assigned in turn: line ``i`` gets ``kinds[i % len(kinds)]``,
so each kind is a third of every split):

- ``clean``: dark text on a flat light background, no distortion (a scanned printed line);
- ``distorted``: the same text under rotation (+-3 deg), shear (+-0.3), perspective (corners
  moved up to 8 % of the text height), stroke thickening, a textured background (smooth blotches,
  a light gradient, paper grain, sometimes a ruled line; one line in ten light on dark), Gaussian
  blur (radius 0-1.2 px), Gaussian noise (sigma 0-12) and, one line in three, JPEG compression;
- ``captcha``: the ``captcha`` PyPI package's ``ImageCaptcha`` (per-character rotation and warp,
  noise dots and a curve), with its bundled DroidSansMono and the sans / mono fonts below.

Text: ``clean`` and ``distorted`` lines are 1-3 words (60 %) or a random string of 4-10 letters
and digits (40 %); ``captcha`` lines are random strings of 4-8. Words come from a word list
(default ``/usr/share/dict/words``, Debian ``wamerican``) keeping only words of ASCII letters:
words with an apostrophe (possessives) or an accent are dropped, not rewritten. One word line in
ten is upper-cased, about one in seven capitalized. Words are split by a hash of the word (10 %
test, 10 % val, 80 % train), so the val and test words never occur in train lines. The charset
is therefore ``a-z A-Z 0-9`` and the space. A line whose rendering would be wider than
``max_width`` is drawn again with a new text.

Fonts (``FONTS``: name, style, Debian package, file): serif, sans and mono faces from
``fonts-dejavu-core``, ``fonts-liberation2`` and ``fonts-freefont-ttf``, handwriting-style faces
from ``fonts-dkg-handwriting``, ``fonts-breip``, ``fonts-humor-sans`` and
``fonts-dancingscript``. The installed ones are used (a missing package is reported and recorded
in ``dataset.json``); none installed, or a font asked for with ``--fonts`` missing, is an error
naming the package. ``clean`` and ``distorted`` lines take the styles in turn, and the fonts of
a style in turn. Text is sized by its ink, whatever the font's own metrics: the mean of the cap
height and x-height / 0.72 (``_reference``), plus 30 % for descenders, is 70-92 % of the line
height; the crop grows to hold ink that reaches further. ``Humor-Sans`` has capitals only: its
lines are upper-cased.

Determinism: line ``i`` of split ``s`` draws from ``numpy.random.default_rng([seed, s, i])``;
the captcha package draws from Python's ``secrets`` (0.7; ``random`` in earlier releases),
which this tool replaces, in a private copy of ``captcha.image``, by a ``random.Random`` seeded
from that stream. The same seed, fonts and library versions give byte-identical files.

Output (``OUT`` appears whole: a finished temporary folder beside it is renamed into place)::

    OUT/{train,val,test}/images/000000.png   8-bit gray, height ``height``, width <= max_width
    OUT/{train,val,test}/labels.tsv          images/000000.png<TAB>text, one line per image,
                                             UTF-8 (the common two-column layout)
    OUT/{train,val,test}/kinds.tsv           images/000000.png<TAB>kind (clean / distorted /
                                             captcha), same order; read by
                                             kvision.tasks.ocr.data for CER per kind
    OUT/dataset.json                         generator, params, fonts (name, style, package,
                                             file), missing fonts, captcha, text sources, the
                                             train charset and per split: lines, per kind, per
                                             font, widths (min, max, mean)
    OUT/preview.png                          with --preview N: N train lines, kind and font

Usage (the CLI mirrors :func:`generate`)::

    python tools/make_text_lines.py --out data/lines --preview 12
    python tools/make_text_lines.py --out data/lines --kinds clean,captcha --fonts serif,mono
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import random
import shutil
import string
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
KINDS = ("clean", "distorted", "captcha")
STYLES = ("serif", "sans", "mono", "handwriting")
FONT_ROOT = Path("/usr/share/fonts")
#: (name, style, Debian package, file under FONT_ROOT)
FONTS = (
    ("DejaVuSerif", "serif", "fonts-dejavu-core", "truetype/dejavu/DejaVuSerif.ttf"),
    ("DejaVuSans", "sans", "fonts-dejavu-core", "truetype/dejavu/DejaVuSans.ttf"),
    ("DejaVuSans-Bold", "sans", "fonts-dejavu-core", "truetype/dejavu/DejaVuSans-Bold.ttf"),
    ("DejaVuSansMono", "mono", "fonts-dejavu-core", "truetype/dejavu/DejaVuSansMono.ttf"),
    ("LiberationSerif", "serif", "fonts-liberation2",
     "truetype/liberation2/LiberationSerif-Regular.ttf"),
    ("LiberationSerif-Italic", "serif", "fonts-liberation2",
     "truetype/liberation2/LiberationSerif-Italic.ttf"),
    ("LiberationSans", "sans", "fonts-liberation2",
     "truetype/liberation2/LiberationSans-Regular.ttf"),
    ("LiberationMono", "mono", "fonts-liberation2",
     "truetype/liberation2/LiberationMono-Regular.ttf"),
    ("FreeSerif", "serif", "fonts-freefont-ttf", "truetype/freefont/FreeSerif.ttf"),
    ("FreeSans", "sans", "fonts-freefont-ttf", "truetype/freefont/FreeSans.ttf"),
    ("FreeMono", "mono", "fonts-freefont-ttf", "truetype/freefont/FreeMono.ttf"),
    ("FreeMonoBold", "mono", "fonts-freefont-ttf", "truetype/freefont/FreeMonoBold.ttf"),
    ("dkg", "handwriting", "fonts-dkg-handwriting", "truetype/fifthhorseman/dkg.ttf"),
    ("Breip", "handwriting", "fonts-breip", "truetype/breip/Breip.ttf"),
    ("Humor-Sans", "handwriting", "fonts-humor-sans", "truetype/humor-sans/Humor-Sans.ttf"),
    ("DancingScript", "handwriting", "fonts-dancingscript",
     "opentype/dancingscript/DancingScript-Regular.otf"),
)  # fmt: skip
CAPS_ONLY = {"Humor-Sans"}  # its lower-case glyphs are capitals: its lines are upper-cased
WORDS_FILE = Path("/usr/share/dict/words")
WORDS_PACKAGE = "wamerican"
ALPHANUMERIC = string.ascii_letters + string.digits
WORD_FRACTION = 0.6  # clean / distorted lines made of words (the rest: random strings)
WORDS_PER_LINE = (1, 3)
RANDOM_LENGTH = (4, 10)
CAPTCHA_LENGTH = (4, 8)
CAPTCHA_CHAR_WIDTH = 38  # ImageCaptcha's width per character at its height 60 (less squeezes)
X_RATIO = 0.72  # a common x-height / cap-height ratio (DejaVu 0.75, Liberation 0.72)
DESCENDER = 0.3  # the reference span: the reference height + this fraction of it
SCALE = 3  # lines are drawn at SCALE x the output height, then reduced (anti-aliasing)
TRIES = 30  # texts drawn per line before giving up on max_width
_GENERATOR = "tools/make_text_lines.py"


@dataclass(frozen=True)
class Font:
    """One font file: ``name`` (``FONTS``), ``style``, Debian ``package`` and ``file``."""

    name: str
    style: str
    package: str
    file: str

    def to_json(self) -> dict:
        return {"name": self.name, "style": self.style, "package": self.package, "file": self.file}


@dataclass(frozen=True)
class Line:
    """One rendered line: the text, its kind, the font name and uint8 gray ``[H, W]`` pixels."""

    text: str
    kind: str
    font: str
    pixels: np.ndarray


def _require(ok: bool, message: str) -> None:
    """Raise ``InputValueError(message)`` unless ``ok``."""
    if not ok:
        from kvision.errors import InputValueError

        raise InputValueError(message)


# ------------------------------------------------------------------------------- sources
def find_fonts(names=None, root: Path = FONT_ROOT) -> tuple[list[Font], list[dict]]:
    """``(installed, missing)`` fonts of ``FONTS``, restricted to ``names``.

    Args:
        names: font names and/or styles (``serif``, ``sans``, ``mono``, ``handwriting``);
            default None (all).
        root: the fonts folder, default ``/usr/share/fonts``.

    Returns:
        the installed :class:`Font` list (``FONTS`` order) and the missing ones as
        ``{"name", "package", "file"}``.

    Raises:
        InputValueError: an unknown name, a font asked for by name that is missing, or no font
            installed at all (the message says which Debian packages to install).
    """
    known = {name for name, *_ in FONTS}
    wanted = list(names) if names else list(STYLES)
    unknown = [n for n in wanted if n not in known and n not in STYLES]
    _require(not unknown, f"Unknown font(s) {unknown}. Use a style ({', '.join(STYLES)}) or a "
             f"font name: {', '.join(sorted(known))}")  # fmt: skip
    installed, missing = [], []
    for name, style, package, rel in FONTS:
        if name not in wanted and style not in wanted:
            continue
        path = Path(root) / rel
        if path.is_file():
            installed.append(Font(name, style, package, str(path)))
        else:
            missing.append({"name": name, "package": package, "file": str(path)})
            _require(name not in wanted, f"Font {name} is not installed ({path} missing): "
                     f"apt-get install {package}")  # fmt: skip
    packages = sorted({m["package"] for m in missing})
    _require(bool(installed), f"No font of {wanted} is installed under {root}: apt-get install "
             f"{' '.join(packages)}")  # fmt: skip
    return installed, missing


def load_words(path: str | Path = WORDS_FILE) -> list[str]:
    """The words of ``path`` (one a line) made only of ASCII letters, sorted, without repeats.

    Raises:
        FileNotFoundError: ``path`` missing (the default comes with Debian ``wamerican``).
        InputValueError: no usable word in it.
    """
    path = Path(path)
    if not path.is_file():
        hint = f": apt-get install {WORDS_PACKAGE}" if path == WORDS_FILE else ""
        raise FileNotFoundError(f"Word list not found: {path}{hint}")
    words = path.read_text(encoding="utf-8", errors="replace").split()
    kept = sorted({w for w in words if w.isascii() and w.isalpha()})
    _require(bool(kept), f"No word of ASCII letters only in {path}")
    return kept


def split_words(words: list[str]) -> dict[str, list[str]]:
    """The words of each split: ``crc32(word) % 10`` is 0 for test, 1 for val, else train."""
    parts = {split: [] for split in SPLITS}
    for w in words:
        h = zlib.crc32(w.encode()) % 10
        parts["test" if h == 0 else "val" if h == 1 else "train"].append(w)
    return parts


def sample_text(rng: np.random.Generator, kind: str, words: list[str]) -> str:
    """A line's text: words or a random string for clean / distorted, a string for captcha."""

    def random_string(lo, hi):
        n = int(rng.integers(lo, hi + 1))
        return "".join(ALPHANUMERIC[i] for i in rng.integers(0, len(ALPHANUMERIC), n))

    if kind == "captcha":
        return random_string(*CAPTCHA_LENGTH)
    if not words or rng.random() >= WORD_FRACTION:
        return random_string(*RANDOM_LENGTH)
    n = int(rng.integers(WORDS_PER_LINE[0], WORDS_PER_LINE[1] + 1))
    text = " ".join(words[i] for i in rng.integers(0, len(words), n))
    case = rng.random()
    return text.upper() if case < 0.1 else text[0].upper() + text[1:] if case < 0.25 else text


# ------------------------------------------------------------------------------- rendering
@lru_cache(maxsize=256)
def _font(file: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(file, size)


@lru_cache(maxsize=64)
def _reference(file: str) -> float:
    """The font's reference height at size 100: the mean of its cap height (``H``) and its
    x-height (``x``) / ``X_RATIO``, so that fonts with small lower case (handwriting) are not
    drawn tiny."""
    font = _font(file, 100)
    (_, cap_top, _, base), (_, x_top, _, _) = font.getbbox("H"), font.getbbox("x")
    return ((base - cap_top) + (base - x_top) / X_RATIO) / 2


def _draw_mask(text: str, file: str, span: float, stroke: int):
    """White-on-black text mask (PIL ``L``) with margins, and the ``(top, bottom)`` of the
    reference span (``_reference`` above the baseline, ``DESCENDER`` of it below) in it."""
    from PIL import Image, ImageDraw

    font = _font(file, max(4, round(100 * span / (_reference(file) * (1 + DESCENDER)))))
    base = font.getbbox("H")[3]
    top, bottom = base - span / (1 + DESCENDER), base + span * DESCENDER / (1 + DESCENDER)
    margin = int(span)
    x0, _, x1, _ = font.getbbox(text, stroke_width=stroke)
    mask = Image.new("L", (int(x1 - min(x0, 0)) + 2 * margin, int(bottom - top) + 2 * margin), 0)
    ImageDraw.Draw(mask).text((margin - min(x0, 0), margin - top), text, font=font, fill=255,
                              stroke_width=stroke, stroke_fill=255)  # fmt: skip
    return mask, (margin, margin + bottom - top)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 8 coefficients PIL's ``PERSPECTIVE`` transform needs to map the 4 points ``src``
    (in the input) to ``dst`` (in the output): it asks, per output pixel, the input pixel."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.linalg.solve(np.asarray(rows, np.float64), np.asarray(rhs, np.float64))


def _warp(mask, band, rng: np.random.Generator, span: float):
    """Rotate, shear and move the corners of the text box; returns the mask and the centre
    line's new vertical position."""
    from PIL import Image

    w, h = mask.size
    (y0, y1), cx, cy = band, w / 2, (band[0] + band[1]) / 2
    src = np.array([[0, y0], [w, y0], [w, y1], [0, y1]], np.float64)
    angle, shear = np.deg2rad(rng.uniform(-3, 3)), rng.uniform(-0.3, 0.3)
    c, s = np.cos(angle), np.sin(angle)
    x, y = src[:, 0] - cx + shear * (cy - src[:, 1]), src[:, 1] - cy
    dst = np.stack([c * x - s * y + cx, s * x + c * y + cy], axis=1)
    dst += rng.uniform(-0.08, 0.08, (4, 2)) * span
    coeffs = _homography(src, dst)
    warped = mask.transform(mask.size, Image.Transform.PERSPECTIVE, tuple(coeffs),
                            Image.Resampling.BICUBIC)  # fmt: skip
    return warped, float(dst[:, 1].mean())


def _crop_box(mask, centre: float, span: float, frac: float, pads, rng) -> tuple | None:
    """The crop around the ink: ``span / frac`` high centred (with jitter) on ``centre`` and
    grown to hold all the ink; ``pads`` (fractions of the height) left and right."""
    bbox = mask.getbbox()
    if bbox is None:
        return None
    height = span / frac
    top = centre - height / 2 + rng.uniform(-0.5, 0.5) * (height - span) / 2
    top, bottom = min(top, bbox[1] - 1), max(top + height, bbox[3] + 1)
    left = bbox[0] - pads[0] * (bottom - top)
    right = bbox[2] + pads[1] * (bottom - top)
    return round(left), round(top), round(right), round(bottom)


def _texture(h: int, w: int, level: float, rng: np.random.Generator, dark: bool) -> np.ndarray:
    """Float32 ``[h, w]`` background: ``level`` plus smooth blotches, a gradient, paper grain
    and, one time in four, a ruled line."""
    from PIL import Image

    grid = rng.normal(0, 1, (4, max(2, int(4 * w / h)))).astype(np.float32)
    blotch = np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.Resampling.BICUBIC))
    gx, gy = np.meshgrid(np.linspace(-0.5, 0.5, w), np.linspace(-0.5, 0.5, h))
    angle = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(angle) * gx + np.sin(angle) * gy
    amp = 0.4 if dark else 1.0
    out = level + amp * (rng.uniform(4, 25) * blotch + rng.uniform(0, 50) * gradient)
    out += amp * rng.normal(0, rng.uniform(0, 12), (h, w))
    if rng.random() < 0.25:
        y = int(rng.uniform(0.8, 0.97) * h)
        out[y : y + max(1, h // 40)] -= rng.uniform(30, 80) * (-1 if dark else 1)
    return out.astype(np.float32)


def render_printed(text: str, font: Font, kind: str, height: int, max_width: int,
                   rng: np.random.Generator) -> np.ndarray | None:  # fmt: skip
    """uint8 ``[height, W]`` of a ``clean`` or ``distorted`` line, or None when ``W`` would
    exceed ``max_width`` (the caller draws another text)."""
    from PIL import Image, ImageFilter

    distorted = kind == "distorted"
    frac = rng.uniform(0.7, 0.92)
    span = frac * height * SCALE
    stroke = int(rng.choice([0, 0, 0, 1, 2])) if distorted else 0
    mask, band = _draw_mask(text, font.file, span, stroke)
    estimate = (mask.size[0] - 2 * (band[1] - band[0])) / span * frac * height
    if estimate > max_width:
        return None
    centre = (band[0] + band[1]) / 2
    if distorted:
        mask, centre = _warp(mask, band, rng, span)
    box = _crop_box(mask, centre, span, frac, rng.uniform(0.05, 0.4, 2), rng)
    if box is None:
        return None
    width = round((box[2] - box[0]) * height / (box[3] - box[1]))
    if width > max_width or width < 2:
        return None
    alpha = np.asarray(mask.crop(box), np.float32) / 255.0
    h, w = alpha.shape
    if distorted:
        dark = rng.random() < 0.1
        level = rng.uniform(15, 90) if dark else rng.uniform(160, 250)
        ink = rng.uniform(level + 110, 255) if dark else rng.uniform(0, level - 110)
        background = _texture(h, w, level, rng, dark)
    else:
        level, ink = rng.uniform(215, 255), rng.uniform(0, 45)
        background = np.full((h, w), level, np.float32)
    pixels = background * (1 - alpha) + ink * alpha
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    if distorted:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2) * SCALE))
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    if not distorted:
        return np.asarray(image)
    noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(0, 12), (height, width))
    image = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
    if rng.random() < 1 / 3:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(rng.integers(30, 80)))
        image = _open_gray(buf)
    return np.asarray(image)


def _open_gray(buf):
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("L")


# ------------------------------------------------------------------------------- captcha
class _SeededSecrets:
    """The ``secrets`` functions ``captcha.image`` calls, drawn from a seeded ``random.Random``
    (the real ones read the OS entropy pool and cannot be seeded)."""

    def __init__(self, rnd: random.Random):
        self._rnd = rnd

    def randbelow(self, n: int) -> int:
        return self._rnd.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rnd.getrandbits(k)

    def choice(self, seq):
        return self._rnd.choice(seq)


@lru_cache(maxsize=1)
def _captcha_module():
    """A private copy of ``captcha.image`` whose ``secrets`` / ``random`` this tool swaps for
    seeded ones (the real module, which other code may use, is left alone)."""
    try:
        from captcha import image as real
    except ImportError as exc:
        from kvision.errors import MissingDependencyError

        hint = "pip install captcha (or leave captcha out of --kinds)"
        raise MissingDependencyError(f"The captcha kind needs the captcha package: {hint}") from exc
    spec = importlib.util.spec_from_file_location("_kvision_captcha_image", real.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _require(hasattr(module, "secrets") or hasattr(module, "random"),
             f"captcha {_version('captcha')} draws its randomness neither from `secrets` nor "
             "`random`: its output cannot be seeded; install captcha==0.7.1")  # fmt: skip
    return module


def captcha_fonts(fonts: list[Font]) -> list[str]:
    """The captcha lines' font files: captcha's bundled DroidSansMono and the sans / mono
    fonts of ``fonts``."""
    return [*_captcha_module().DEFAULT_FONTS,
            *(f.file for f in fonts if f.style in ("sans", "mono"))]  # fmt: skip


def _captcha_font_name(file: str) -> str:
    """A captcha font file as ``dataset.json`` records it: ``captcha/data/<file>`` for the one
    the package bundles (the same wherever the package is installed), else the path."""
    bundled = Path(_captcha_module().DATA_DIR)
    path = Path(file)
    return f"captcha/data/{path.name}" if path.parent == bundled else file


def render_captcha(text: str, font_file: str, height: int, rng: np.random.Generator):
    """uint8 ``[height, W]``: ``ImageCaptcha(width=CAPTCHA_CHAR_WIDTH * len(text), height=60)``
    of ``text`` (mid-gray-ish ink on a light colour, drawn from ``rng``), seeded from ``rng``,
    reduced to ``height``."""
    from PIL import Image

    module = _captcha_module()
    rnd = random.Random(int(rng.integers(0, 2**63)))
    if hasattr(module, "secrets"):
        module.secrets = _SeededSecrets(rnd)
    if hasattr(module, "random"):
        module.random = rnd
    background = tuple(int(v) for v in rng.integers(225, 256, 3))
    # captcha pastes each glyph through a mask of its own luminance x 1.97: ink darker than
    # ~130 comes out fainter, not darker, so mid-gray ink gives the strongest contrast
    ink = (*(int(v) for v in rng.integers(90, 170, 3)), int(rng.integers(220, 256)))
    maker = module.ImageCaptcha(width=CAPTCHA_CHAR_WIDTH * len(text), height=60, fonts=[font_file])
    image = maker.generate_image(text, bg_color=background, fg_color=ink).convert("L")
    width = max(2, round(image.size[0] * height / image.size[1]))
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))


# ------------------------------------------------------------------------------- driver
def render_line(split: str, i: int, *, seed: int, kinds, fonts: list[Font], captcha: list[str],
                words: list[str], height: int, max_width: int) -> Line:  # fmt: skip
    """Line ``i`` of ``split`` (module docstring: kind, font and text choice, determinism)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), i])
    kind, k = kinds[i % len(kinds)], i // len(kinds)
    if kind == "captcha":
        font_file = captcha[k % len(captcha)]
        text = sample_text(rng, kind, words)
        return Line(text, kind, Path(font_file).stem, render_captcha(text, font_file, height, rng))
    styles = sorted({f.style for f in fonts}, key=STYLES.index)
    style = styles[k % len(styles)]
    of_style = [f for f in fonts if f.style == style]
    font = of_style[(k // len(styles)) % len(of_style)]
    for _ in range(TRIES):
        text = sample_text(rng, kind, words)
        text = text.upper() if font.name in CAPS_ONLY else text
        pixels = render_printed(text, font, kind, height, max_width, rng)
        if pixels is not None:
            return Line(text, kind, font.name, pixels)
    from kvision.errors import InputValueError

    raise InputValueError(f"No text fits in max_width={max_width} at height={height} with "
                          f"{font.name} after {TRIES} tries: raise max_width")  # fmt: skip


def _write_split(folder: Path, split: str, n: int, opts: dict, render) -> tuple[dict, list]:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    labels, kinds, lines = [], [], []
    for i in range(n):
        line = render(split, i)
        name = f"images/{i:06d}.png"
        Image.fromarray(line.pixels, "L").save(folder / name, format="PNG")
        labels.append(f"{name}\t{line.text}\n")
        kinds.append(f"{name}\t{line.kind}\n")
        lines.append(line)
    (folder / "labels.tsv").write_text("".join(labels), encoding="utf-8")
    (folder / "kinds.tsv").write_text("".join(kinds), encoding="utf-8")
    widths = [line.pixels.shape[1] for line in lines]
    stats = {
        "lines": n,
        "kinds": dict(Counter(line.kind for line in lines)),
        "fonts": dict(sorted(Counter(line.font for line in lines).items())),
        "width": {"min": min(widths, default=0), "max": max(widths, default=0),
                  "mean": round(float(np.mean(widths)), 1) if widths else 0},
        "words": len(opts["words"][split]),
    }  # fmt: skip
    return stats, lines[: opts["preview"]] if split == "train" else []


def write_preview(lines: list[Line], path: str | Path, scale: int = 2) -> Path:
    """A PNG of ``lines`` (x ``scale``, one per row) with kind, font and text beside each."""
    from PIL import Image, ImageDraw

    from kvision.io import atomic_write_bytes

    left = max((ln.pixels.shape[1] for ln in lines), default=1) * scale + 12
    row = max((ln.pixels.shape[0] for ln in lines), default=1) * scale + 6
    sheet = Image.new("RGB", (left + 420, row * len(lines) + 6), "white")
    draw = ImageDraw.Draw(sheet)
    for k, ln in enumerate(lines):
        h, w = ln.pixels.shape
        tile = Image.fromarray(ln.pixels, "L").resize((w * scale, h * scale))
        sheet.paste(tile.convert("RGB"), (6, 6 + k * row))
        draw.text((left, 6 + k * row + h * scale // 2 - 6), f"{ln.kind:9s} {ln.font:22s} "
                  f"{ln.text!r}", fill=(0, 0, 0))  # fmt: skip
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


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


def _check_options(seed, counts, height, max_width, kinds, preview) -> list[str]:
    _require(isinstance(seed, int) and seed >= 0, f"`seed` should be an int >= 0. Received: "
             f"seed={seed!r}")  # fmt: skip
    for name, n in counts.items():
        _require(isinstance(n, int) and n >= 0, f"`{name}` should be an int >= 0. Received: "
                 f"{name}={n!r}")  # fmt: skip
    _require(isinstance(height, int) and 16 <= height <= 256, "`height` should be an int in "
             f"16..256. Received: height={height!r}")  # fmt: skip
    _require(isinstance(max_width, int) and max_width >= 2 * height, "`max_width` should be an "
             f"int >= 2 * height ({2 * height}). Received: max_width={max_width!r}")  # fmt: skip
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    _require(bool(kinds) and not bad and len(set(kinds)) == len(kinds), "`kinds` should be "
             f"distinct names of {', '.join(KINDS)}. Received: kinds={kinds}")  # fmt: skip
    _require(isinstance(preview, int) and 0 <= preview <= counts["n_train"], "`preview` should "
             f"be 0..n_train ({counts['n_train']}). Received: preview={preview!r}")  # fmt: skip
    return kinds


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 5000,
    n_val: int = 500,
    n_test: int = 500,
    height: int = 32,
    max_width: int | None = None,
    kinds=KINDS,
    fonts=None,
    words: str | Path = WORDS_FILE,
    preview: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write the dataset described in the module docstring to ``out_dir``.

    Args:
        out_dir: output folder: new, empty, or (with ``overwrite``) an earlier dataset.
        seed: integer >= 0, default 0; the same seed gives byte-identical files.
        n_train, n_val, n_test: lines per split, defaults 5000, 500, 500.
        height: line height in pixels, default 32.
        max_width: widest line in pixels, default ``8 * height`` (256 at 32).
        kinds: some of ``clean``, ``distorted``, ``captcha``; default all three.
        fonts: font names and/or styles (``find_fonts``); default None (every installed one).
        words: the word list, default ``/usr/share/dict/words`` (Debian ``wamerican``).
        preview: write ``preview.png`` with this many train lines; default 0 (none).
        overwrite: replace an earlier dataset of this tool at ``out_dir``; default False.

    Returns:
        ``dataset.json``'s content plus ``out_dir`` and ``seconds``.

    Raises:
        InputValueError: a bad argument, an unknown or missing font, no font installed.
        FileNotFoundError: the word list is missing. MissingDependencyError: ``captcha`` asked
        for and not installed. FileExistsError: ``out_dir`` is a file, a foreign non-empty
        folder, or a dataset and ``overwrite`` is False.

    Example:
        >>> generate("/tmp/lines", n_train=6, n_val=3, n_test=3)  # doctest: +SKIP
    """
    from kvision.io import atomic_write_text

    start = time.perf_counter()
    max_width = 8 * height if max_width is None and isinstance(height, int) else max_width
    counts = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    kinds = _check_options(seed, counts, height, max_width, kinds, preview)
    out = Path(out_dir)
    _check_out(out, overwrite)
    fonts = [fonts] if isinstance(fonts, str) else fonts
    installed, missing = find_fonts(fonts)
    for m in missing:
        print(f"make_text_lines: note: {m['name']} not installed (apt-get install "
              f"{m['package']}); lines use the other fonts", file=sys.stderr)  # fmt: skip
    vocabulary = load_words(words) if {"clean", "distorted"} & set(kinds) else []
    opts = {"words": split_words(vocabulary), "preview": preview}
    captcha = captcha_fonts(installed) if "captcha" in kinds else []
    params = {"seed": seed, "height": height, "max_width": max_width, "kinds": kinds} | counts

    def render(split, i):
        return render_line(split, i, seed=seed, kinds=kinds, fonts=installed, captcha=captcha,
                           words=opts["words"][split], height=height,
                           max_width=max_width)  # fmt: skip

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        umask = os.umask(0o22)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        stats, shown = {}, []
        for split, n in zip(SPLITS, counts.values(), strict=True):
            stats[split], first = _write_split(tmp / split, split, n, opts, render)
            shown += first
        train_text = (tmp / "train" / "labels.tsv").read_text(encoding="utf-8").splitlines()
        charset = sorted({c for row in train_text for c in row.split("\t", 1)[1]})
        dataset = {
            "generator": _GENERATOR,
            "params": params,
            "layout": {"labels": "labels.tsv: image<TAB>text",
                       "kinds": "kinds.tsv: image<TAB>kind"},
            "fonts": [f.to_json() for f in installed],
            "fonts_missing": missing,
            "captcha": {"package": f"captcha {_version('captcha')}",
                        "fonts": [_captcha_font_name(f) for f in captcha]},
            "text": {"words": str(words), "words_kept": len(vocabulary), "word_fraction":
                     WORD_FRACTION, "words_per_line": list(WORDS_PER_LINE), "random_length":
                     list(RANDOM_LENGTH), "captcha_length": list(CAPTCHA_LENGTH)},
            "versions": {"pillow": _version("pillow"), "numpy": _version("numpy")},
            "charset": "".join(charset),
            "splits": stats,
        }  # fmt: skip
        atomic_write_text(tmp / "dataset.json", json.dumps(dataset, indent=2) + "\n")
        if preview:
            write_preview(shown, tmp / "preview.png")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataset | {"out_dir": str(out), "seconds": round(time.perf_counter() - start, 2)}


def format_summary(summary: dict) -> str:
    """The table the command prints: lines per split and kind, and widths."""
    kinds = summary["params"]["kinds"]
    rows = [["split", "lines", *kinds, "min_w", "max_w", "mean_w"]]
    for split, s in summary["splits"].items():
        w = s["width"]
        rows.append([split, s["lines"], *(s["kinds"].get(k, 0) for k in kinds), *w.values()])
    widths = [max(len(str(v)) for v in col) for col in zip(*rows, strict=True)]
    table = "\n".join("  ".join(f"{v!s:>{n}}" for v, n in zip(r, widths, strict=True))
                      for r in rows)  # fmt: skip
    p = summary["params"]
    return (
        f"wrote {summary['out_dir']} in {summary['seconds']} s (seed {p['seed']}, height "
        f"{p['height']}, {len(summary['fonts'])} fonts, charset of "
        f"{len(summary['charset'])})\n{table}"
    )


def main(argv=None) -> int:
    """``python tools/make_text_lines.py --out DIR [options]`` (mirrors :func:`generate`);
    returns the exit status: 0, or 2 with one line on stderr for a user error."""
    epilog = f"fonts: {', '.join(STYLES)} or {', '.join(name for name, *_ in FONTS)}"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=epilog)
    add = p.add_argument
    add("--out", required=True, help="output folder")
    add("--seed", type=int, default=0, help="default 0")
    for split, n in (("train", 5000), ("val", 500), ("test", 500)):
        add(f"--n-{split}", type=int, default=n, help=f"{split} lines (default {n})")
    add("--height", type=int, default=32, help="line height, px (default 32)")
    add("--max-width", type=int, default=None, help="widest line, px (default 8 x height)")
    add("--kinds", default=",".join(KINDS), help="comma-separated (default %(default)s)")
    add("--fonts", default=None, help="comma-separated names or styles (default: all installed)")
    add("--words", default=str(WORDS_FILE), help="word list (default %(default)s)")
    add("--preview", type=int, default=0, metavar="N", help="write preview.png of N train lines")
    add("--overwrite", action="store_true", help="replace an earlier dataset of this tool")
    kwargs = vars(p.parse_args(argv))
    kwargs["kinds"] = [k.strip() for k in kwargs["kinds"].split(",") if k.strip()]
    if kwargs["fonts"]:
        kwargs["fonts"] = [f.strip() for f in kwargs["fonts"].split(",") if f.strip()]
    try:
        summary = generate(kwargs.pop("out"), **kwargs)
    except Exception as exc:
        from kvision.errors import is_user_error

        if not is_user_error(exc):
            raise
        print(f"make_text_lines: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
