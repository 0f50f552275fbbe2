"""Augmentation stage: registry, option validation, seeding, tf.data parity, preview, benchmark."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from kvision.augment import build_augmenter, get_transform, list_transforms, write_preview
from kvision.augment.preview import preview_size

REPO = Path(__file__).resolve().parents[1]

# Parity tolerances (max absolute difference, images in [0, 1]).
TOLERANCES = {
    # graph-mode kernels (projective transform) differ from eager by ~1e-6
    "tf.data vs eager, deterministic settings, parallel map": 1e-5,
    "tf.data vs eager, random settings, same seed, sequential map": 1e-5,
    "to_config round trip, same seed": 0.0,
}

# Options that make each transform change every batch visibly (p=1 is added to all).
STRONG = {
    "rotate": {"factor": [0.1, 0.2]},
    "zoom": {"factor": [0.2, 0.3]},
    "translate": {"factor": [0.2, 0.3]},
    "contrast": {"factor": [0.5, 0.0]},
    "brightness": {"factor": [0.2, 0.3]},
    "noise": {"std": [0.1, 0.2]},
    "erase": {"min_area": 0.1, "max_area": 0.3},
    "cutout": {"holes": 2, "size": 0.25},
    "blur": {"sigma": [1.0, 2.0]},
    "gamma": {"gamma": [0.4, 0.5]},
}
BUILTIN = {
    "flip",
    "rotate",
    "zoom",
    "translate",
    "contrast",
    "brightness",
    "noise",
    "erase",
    "cutout",
    "blur",
    "gamma",
}


def _batch(channels, n=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, size=(n, size, size, channels)).astype(np.float32)


def _run(specs, x, seed=0):
    images, _ = build_augmenter(specs, seed=seed)(tf.constant(x), tf.zeros((len(x),), tf.int64))
    return images


def test_list_transforms_has_the_builtins_sorted():
    names = list_transforms()
    assert names == sorted(names)
    assert BUILTIN <= set(names)
    for name in names:
        assert get_transform(name).name == name


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_transforms())
def test_every_transform_keeps_shape_dtype_range_and_changes_images(name, channels):
    x = _batch(channels)
    spec = {"name": name, "p": 1.0, **STRONG.get(name, {})}
    y = _run([spec], x, seed=1)
    assert y.shape == x.shape
    assert y.dtype == tf.float32
    y = y.numpy()
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.abs(y - x).max() > 0.01, f"{name} did not change the images"


def test_static_shape_is_kept_inside_tf_data():
    aug = build_augmenter(["flip", "rotate", {"name": "erase", "p": 1.0}], seed=0)
    ds = (
        tf.data.Dataset.from_tensor_slices((_batch(1, n=8), np.arange(8)))
        .batch(4, drop_remainder=True)
        .map(aug)
    )
    assert ds.element_spec[0].shape.as_list() == [4, 16, 16, 1]
    assert ds.element_spec[0].dtype == tf.float32
    images, labels = next(iter(ds))
    np.testing.assert_array_equal(labels.numpy(), [0, 1, 2, 3])  # labels pass through
    assert images.shape == (4, 16, 16, 1)


@pytest.mark.parametrize("mode,axes", [("horizontal", (2,)), ("vertical", (1,)), ("both", (1, 2))])
def test_flip_with_p1_is_an_exact_mirror(mode, axes):
    x = _batch(3)
    y = _run([{"name": "flip", "mode": mode, "p": 1.0}], x).numpy()
    np.testing.assert_array_equal(y, np.flip(x, axis=axes))
    np.testing.assert_array_equal(_run([{"name": "flip", "p": 0.0}], x).numpy(), x)


def test_flip_default_p_flips_some_images_not_all():
    x = _batch(1, n=64)
    y = _run(["flip"], x, seed=3).numpy()
    flipped = [np.array_equal(y[i], x[i, :, ::-1]) for i in range(len(x))]
    kept = [np.array_equal(y[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54  # p = 0.5


@pytest.mark.parametrize("name", ["rotate", "noise", "erase"])
def test_p_chooses_images_independently(name):
    x = _batch(1, n=32)
    y = _run([{"name": name, "p": 0.5, **STRONG.get(name, {})}], x, seed=2).numpy()
    unchanged = sum(np.array_equal(y[i], x[i]) for i in range(len(x)))
    assert 4 <= unchanged <= 28
    assert np.array_equal(_run([{"name": name, "p": 0.0}], x).numpy(), x)


@pytest.mark.parametrize(
    "name,options,pattern",
    [
        ("rotate", {"factor": 1.5}, r"`factor` should be .*Received: factor=1.5"),
        ("translate", {"factor": [0.2, 0.1]}, r"`factor` should be .*min <= max"),
        (
            "flip",
            {"mode": "diagonal"},
            r"`mode` should be one of \['horizontal', 'vertical', 'both'\]",
        ),
        ("erase", {"p": 2}, r"`p` should be a number between 0 and 1. Received: p=2"),
        ("erase", {"min_area": 0.5, "max_area": 0.2}, r"`min_area` should be at most max_area"),
        ("erase", {"fill": "blue"}, r"`fill` should be"),
        ("blur", {"kernel": 4}, r"`kernel` should be odd"),
        ("noise", {"std": "big"}, r"`std` should be"),
        ("cutout", {"holes": 0}, r"`holes` should be"),
        ("contrast", {"factor": -0.1}, r"`factor` should be"),
        ("brightness", {"p": True}, r"`p` should be"),
        ("zoom", {"fill_mode": "mirror"}, r"`fill_mode` should be one of"),
    ],
)
def test_bad_option_values_name_the_option(name, options, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        build_augmenter([{"name": name, **options}])
    assert f"`{name}`" in str(info.value)


def test_unknown_option_names_it_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['angle'\]") as info:
        build_augmenter([{"name": "rotate", "angle": 10}])
    assert "factor" in str(info.value) and "Allowed" in str(info.value)


def test_unknown_transform_suggests_a_name():
    with pytest.raises(ValueError, match=r"Unknown transform `rotat`. Did you mean `rotate`\?"):
        build_augmenter(["rotat"])


@pytest.mark.parametrize(
    "specs,seed,pattern",
    [
        ("flip", 0, r"`specs` should be a list"),
        ([{"factor": 0.1}], 0, r"`specs\[0\]` should be a transform name or a dict"),
        (["flip"], -1, r"`seed` should be a non-negative integer"),
    ],
)
def test_bad_specs_and_seed(specs, seed, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_augmenter(specs, seed=seed)


@pytest.mark.parametrize(
    "images,pattern",
    [
        (np.zeros((2, 8, 8, 1), np.uint8), r"float32.*Received: images.dtype=uint8"),
        (np.zeros((8, 8, 1), np.float32), r"\(B, H, W, C\)"),
        (np.zeros((2, 8, 8, 2), np.float32), r"C = 1 or 3"),
    ],
)
def test_augmenter_rejects_bad_batches(images, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_augmenter(["flip"])(images, None)


RANDOM_SPECS = [
    "flip",
    "rotate",
    "translate",
    {"name": "contrast", "p": 0.5},
    {"name": "noise", "p": 1.0},
    {"name": "erase", "p": 1.0},
]


def test_same_seed_same_output_different_seed_different_output():
    x = _batch(3, n=8)
    a = build_augmenter(RANDOM_SPECS, seed=7)
    b = build_augmenter(RANDOM_SPECS, seed=7)
    first_a, _ = a(x, None)
    first_b, _ = b(x, None)
    np.testing.assert_array_equal(first_a.numpy(), first_b.numpy())
    second_a, _ = a(x, None)  # the generators advance: a new draw on every call
    assert not np.array_equal(second_a.numpy(), first_a.numpy())
    other = _run(RANDOM_SPECS, x, seed=8).numpy()
    assert not np.array_equal(other, first_a.numpy())


def test_albumentations_transforms_are_seeded():
    x = _batch(1, n=8)
    specs = [{"name": n, "p": 1.0} for n in ("noise", "erase", "cutout", "blur", "gamma")]
    np.testing.assert_array_equal(_run(specs, x, seed=4).numpy(), _run(specs, x, seed=4).numpy())
    assert not np.array_equal(_run(specs, x, seed=4).numpy(), _run(specs, x, seed=5).numpy())


def test_tf_data_parity_deterministic_settings_parallel_map():
    specs = [
        {"name": "flip", "mode": "both", "p": 1.0},
        {"name": "rotate", "factor": [0.1, 0.1]},
        {"name": "brightness", "factor": [0.1, 0.1]},
        {"name": "gamma", "gamma": 0.5, "p": 1.0},
    ]
    x = _batch(3, n=16)
    eager = _run(specs, x, seed=0).numpy()
    aug = build_augmenter(specs, seed=123)  # the seed cannot matter for fixed settings
    ds = (
        tf.data.Dataset.from_tensor_slices((x, np.arange(16)))
        .batch(4)
        .map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    piped = np.concatenate([images.numpy() for images, _ in ds])
    tol = TOLERANCES["tf.data vs eager, deterministic settings, parallel map"]
    np.testing.assert_allclose(piped, eager, rtol=0, atol=tol)
    assert np.abs(eager - x).max() > 0.1


def test_tf_data_parity_random_settings_same_seed_sequential_map():
    x = _batch(1, n=16)
    eager_aug = build_augmenter(RANDOM_SPECS, seed=9)
    eager = np.concatenate([eager_aug(x[i : i + 4], None)[0].numpy() for i in range(0, 16, 4)])

    def piped(seed):
        ds = (
            tf.data.Dataset.from_tensor_slices((x, np.arange(16)))
            .batch(4)
            .map(build_augmenter(RANDOM_SPECS, seed=seed))
        )
        return np.concatenate([images.numpy() for images, _ in ds])

    same_seed = piped(9)
    tol = TOLERANCES["tf.data vs eager, random settings, same seed, sequential map"]
    np.testing.assert_allclose(same_seed, eager, rtol=0, atol=tol)
    # the parity is of random draws: every image is changed (noise and erase have p=1) ...
    assert np.abs(eager - x).max(axis=(1, 2, 3)).min() > 0.1
    # ... by settings drawn from the seed: another seed gives other images in tf.data too
    assert np.abs(piped(10) - same_seed).max(axis=(1, 2, 3)).min() > 0.1


def test_config_round_trip_and_serialization():
    aug = build_augmenter(
        [
            "flip",
            {"name": "translate", "factor": [0.05, 0.1]},
            {"name": "erase", "p": 0.25, "max_area": 0.15},
        ],
        seed=2,
    )
    config = aug.to_config()
    assert [c["name"] for c in config] == ["flip", "translate", "erase"]
    assert config[1]["factor"] == [0.05, 0.1] and config[2]["max_area"] == 0.15
    assert config[0]["p"] == 0.5  # defaults are resolved into the config
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    assert json.loads(json.dumps(config)) == config
    again = build_augmenter(config, seed=2)
    assert again.to_config() == config
    x = _batch(1, n=8)
    np.testing.assert_allclose(
        again(x, None)[0].numpy(),
        aug(x, None)[0].numpy(),
        rtol=0,
        atol=TOLERANCES["to_config round trip, same seed"],
    )


def test_preview_png_has_the_expected_size_and_leaves_training_state_alone(tmp_path):
    from PIL import Image

    images = (_batch(1, n=12, size=28) * 255).astype(np.uint8)
    aug = build_augmenter(["flip", {"name": "erase", "p": 0.5}], seed=0)
    path = write_preview(
        images, aug, tmp_path / "sub" / "preview.png", n=10, cols=4, labels=list(range(12))
    )
    assert path == tmp_path / "sub" / "preview.png"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == preview_size(10, 4)
    assert preview_size(10, 4)[0] < preview_size(10, 8)[0]  # wider with more columns
    assert preview_size(10, 4)[1] > preview_size(8, 4)[1]  # taller with more rows
    assert sorted(p.name for p in path.parent.iterdir()) == ["preview.png"]  # no temp files left
    # the augmenter used for training was not advanced by the preview
    x = _batch(1, n=4)
    fresh = build_augmenter(["flip", {"name": "erase", "p": 0.5}], seed=0)
    np.testing.assert_array_equal(aug(x, None)[0].numpy(), fresh(x, None)[0].numpy())


def test_preview_rejects_bad_images(tmp_path):
    aug = build_augmenter(["flip"])
    with pytest.raises(ValueError, match=r"`images` should be"):
        write_preview(np.full((2, 8, 8, 1), 3.0, np.float32), aug, tmp_path / "p.png")
    with pytest.raises(ValueError, match=r"`cols` should be a positive integer"):
        write_preview(np.zeros((2, 8, 8, 1), np.uint8), aug, tmp_path / "p.png", cols=0)


def test_optional_dependencies_are_not_imported_at_module_level():
    for path in (REPO / "kvision" / "augment").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not any(
                    n.split(".")[0] in ("albumentations", "matplotlib", "tf_keras") for n in names
                ), f"{path.name} imports {names} at import time"


@pytest.mark.slow
def test_albumentations_is_imported_lazily():
    code = (
        "import sys, kvision.augment as a; a.list_transforms(); "
        "a.build_augmenter(['flip']); print('albumentations' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def _bench_module():
    from conftest import load_tool

    return load_tool("bench_augment")


def test_bench_core_runs_on_tiny_input(tmp_path, capsys):
    bench = _bench_module()
    images, source = bench.load_images(32, tmp_path / "missing.gz")
    assert source == "random" and images.shape == (32, 28, 28, 1) and images.dtype == np.uint8
    assert "not found" in capsys.readouterr().err
    report = bench.run_benchmark(images, batch=16, repeats=1, source=source, progress=False)
    assert [p["name"] for p in report["pipelines"]] == ["kvision", "keras", "none"]
    for row in report["pipelines"]:
        assert len(row["images_per_s"]) == 1 and row["median_images_per_s"] > 0
    medians = {p["name"]: p["median_images_per_s"] for p in report["pipelines"]}
    assert report["ratio_kvision_over_keras"] == pytest.approx(
        medians["kvision"] / medians["keras"], rel=1e-2
    )
    assert "| kvision |" in bench.format_markdown(report)
    json.dumps(report)


def test_bench_keras_baseline_erases_with_p1():
    bench = _bench_module()
    x = tf.ones((8, 28, 28, 1))  # flips and reflect-filled shifts of it are still all ones
    y, _ = bench.keras_augmenter(seed=0, p=1.0)(x, None)
    assert y.shape == x.shape
    for image in y.numpy()[..., 0]:  # every image has one erased rectangle of 2-15 % area
        rows, cols = np.nonzero(image == 0)
        assert rows.size and rows.size == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert 0.01 <= rows.size / image.size <= 0.2
    kept, _ = bench.keras_augmenter(seed=0, p=0.0)(x, None)
    assert np.all(kept.numpy() == 1.0)  # the zeros are the erasing's, nothing else's


def test_erase_draws_one_rectangle_within_the_area_and_aspect_bounds():
    aug = build_augmenter(
        [{"name": "erase", "p": 1.0, "min_area": 0.05, "max_area": 0.2, "aspect": [0.5, 2.0]}],
        seed=3,
    )
    y, _ = aug(tf.ones((300, 40, 40, 1)), None)
    heights, widths = [], []
    for image in y.numpy()[..., 0]:
        rows, cols = np.nonzero(image == 0)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert rows.size == h * w  # one filled rectangle, nothing else changed
        assert 0.05 * 1600 - 2 * 40 <= rows.size <= 0.2 * 1600 + 2 * 40  # +-1 px rounding a side
        heights.append(h)
        widths.append(w)
    ratio = np.array(heights) / np.array(widths)
    assert 0.5 * 0.75 <= ratio.min() and ratio.max() <= 2.0 / 0.75  # rounding of small sides
    assert ratio.min() < 0.8 and ratio.max() > 1.25  # both orientations are drawn
    noisy, _ = build_augmenter([{"name": "erase", "p": 1.0, "fill": "random"}], seed=0)(
        tf.zeros((4, 28, 28, 1)), None
    )
    assert (noisy.numpy() > 0).sum(axis=(1, 2, 3)).min() > 0  # noise-filled, not zeros
