"""tools/make_text_lines.py: layout, labels, kinds, determinism (captcha included), atomic
output, fonts and words, the CLI.

The tool is loaded by path (``tools/`` is not a package). Tests that render skip when the
Debian fonts, the word list or the captcha package are not installed.
"""

import json
import random
import secrets
from pathlib import Path

import numpy as np
import pytest
from conftest import load_tool

REPO = Path(__file__).resolve().parents[2]
SMALL = {"n_train": 6, "n_val": 6, "n_test": 6}


mtl = load_tool("make_text_lines")


@pytest.fixture(scope="module")
def installed():
    """Skip unless the fonts, the word list and captcha are here."""
    from kvision.errors import InputValueError

    pytest.importorskip("captcha")
    try:
        fonts, _ = mtl.find_fonts()
        mtl.load_words()
    except (InputValueError, FileNotFoundError) as exc:
        pytest.skip(str(exc))
    return fonts


@pytest.fixture(scope="module")
def sets(tmp_path_factory, installed):
    """Seed 0 twice (two folders), seed 1 once: 6 lines per split."""
    root = tmp_path_factory.mktemp("lines")
    summaries = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        summaries[name] = mtl.generate(root / name, seed=seed, preview=3 if name == "a" else 0,
                                       **SMALL)  # fmt: skip
    return root, summaries


def _files(root: Path, skip=()) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def _rows(file: Path) -> list[list[str]]:
    return [line.split("\t") for line in file.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------- the dataset
def test_layout_labels_and_images_match(sets):
    from PIL import Image

    root, _ = sets
    out = root / "a"
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "preview.png", "test",
                                                     "train", "val"]  # fmt: skip
    for split in mtl.SPLITS:
        folder = out / split
        labels, kinds = _rows(folder / "labels.tsv"), _rows(folder / "kinds.tsv")
        images = sorted(p.name for p in (folder / "images").iterdir())
        assert len(labels) == len(images) == 6 and all(len(r) == 2 for r in labels + kinds)
        assert [r[0] for r in labels] == [r[0] for r in kinds] == [f"images/{n}" for n in images]
        for path, text in labels:
            assert text and text == text.strip() and set(text) <= set(mtl.ALPHANUMERIC + " ")
            with Image.open(folder / path) as im:
                assert im.format == "PNG" and im.mode == "L"
                assert im.size[1] == 32 and 2 <= im.size[0] <= 256
                pixels = np.asarray(im)
            assert int(pixels.max()) - int(pixels.min()) > 60  # text visible on its background


def test_each_kind_is_present_and_recorded(sets):
    root, summaries = sets
    info = json.loads((root / "a" / "dataset.json").read_text())
    for split in mtl.SPLITS:
        kinds = [r[1] for r in _rows(root / "a" / split / "kinds.tsv")]
        assert kinds == ["clean", "distorted", "captcha"] * 2
        assert info["splits"][split]["kinds"] == {"clean": 2, "distorted": 2, "captcha": 2}
        assert info["splits"][split]["lines"] == 6
        assert sum(info["splits"][split]["fonts"].values()) == 6
    assert info["generator"] == "tools/make_text_lines.py"
    assert info["params"] | SMALL == info["params"] and info["params"]["seed"] == 0
    for font in info["fonts"]:
        assert font["package"].startswith("fonts-") and Path(font["file"]).is_file()
    assert info["captcha"]["fonts"][0] == "captcha/data/DroidSansMono.ttf"
    train_texts = "".join(r[1] for r in _rows(root / "a" / "train" / "labels.tsv"))
    assert info["charset"] == "".join(sorted(set(train_texts)))
    assert summaries["a"]["out_dir"] == str(root / "a")


def test_same_seed_is_byte_identical_other_seed_differs(sets):
    root, _ = sets
    a, b, c = (_files(root / n, skip={"preview.png"}) for n in "abc")
    assert len(a) == 3 * (6 + 2) + 1 and a == b
    assert a.keys() == c.keys()
    differ = [k for k in a if k.endswith(".png") and a[k] != c[k]]
    assert len(differ) == 18 and a["train/labels.tsv"] != c["train/labels.tsv"]


def test_reader_reads_the_output_with_kinds(sets):
    from kvision.tasks.ocr.data import read_text_lines

    root, _ = sets
    train = read_text_lines(root / "a" / "train")
    assert len(train.examples) == 6 and train.problems == []
    assert train.kind_counts() == {"clean": 2, "distorted": 2, "captcha": 2}
    assert all(ex.height == 32 for ex in train.examples)


def test_word_lines_use_split_disjoint_words(sets):
    words = mtl.split_words(mtl.load_words())
    assert not set(words["train"]) & set(words["test"]) and not set(words["val"]) & set(
        words["test"]
    )
    total = sum(len(w) for w in words.values())
    assert 0.05 < len(words["test"]) / total < 0.15
    rng = np.random.default_rng(0)
    texts = [mtl.sample_text(rng, "clean", words["test"]) for _ in range(200)]
    worded = [t for t in texts if " " in t or t.lower() in {w.lower() for w in words["test"]}]
    assert len(worded) > 80  # about 60 % are words
    for text in worded:
        for word in text.split():
            assert word in words["test"] or word.lower() in words["test"] or word.upper() == word


