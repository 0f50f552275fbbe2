"""Text-line datasets: a labels file of ``image<TAB>text`` or images named by their text, one
example format, and the charset that maps characters to the model's classes.

Two layouts are read (``read_text_lines`` detects which):

- **Labels file** (the common recognition layout; ``tools/make_text_lines.py`` writes it)::

      DIR/labels.tsv     one line per image: relative/or/absolute/image/path<TAB>text, UTF-8
                         (a BOM is allowed); paths are relative to the file's folder; blank
                         lines are ignored; the text is the rest of the line after the tab
      DIR/kinds.tsv      optional: image<TAB>kind (the image column as labels.tsv writes it),
                         the line's kind (``clean``, ``distorted``, ``captcha``, ...) for CER
                         per kind; images it does not list get kind ""

  ``path`` may also name the labels file itself (any name, e.g. ``gt.txt``).

- **Named images**: ``DIR/<text>.<png|jpg|...>``, the file's stem is the text, as is (no
  escapes: ``hello_2.png`` reads ``hello_2``). Characters a file name cannot hold (``/``, and
  on some systems ``\\ : * ? " < > |``) are not supported, nor are two lines with the same text
  or texts that differ only in case on a case-insensitive disk: use a labels file for those.
  Files with other suffixes and sub-folders are not read.

**Text**: NFC-normalized (macOS writes file names decomposed) and stripped of surrounding
whitespace (a crop does not show it); inner spaces are characters like any other.

**Charset** (``TextLineDataset.labels``): the characters the model can output, one string per
character; by default ``build_charset`` of the kept texts (sorted by code point). The model's
class ``i + 1`` is ``labels[i]``; class 0 is the CTC blank and is **not** in ``labels``.
``encode_text`` returns 0-based indices into ``labels`` (``offset=1`` gives CTC targets).

**Bad input** (each listed in ``problems`` with the file, the line and the reason; never a
crash, never silently dropped):

================================  =========  ================================================
case                              action     rule (``Problem.code``)
================================  =========  ================================================
empty text (after stripping)      skipped    nothing to learn or score (``label_empty``)
character outside ``charset``     skipped    the model cannot output it; the reason names the
                                             characters (``char_outside_charset``)
control character in the text     skipped    a tab, newline or other ``Cc`` character is a
                                             broken label (``malformed``)
line without a tab, or empty path skipped    (``malformed``); a line that is not UTF-8 too
image missing                     skipped    (``image_missing``)
image unreadable                  skipped    empty, corrupt, not an image
                                             (``image_unreadable``)
image listed again (same file)    skipped    the first line decides, even when the texts
                                             agree or it was skipped (``duplicate_id``)
text changed by NFC / stripping   fixed      kept with the cleaned text (``label_fixed``)
malformed ``kinds.tsv`` line      skipped    that kind is not read: the image's kind is ""
================================  =========  ================================================

Example:
    >>> ds = read_text_lines("data/lines/train")
    >>> ds.labels[:5], ds.examples[0].text, ds.kind_counts()
    ([' ', '0', '1', '2', '3'], 'qtcebkY', {'clean': 1667, 'distorted': 1667, 'captcha': 1666})
    >>> encode_text("ab", ["a", "b"]).tolist(), decode_indices([1, 0], ["a", "b"])
    ([0, 1], 'ba')
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LABELS_FILE = "labels.tsv"
KINDS_FILE = "kinds.tsv"


@dataclass(frozen=True, eq=False)
class TextLineExample:
    """One text-line image and its text.

    Args:
        image_path: the image file.
        text: the line's text (NFC, no surrounding whitespace, not empty).
        width, height: the image's size in pixels.
        kind: the line's kind from ``kinds.tsv`` (``clean``, ``distorted``, ...), or ``""``.
    """

    image_path: str
    text: str
    width: int
    height: int
    kind: str = ""


@dataclass
class TextLineDataset:
    """Examples, the charset (``labels``: index ``i`` is model class ``i + 1``, 0 the CTC
    blank), the reader's problems, the source and the layout (``"tsv"`` or ``"names"``)."""

    examples: list[TextLineExample]
    labels: list[str]
    problems: list = field(default_factory=list)
    source: str = ""
    format: str = "tsv"

    @property
    def num_classes(self) -> int:
        """Characters in the charset (the model outputs one more: the CTC blank)."""
        return len(self.labels)

    def limited(self, n: int | None) -> TextLineDataset:
        """The first ``n`` examples (all when ``n`` is falsy or larger)."""
        if not n or n >= len(self.examples):
            return self
        return replace(self, examples=self.examples[: int(n)])

    def kind_counts(self) -> dict[str, int]:
        """Lines per kind, in order of first appearance (``""`` for lines without one)."""
        return dict(Counter(ex.kind for ex in self.examples))

    def summary(self) -> dict:
        """Lines, charset size, longest text, widest image and problems, as JSON-ready data."""
        return {
            "format": self.format,
            "source": self.source,
            "lines": len(self.examples),
            "charset": "".join(self.labels),
            "max_text_length": max((len(ex.text) for ex in self.examples), default=0),
            "max_width": max((ex.width for ex in self.examples), default=0),
            "kinds": self.kind_counts(),
            "problems": len(self.problems),
        }

    def write_problems(self, path) -> Path:
        """Write ``problems`` as CSV (``file,item,reason,action,code``), atomically."""
        from kvision.tasks.detection.example import write_problems

        return write_problems(self.problems, path)


