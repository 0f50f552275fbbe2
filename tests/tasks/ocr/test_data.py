"""kvision.tasks.ocr.data: both layouts, every bad-input rule, the charset and its encoding, and
the splits reader. Images are tiny gray PNGs written here (their pixels do not matter)."""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.tasks.ocr.data import (
    TextLineDataError,
    build_charset,
    check_charset,
    decode_indices,
    encode_text,
    read_text_lines,
)


def _png(path: Path, width: int = 12, height: int = 8) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width), 200, np.uint8)).save(path)
    return path.name


def _labels(folder: Path, rows: list[str], name: str = "labels.tsv", newline="\n") -> Path:
    file = folder / name
    file.write_bytes(newline.join(rows).encode("utf-8") + newline.encode())
    return file


def _problems(ds) -> list[tuple[str, str, str]]:
    return [(p.item, p.action, p.code) for p in ds.problems]


# ------------------------------------------------------------------------------- layouts
def test_reads_labels_tsv_with_kinds_and_sizes(tmp_path):
    _png(tmp_path / "images" / "a.png", 20, 8)
    _png(tmp_path / "images" / "b.png", 30, 10)
    _png(tmp_path / "images" / "c.png")
    _labels(tmp_path, ["images/a.png\thello world", "images/b.png\tAb1", "", "images/c.png\tz"])
    _labels(tmp_path, ["images/a.png\tclean", "images/b.png\tcaptcha"], "kinds.tsv")
    ds = read_text_lines(tmp_path)
    assert ds.format == "tsv" and ds.source == str(tmp_path) and ds.problems == []
    got = [(Path(e.image_path).name, e.text, e.width, e.height, e.kind) for e in ds.examples]
    assert got == [
        ("a.png", "hello world", 20, 8, "clean"),
        ("b.png", "Ab1", 30, 10, "captcha"),
        ("c.png", "z", 12, 8, ""),  # not in kinds.tsv: no kind
    ]
    assert ds.labels == [" ", "1", "A", "b", "d", "e", "h", "l", "o", "r", "w", "z"]
    assert ds.num_classes == 12
    assert ds.kind_counts() == {"clean": 1, "captcha": 1, "": 1}
    assert ds.summary()["max_text_length"] == 11 and ds.summary()["max_width"] == 30


def test_reads_a_labels_file_by_path_with_bom_crlf_and_absolute_paths(tmp_path):
    absolute = tmp_path / "elsewhere" / "x.png"
    _png(absolute)
    _png(tmp_path / "data" / "y.png")
    file = _labels(tmp_path / "data", [f"{absolute}\tfirst", "y.png\tsecond"], "gt.txt", "\r\n")
    file.write_bytes(b"\xef\xbb\xbf" + file.read_bytes())
    ds = read_text_lines(file)
    assert [(e.image_path, e.text) for e in ds.examples] == [
        (str(absolute), "first"),
        (str(tmp_path / "data" / "y.png"), "second"),
    ]
    assert ds.problems == [] and ds.format == "tsv"