# ------------------------------------------------------------------------------- captcha
def test_captcha_is_seeded_and_leaves_the_real_module_alone(installed):
    from captcha import image as real

    fonts = mtl.captcha_fonts(installed)

    def draw(seed):
        return mtl.render_captcha("Ab3x", fonts[0], 32, np.random.default_rng(seed))

    assert np.array_equal(draw(5), draw(5))
    assert not np.array_equal(draw(5), draw(6))
    assert draw(5).shape[0] == 32 and draw(5).dtype == np.uint8
    assert real.secrets is secrets  # only the tool's private copy draws from a seeded source
    random.seed(123)
    state = random.getstate()
    draw(1)
    assert random.getstate() == state  # Python's global random stream is not touched


def test_caps_only_font_lines_are_upper_case(installed):
    humor = [f for f in installed if f.name in mtl.CAPS_ONLY]
    if not humor:
        pytest.skip("fonts-humor-sans is not installed")
    words = mtl.load_words()[:2000]
    for i in range(4):
        line = mtl.render_line("train", i, seed=0, kinds=["clean"], fonts=humor, captcha=[],
                               words=words, height=32, max_width=256)  # fmt: skip
        assert line.text == line.text.upper() and line.font == "Humor-Sans"


# ------------------------------------------------------------------------------- output
def test_interrupted_run_leaves_nothing(tmp_path, installed, monkeypatch):
    real = mtl._write_split

    def boom(folder, split, *args):
        if split == "val":
            raise KeyboardInterrupt
        return real(folder, split, *args)

    monkeypatch.setattr(mtl, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        mtl.generate(tmp_path / "set", n_train=2, n_val=1, n_test=1)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_or_replaced(tmp_path, installed):
    small = {"n_train": 1, "n_val": 1, "n_test": 1, "kinds": ["clean"]}
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a dataset of this tool"):
        mtl.generate(tmp_path / "foreign", overwrite=True, **small)
    mtl.generate(tmp_path / "set", **small)
    with pytest.raises(FileExistsError, match="--overwrite"):
        mtl.generate(tmp_path / "set", **small)
    mtl.generate(tmp_path / "set", overwrite=True, seed=1, **small)
    assert json.loads((tmp_path / "set" / "dataset.json").read_text())["params"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "set"]


# ------------------------------------------------------------------------------- inputs
def test_fonts_unknown_or_missing_name_the_apt_package(tmp_path):
    from kvision.errors import InputValueError

    with pytest.raises(InputValueError, match="Unknown font.*'Comic'.*DejaVuSans"):
        mtl.find_fonts(["Comic"])
    with pytest.raises(InputValueError, match="apt-get install fonts-dejavu-core"):
        mtl.find_fonts(["DejaVuSans"], root=tmp_path)
    with pytest.raises(InputValueError, match="No font .*apt-get install .*fonts-breip"):
        mtl.find_fonts(root=tmp_path)
    (tmp_path / "truetype" / "dejavu").mkdir(parents=True)
    (tmp_path / "truetype" / "dejavu" / "DejaVuSansMono.ttf").write_bytes(b"")
    installed, missing = mtl.find_fonts(["mono"], root=tmp_path)
    assert [f.name for f in installed] == ["DejaVuSansMono"]
    assert {m["package"] for m in missing} == {"fonts-liberation2", "fonts-freefont-ttf"}


def test_word_list_keeps_ascii_letter_words(tmp_path):
    words = tmp_path / "words"
    words.write_text("dog's\ncafé\nApple\nzebra\nzebra\nx-ray\nR2D2\n\n", encoding="utf-8")
    assert mtl.load_words(words) == ["Apple", "zebra"]
    with pytest.raises(FileNotFoundError, match="Word list not found"):
        mtl.load_words(tmp_path / "none")


def test_bad_arguments_name_the_value(tmp_path):
    from kvision.errors import InputValueError

    cases = [
        ({"kinds": ["clean", "handwritten"]}, "kinds=.*handwritten"),
        ({"height": 8}, "height=8"),
        ({"max_width": 40}, "max_width=40"),
        ({"n_val": -1}, "n_val=-1"),
        ({"preview": 99}, "preview=99"),
        ({"seed": -2}, "seed=-2"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InputValueError, match=match):
            mtl.generate(tmp_path / "x", **(SMALL | kwargs))
    assert not (tmp_path / "x").exists()


def test_cli_tiny_run_and_user_error(tmp_path, installed, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--n-train", "2", "--n-val", "1", "--n-test", "1", "--kinds",
            "clean,captcha", "--fonts", "serif,DejaVuSansMono"]  # fmt: skip
    assert mtl.main(argv) == 0
    assert "train" in capsys.readouterr().out
    info = json.loads((out / "dataset.json").read_text())
    assert {f["style"] for f in info["fonts"]} == {"serif", "mono"}
    assert info["params"]["kinds"] == ["clean", "captcha"]
    assert mtl.main(["--out", str(tmp_path / "bad"), "--kinds", "nope"]) == 2
    assert "make_text_lines: error: `kinds`" in capsys.readouterr().err