class TextLineDataError(InputValueError):
    """A path that is not a text-line dataset, or a bad line with ``on_error="raise"``."""


def _problem(file, item, reason, action, code):
    from kvision.tasks.detection.example import Problem

    return Problem(str(file), item, reason, action, code)


# ------------------------------------------------------------------------------- charset
def build_charset(texts) -> list[str]:
    """The sorted (by code point) unique characters of ``texts``.

    Example:
        >>> build_charset(["ba", "a c"])
        [' ', 'a', 'b', 'c']
    """
    return sorted({c for text in texts for c in str(text)})


def check_charset(charset) -> list[str]:
    """``charset`` as a list of single characters, in its own order (a string is read as its
    characters).

    Raises:
        InputValueError: empty, an entry that is not one character, or a repeated character.
    """
    chars = list(charset) if isinstance(charset, str) else list(charset or [])
    bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
    if not chars or bad:
        raise InputValueError(
            "`charset` should be a non-empty list of single characters. Received: "
            f"{'empty' if not chars else f'entries {bad[:5]!r}'}"
        )
    repeated = sorted(c for c, n in Counter(chars).items() if n > 1)
    if repeated:
        raise InputValueError(f"`charset` repeats the character(s) {repeated!r}")
    return chars


@lru_cache(maxsize=16)
def _index(charset: tuple[str, ...]) -> dict[str, int]:
    return {c: i for i, c in enumerate(charset)}


def encode_text(text: str, charset, *, offset: int = 0) -> np.ndarray:
    """int32 ``[len(text)]``: each character's index in ``charset``, plus ``offset`` (``1``
    gives CTC targets, 0 being the blank).

    Raises:
        InputValueError: a character of ``text`` is not in ``charset`` (named in the message).

    Example:
        >>> encode_text("cab", ["a", "b", "c"], offset=1).tolist()
        [3, 1, 2]
    """
    index = _index(tuple(charset))
    try:
        return np.array([index[c] + offset for c in text], np.int32)
    except KeyError:
        missing = sorted({c for c in text if c not in index})
        raise InputValueError(
            f"`text` {text!r} has character(s) {missing!r} outside the charset of {len(index)}"
        ) from None


def decode_indices(indices, charset, *, offset: int = 0) -> str:
    """The text of ``indices`` (``encode_text``'s inverse): value ``v`` is
    ``charset[v - offset]``; values below ``offset`` (with ``offset=1``: the CTC blank and the
    0 padding) are left out.

    Raises:
        InputValueError: a value past the charset.

    Example:
        >>> decode_indices([3, 1, 2, 0, 0], ["a", "b", "c"], offset=1)
        'cab'
    """
    values = np.asarray(indices, np.int64).reshape(-1) - offset
    values = values[values >= 0]
    if values.size and values.max() >= len(charset):
        raise InputValueError(
            f"`indices` has value {int(values.max()) + offset} past the charset of "
            f"{len(charset)} (offset={offset})"
        )
    return "".join(charset[int(v)] for v in values)


