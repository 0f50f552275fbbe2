"""Shared test set-up: quiet TensorFlow, no network for albumentations, tiny deterministic data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import importlib.util  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    """The script ``tools/<name>.py`` as a module (``tools/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_bars_npz(path, classes: int = 3, n: int = 96, n_test: int = 24, seed: int = 0):
    """A tiny ``.npz`` classification set (x_train, y_train, x_test, y_test; uint8 16x16x1):
    class ``k`` is a bright bar in row band ``k`` on dark noise."""
    rng = np.random.default_rng(seed)

    def make(count):
        y = rng.integers(0, classes, count)
        x = rng.integers(0, 40, (count, 16, 16, 1)).astype(np.uint8)
        for i, k in enumerate(y):
            x[i, 1 + 3 * k : 3 + 3 * k, 2:14] = 220
        return x, y

    (x, y), (xt, yt) = make(n), make(n_test)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


@pytest.fixture
def tiny_images():
    """64 deterministic 28x28 grayscale uint8 images in 4 classes whose class is learnable."""
    rng = np.random.default_rng(0)
    n, classes = 64, 4
    labels = np.arange(n) % classes
    images = rng.integers(0, 60, size=(n, 28, 28, 1), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, c * 7 : c * 7 + 7, :, 0] = 220  # a bright band whose row encodes the class
    return images, labels.astype(np.int64)


@pytest.fixture
def tiny_npz(tmp_path, tiny_images):
    """The tiny images as an .npz dataset file (x_train/y_train/x_test/y_test)."""
    images, labels = tiny_images
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images[:16], y_test=labels[:16])
    return path


#: the settings of a tiny task-pipeline run (a few steps, 8 samples per check), shared by the
#: detection pipeline test and the conformance test
TINY_SPINE_OVERRIDES = [
    "data.batch_size=8",
    "model.options.width=0.25",
    "compress.ptq.variants=[int8]",
    "compress.qat.epochs=1",
    "compress.qat.outputs=[int8]",
    "compress.steps_per_epoch=2",
    "compress.ptq.calibration_samples=8",
    "compress.qat.calibration_samples=8",
    "compress.verify_samples=8",
    "export.verify_samples=8",
    "benchmark.warmup=1",
]

TINY_DETECTION_LABELS = ["square", "disc"]


def write_tiny_detection_split(root, name: str, n: int, seed: int, size: int = 64) -> None:
    """``root/<name>/{images/*.png, annotations.json}``: coloured squares (class 0) and discs
    (class 1) on noise, 1-2 per image, written as COCO JSON by kvision's writer."""
    from PIL import Image, ImageDraw

    from kvision.tasks.detection.coco_format import write_coco
    from kvision.tasks.detection.example import DetectionDataset, DetectionExample

    rng = np.random.default_rng(seed)
    images = root / name / "images"
    images.mkdir(parents=True)
    examples = []
    for i in range(n):
        canvas = Image.fromarray(rng.integers(0, 80, (size, size, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(canvas)
        boxes, classes = [], []
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.integers(14, 30))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            k = int(rng.integers(0, 2))
            shape = draw.rectangle if k == 0 else draw.ellipse
            shape([x, y, x + side - 1, y + side - 1], fill=(230, 200 * k, 60))
            boxes.append([x, y, x + side, y + side])
            classes.append(k)
        path = images / f"{i:03d}.png"
        canvas.save(path)
        examples.append(
            DetectionExample(str(path), i + 1, size, size, np.array(boxes, "f4"), np.array(classes))
        )
    dataset = DetectionDataset(examples, TINY_DETECTION_LABELS, [1, 2])
    write_coco(dataset, root / name / "annotations.json")


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """A tiny COCO detection set: ``train/`` 24, ``val/`` 8, ``test/`` 8 images of 64x64."""
    root = tmp_path_factory.mktemp("tiny_coco")
    for seed, (name, n) in enumerate((("train", 24), ("val", 8), ("test", 8))):
        write_tiny_detection_split(root, name, n, seed)
    return root


TINY_SEGMENTATION_LABELS = ["background", "square", "disc"]


def write_tiny_segmentation_split(root, name: str, n: int, seed: int, size: int = 32) -> None:
    """``root/<name>/{images,masks,instances}/*.png`` + ``labels.txt``: gray squares (class 1)
    and discs (class 2) on noise, 1-3 per image, a later one covering an earlier one."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder = root / name
    for sub in ("images", "masks", "instances"):
        (folder / sub).mkdir(parents=True)
    (folder / "labels.txt").write_text("\n".join(TINY_SEGMENTATION_LABELS) + "\n")
    for i in range(n):
        image = Image.fromarray(rng.integers(0, 60, (size, size), dtype=np.uint8))
        mask, ids = Image.new("L", (size, size), 0), Image.new("L", (size, size), 0)
        for j in range(int(rng.integers(1, 4))):
            side = int(rng.integers(8, 16))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            k = int(rng.integers(1, 3))
            box = [x, y, x + side - 1, y + side - 1]
            for canvas, value in ((image, 150 + 50 * (k - 1)), (mask, k), (ids, j + 1)):
                draw = ImageDraw.Draw(canvas)
                (draw.rectangle if k == 1 else draw.ellipse)(box, fill=value)
        image.save(folder / "images" / f"{i:03d}.png")
        mask.save(folder / "masks" / f"{i:03d}.png")
        ids.save(folder / "instances" / f"{i:03d}.png")


@pytest.fixture(scope="session")
def tiny_masks(tmp_path_factory):
    """A tiny mask-folder segmentation set: ``train/`` 24, ``val/`` 8, ``test/`` 8 of 32x32."""
    root = tmp_path_factory.mktemp("tiny_masks")
    for seed, (name, n) in enumerate((("train", 24), ("val", 8), ("test", 8))):
        write_tiny_segmentation_split(root, name, n, seed)
    return root


TINY_TEXT_CHARS = "ab01"


def write_tiny_text_split(root, name: str, n: int, seed: int) -> None:
    """``root/<name>/images/*.png`` + ``labels.tsv`` (``images/<file><TAB>text``): 2-5 random
    characters of ``TINY_TEXT_CHARS`` drawn in black on light gray, 32 px high."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "images").mkdir(parents=True)
    font = ImageFont.load_default(size=22)
    rows = []
    for i in range(n):
        text = "".join(rng.choice(list(TINY_TEXT_CHARS), int(rng.integers(2, 6))))
        image = Image.new("L", (16 * len(text) + 8, 32), 220)
        ImageDraw.Draw(image).text((4, 4), text, fill=0, font=font)
        image.save(folder / "images" / f"{i:03d}.png")
        rows.append(f"images/{i:03d}.png\t{text}")
    (folder / "labels.tsv").write_text("\n".join(rows) + "\n")
