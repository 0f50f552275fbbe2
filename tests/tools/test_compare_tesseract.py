"""tools/compare_tesseract.py: scores by hand, the split reader with kinds, and (when Debian's
``tesseract-ocr`` is installed) Tesseract reading clear printed words in one process."""

import shutil
from pathlib import Path

import pytest
from conftest import load_tool

REPO = Path(__file__).resolve().parents[2]


tool = load_tool("compare_tesseract")


def _write_split(root: Path, words, kinds) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    folder = root / "test"
    (folder / "images").mkdir(parents=True)
    font = ImageFont.load_default(size=28)
    labels, kind_rows = [], []
    for i, (word, kind) in enumerate(zip(words, kinds, strict=True)):
        image = Image.new("L", (24 * len(word) + 24, 40), 255)
        ImageDraw.Draw(image).text((12, 4), word, fill=0, font=font)
        image.save(folder / "images" / f"{i:03d}.png")
        labels.append(f"images/{i:03d}.png\t{word}")
        kind_rows.append(f"images/{i:03d}.png\t{kind}")
    (folder / "labels.tsv").write_text("\n".join(labels) + "\n")
    (folder / "kinds.tsv").write_text("\n".join(kind_rows) + "\n")
    return folder


def test_scores_overall_and_per_kind_by_hand():
    out = tool.scores(["abcd", "xy", "hello world"], ["abed", "xy", "hello word"],
                      ["clean", "captcha", "clean"])  # fmt: skip
    # clean: 1 substitution in 4 chars + 1 deletion in 11 chars -> 2 / 15
    assert out["clean"]["CER"] == pytest.approx(2 / 15)
    assert out["clean"]["WER"] == pytest.approx(2 / 3)  # "abcd" and "world" wrong, of 3 words
    assert out["captcha"] == {"n": 1, "CER": 0.0, "WER": 0.0, "exact": 1.0}
    assert out["all"]["CER"] == pytest.approx(2 / 17) and out["all"]["exact"] == pytest.approx(
        1 / 3
    )


def test_read_split_keeps_file_order_and_kinds(tmp_path):
    folder = _write_split(tmp_path, ["cat", "dog", "owl"], ["clean", "distorted", "clean"])
    rows = tool.read_split(folder)
    assert [(p.name, t, k) for p, t, k in rows] == [
        ("000.png", "cat", "clean"), ("001.png", "dog", "distorted"), ("002.png", "owl", "clean")
    ]  # fmt: skip
    assert len(tool.read_split(folder, limit=2)) == 2


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")
def test_tesseract_reads_clear_words_and_the_cli_writes_json(tmp_path, capsys):
    words = ["house", "garden", "window", "yellow"]
    folder = _write_split(tmp_path, words, ["clean"] * 4)
    texts, seconds = tool.run_tesseract([p for p, _, _ in tool.read_split(folder)])
    assert len(texts) == 4 and seconds > 0
    assert sum(t == w for t, w in zip(texts, words, strict=True)) >= 3, texts
    out = tmp_path / "compare.json"
    assert tool.main(["--data", str(folder), "--json", str(out)]) == 0
    import json

    report = json.loads(out.read_text())
    assert report["n"] == 4 and report["tesseract"]["scores"]["clean"]["n"] == 4
    assert report["tesseract"]["lines_per_s"] > 0 and report["kvision"] == {}
    assert "tesseract" in capsys.readouterr().out