# ------------------------------------------------------------------------------- reading
def read_text_lines(path, charset=None, on_error: str = "skip") -> TextLineDataset:
    """Read a text-line dataset (module docstring for the layouts and the bad-input rules).

    Args:
        path: a folder with ``labels.tsv``, a labels file, or a folder of images named by
            their text.
        charset: the characters the model outputs, in its order (a list, or a string of
            them); lines with another character are skipped. Default None: ``build_charset``
            of the kept texts.
        on_error: ``"skip"`` (default: list and go on) or ``"raise"`` (the first problem,
            fixed or skipped, raises ``TextLineDataError``).

    Returns:
        A :class:`TextLineDataset` (``format`` ``"tsv"`` or ``"names"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputValueError: a bad ``charset`` or ``on_error``.
        TextLineDataError: neither layout, no usable line, or ``on_error="raise"``.

    Example:
        >>> train = read_text_lines("data/lines/train")
        >>> val = read_text_lines("data/lines/val", charset=train.labels)
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Text-line dataset not found: {root}")
    if on_error not in ("skip", "raise"):
        raise InputValueError(f"`on_error` should be 'skip' or 'raise'. Received: {on_error!r}")
    chars = check_charset(charset) if charset is not None else None
    if root.is_file() or (root / LABELS_FILE).is_file():
        file = root if root.is_file() else root / LABELS_FILE
        entries, problems = _read_labels_file(file)
        fmt = "tsv"
    elif any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
        entries, problems, file = _read_named_images(root), [], root
        fmt = "names"
    else:
        raise TextLineDataError(
            f"{root} is not a text-line dataset: expected {LABELS_FILE} (image<TAB>text per "
            "line) or images named by their text. `python tools/make_text_lines.py --out DIR` "
            "writes one."
        )
    examples = _check_entries(entries, chars, problems)
    labels = chars if chars is not None else build_charset(ex.text for ex in examples)
    dataset = TextLineDataset(examples, labels, problems, str(root), fmt)
    if on_error == "raise" and problems:
        raise TextLineDataError(f"{problems[0]} (on_error=raise)")
    if not examples:
        listed = "; ".join(str(p) for p in problems[:3])
        raise TextLineDataError(f"No usable text line in {file}. {listed}")
    return dataset


@dataclass
class _Entry:
    """One candidate line before its checks: where it was read, the image, the raw text."""

    file: Path
    item: str
    image: Path
    text: str
    kind: str = ""


def _read_labels_file(file: Path) -> tuple[list[_Entry], list]:
    problems, entries = [], []
    rows = _rows(file, problems)
    kinds = _read_kinds(file.parent / KINDS_FILE, problems)
    for number, row in rows:
        item = f"line {number}"
        image, tab, text = row.partition("\t")
        if not tab or not image.strip():
            reason = "no tab between image and text" if not tab else "empty image path"
            problems.append(_problem(file, item, f"{reason}: {row[:60]!r}", "skipped",
                                     "malformed"))  # fmt: skip
            continue
        path = Path(image.strip())
        entries.append(_Entry(file, item, path if path.is_absolute() else file.parent / path,
                              text, kinds.get(image.strip(), "")))  # fmt: skip
    return entries, problems


def _rows(file: Path, problems: list) -> list[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file without its line ends, blank lines left
    out; a line that is not UTF-8 is listed as malformed."""
    rows = []
    data = file.read_bytes().removeprefix(b"\xef\xbb\xbf")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            row = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(_problem(file, f"line {number}", f"not UTF-8 ({exc.reason} at byte "
                                     f"{exc.start})", "skipped", "malformed"))  # fmt: skip
            continue
        if row.strip():
            rows.append((number, row))
    return rows


def _read_kinds(file: Path, problems: list) -> dict[str, str]:
    if not file.is_file():
        return {}
    kinds = {}
    for number, row in _rows(file, problems):
        image, tab, kind = row.partition("\t")
        if not tab or not image.strip() or not kind.strip():
            problems.append(_problem(file, f"line {number}", f"expected image<TAB>kind: "
                                     f"{row[:60]!r}", "skipped", "malformed"))  # fmt: skip
            continue
        kinds[image.strip()] = kind.strip()
    return kinds


def _read_named_images(root: Path) -> list[_Entry]:
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [_Entry(p, "file name", p, p.stem) for p in files]


def _check_entries(entries: list[_Entry], charset, problems: list) -> list[TextLineExample]:
    allowed = set(charset) if charset is not None else None
    first: dict[Path, str] = {}
    examples = []
    for e in entries:
        text = unicodedata.normalize("NFC", e.text).strip()
        key = e.image.resolve()
        problem = _why_skipped(e, text, allowed, first.get(key))
        first.setdefault(key, e.item)
        if problem is None:
            try:
                width, height = _image_size(e.image)
            except Exception as exc:
                problem = f"unreadable image {e.image}: {exc}", "image_unreadable"
        if problem is not None:
            problems.append(_problem(e.file, e.item, problem[0], "skipped", problem[1]))
            continue
        if text != e.text:
            problems.append(_problem(e.file, e.item, f"text {e.text!r} read as {text!r} (NFC, "
                                     "surrounding whitespace removed)", "fixed",
                                     "label_fixed"))  # fmt: skip
        examples.append(TextLineExample(str(e.image), text, int(width), int(height), e.kind))
    return examples


def _why_skipped(e: _Entry, text: str, allowed, first: str | None):
    """``(reason, code)`` when the line is left out (before reading the image), else None."""
    if first is not None:
        return f"image {e.image} listed again (first at {first})", "duplicate_id"
    if not text:
        return "empty text", "label_empty"
    control = sorted({c for c in text if unicodedata.category(c) == "Cc"})
    if control:
        names = ", ".join(f"U+{ord(c):04X}" for c in control)
        hint = " (a tab: the labels file has two columns, kinds go in kinds.tsv)"
        hint = hint if "\t" in control else ""
        return f"control character(s) {names} in {text!r}{hint}", "malformed"
    outside = sorted({c for c in text if allowed is not None and c not in allowed})
    if outside:
        reason = f"character(s) {outside!r} of {text!r} outside the charset of {len(allowed)}"
        return reason, "char_outside_charset"
    if not e.image.is_file():
        return f"image {e.image} not found", "image_missing"
    return None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        if im.size[0] < 1 or im.size[1] < 1:
            raise ValueError(f"size {im.size[0]}x{im.size[1]}")
        return im.size