def test_reads_images_named_by_their_text(tmp_path):
    _png(tmp_path / "hello.png", 16, 8)
    _png(tmp_path / "Good day 2.jpg")
    _png(tmp_path / "hello_2.PNG")
    decomposed = unicodedata.normalize("NFD", "café")
    _png(tmp_path / f"{decomposed}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "ignored.png")
    ds = read_text_lines(tmp_path)
    assert ds.format == "names"
    assert sorted(e.text for e in ds.examples) == ["Good day 2", "café", "hello", "hello_2"]
    hello = next(e for e in ds.examples if e.text == "hello")
    assert (hello.width, hello.height, hello.kind) == (16, 8, "")
    # the decomposed (macOS) name is read in NFC and listed as fixed
    assert _problems(ds) == [("file name", "fixed", "label_fixed")]
    assert "é" in ds.labels and unicodedata.normalize("NFD", "é")[1] not in ds.labels


# ------------------------------------------------------------------------------- bad input
def test_bad_input_policy_lists_every_case_and_keeps_the_rest(tmp_path):
    for name in ("ok", "fix", "dup", "empty", "blank", "tab", "bell", "utf"):
        _png(tmp_path / f"{name}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "zero.png").write_bytes(b"")
    rows = [
        "ok.png\tgood",  # 1 kept
        "fix.png\t  padded  ",  # 2 fixed: surrounding spaces stripped
        "dup.png\tfirst",  # 3 kept
        "dup.png\tsecond",  # 4 duplicate
        "empty.png\t",  # 5 empty text
        "blank.png\t   ",  # 6 empty after stripping
        "no tab here",  # 7 malformed
        "\ttext without image",  # 8 malformed: empty path
        "missing.png\tgone",  # 9 image missing
        "broken.png\tbroken",  # 10 image unreadable
        "zero.png\tzero",  # 11 empty file: unreadable
        "tab.png\ttwo\tcolumns",  # 12 a third column: malformed
        "bell.png\tring\x07",  # 13 control character: malformed
    ]
    file = _labels(tmp_path, rows)
    with file.open("ab") as fh:
        fh.write(b"utf.png\t\xff\xfe bad bytes\n")  # 14 not UTF-8: malformed
    _labels(tmp_path, ["ok.png\tclean", "no kind column"], "kinds.tsv")
    ds = read_text_lines(tmp_path)
    assert [(Path(e.image_path).name, e.text, e.kind) for e in ds.examples] == [
        ("ok.png", "good", "clean"),
        ("fix.png", "padded", ""),
        ("dup.png", "first", ""),
    ]
    assert sorted(_problems(ds)) == sorted([
        ("line 2", "skipped", "malformed"),  # kinds.tsv "no kind column"
        ("line 14", "skipped", "malformed"),  # not UTF-8
        ("line 7", "skipped", "malformed"),
        ("line 8", "skipped", "malformed"),
        ("line 2", "fixed", "label_fixed"),
        ("line 4", "skipped", "duplicate_id"),
        ("line 5", "skipped", "label_empty"),
        ("line 6", "skipped", "label_empty"),
        ("line 9", "skipped", "image_missing"),
        ("line 10", "skipped", "image_unreadable"),
        ("line 11", "skipped", "image_unreadable"),
        ("line 12", "skipped", "malformed"),
        ("line 13", "skipped", "malformed"),
    ])  # fmt: skip
    reasons = {p.item: p.reason for p in ds.problems if p.file == str(file)}
    assert "first at line 3" in reasons["line 4"]
    assert "U+0009" in reasons["line 12"] and "two columns" in reasons["line 12"]
    assert "U+0007" in reasons["line 13"]
    assert "not UTF-8" in reasons["line 14"] and "missing.png" in reasons["line 9"]
    kinds = [p for p in ds.problems if p.file == str(tmp_path / "kinds.tsv")]
    assert [(p.item, p.code) for p in kinds] == [("line 2", "malformed")]
    assert ds.labels == build_charset(["good", "padded", "first"])  # skipped texts add nothing
    out = ds.write_problems(tmp_path / "run" / "problems.csv")
    with out.open() as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["file", "item", "reason", "action", "code"] and len(table) == 14


def test_duplicate_of_a_skipped_line_is_still_a_duplicate(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    _labels(tmp_path, ["a.png\t", "a.png\tlate", "b.png\tb"])
    ds = read_text_lines(tmp_path)
    assert [e.text for e in ds.examples] == ["b"]
    assert _problems(ds) == [("line 1", "skipped", "label_empty"),
                             ("line 2", "skipped", "duplicate_id")]  # fmt: skip


def test_characters_outside_a_given_charset_are_skipped_and_named(tmp_path):
    for name in "abc":
        _png(tmp_path / f"{name}.png")
    _labels(tmp_path, ["a.png\tcab", "b.png\tcat!", "c.png\tba"])
    charset = ["c", "b", "a"]  # the model's order, not sorted
    ds = read_text_lines(tmp_path, charset=charset)
    assert [e.text for e in ds.examples] == ["cab", "ba"]
    assert ds.labels == ["c", "b", "a"]
    (problem,) = ds.problems
    assert (problem.item, problem.action, problem.code) == ("line 2", "skipped",
                                                            "char_outside_charset")  # fmt: skip
    assert "['!', 't']" in problem.reason and "'cat!'" in problem.reason
    assert read_text_lines(tmp_path, charset="cbat!").problems == []  # a string: its characters


def test_on_error_raise_names_the_file_and_line(tmp_path):
    _png(tmp_path / "a.png")
    _labels(tmp_path, ["a.png\tfine", "missing.png\tgone"])
    with pytest.raises(TextLineDataError, match=r"labels\.tsv, line 2: image .*missing\.png"):
        read_text_lines(tmp_path, on_error="raise")


def test_unusable_paths_and_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_text_lines(tmp_path / "nope")
    (tmp_path / "readme.md").write_text("no images")
    with pytest.raises(TextLineDataError, match="labels.tsv .*make_text_lines"):
        read_text_lines(tmp_path)
    _labels(tmp_path, ["a.png\t"])
    with pytest.raises(TextLineDataError, match="No usable text line .*empty text"):
        read_text_lines(tmp_path)
    with pytest.raises(InputValueError, match="on_error.*Received: 'ignore'"):
        read_text_lines(tmp_path, on_error="ignore")
    with pytest.raises(InputValueError, match="repeats .*'a'"):
        read_text_lines(tmp_path, charset=["a", "b", "a"])


# ------------------------------------------------------------------------------- charset
def test_charset_encode_decode_round_trip():
    texts = ["Hello world", "0xFF", "héllo"]
    charset = build_charset(texts)
    assert charset == sorted(set("".join(texts))) and charset[0] == " "
    for text in texts:
        codes = encode_text(text, charset)
        assert codes.dtype == np.int32 and codes.shape == (len(text),)
        assert decode_indices(codes, charset) == text
        targets = encode_text(text, charset, offset=1)
        assert targets.min() >= 1 and (targets - 1 == codes).all()
        padded = np.concatenate([targets, np.zeros(3, np.int32)])  # 0: CTC blank / padding
        assert decode_indices(padded, charset, offset=1) == text
    assert encode_text("", charset).shape == (0,) and decode_indices([], charset) == ""
    assert encode_text("ba", ["a", "b"]).tolist() == [1, 0]


def test_charset_errors_name_the_characters_and_values():
    with pytest.raises(InputValueError, match=r"\['!', 'z'\] outside the charset of 2"):
        encode_text("a!z", ["a", "b"])
    with pytest.raises(InputValueError, match="value 3 past the charset of 2"):
        decode_indices([1, 3], ["a", "b"], offset=1)
    with pytest.raises(InputValueError, match="single characters.*'ab'"):
        check_charset(["ab", "c"])
    with pytest.raises(InputValueError, match="non-empty"):
        check_charset([])
    assert check_charset("ba") == ["b", "a"]


# ------------------------------------------------------------------------------- splits
def _split(root: Path, name: str, texts: list[str]) -> None:
    rows = [f"images/{i}.png\t{t}" for i, t in enumerate(texts)]
    for i in range(len(texts)):
        _png(root / name / "images" / f"{i}.png", 10 + i, 8)
    _labels(root / name, rows)


def test_works_with_the_task_splits_reader(tmp_path):
    from kvision.tasks.splits import read_splits

    _split(tmp_path, "train", ["ab", "ba", "abc", "cab"])
    _split(tmp_path, "val", ["ab", "abz"])  # z is not in the training charset
    _split(tmp_path, "test", ["cc"])
    charset = {}

    def read(path):
        ds = read_text_lines(path, charset=charset.get("train"))
        charset.setdefault("train", ds.labels)
        return ds

    cfg = SimpleNamespace(path=str(tmp_path), test_path=None, val_split=0.0, limit=2,
                          test_limit=None)  # fmt: skip
    splits = read_splits(cfg, read, seed=0, fmt="lines", missing_hint="make one")
    assert splits.labels == ["a", "b", "c"] and splits.num_classes == 3
    assert [e.text for e in splits.train.examples] == ["ab", "ba"]  # limit=2 via replace()
    assert [e.text for e in splits.val.examples] == ["ab"]
    assert [p.code for p in splits.problems] == ["char_outside_charset"]
    assert splits.image_size == (8, 10)
    held = read_splits(replace_cfg(cfg, path=str(tmp_path / "train"), val_split=0.5, limit=None),
                       read_text_lines, seed=1, fmt="lines", missing_hint="")  # fmt: skip
    assert len(held.train.examples) == 2 and len(held.val.examples) == 2
    assert held.test is held.val and held.notes  # no test split: the held-out lines are scored


def replace_cfg(cfg, **changes):
    return SimpleNamespace(**(vars(cfg) | changes))
