"""3D segmentation: a residual 3D U-Net (V-Net-style stages) for volumes, trained on patches,
scored by sliding-window Dice, and converted to TFLite with each variant's fate reported.

The data is the small synthetic nuclei volume the ``stardist`` package ships
(``stardist/data/images/img3d.tif`` + ``mask3d.tif``: 31 x 61 x 57 voxels, 52 nuclei), read with
``tifffile``. The volume is split along y: ``y < 40`` trains (random 16^3 patches with flips),
``y >= 40`` is held out and predicted whole by overlapping 16^3 windows whose softmax
probabilities are averaged. Classes: 0 background, 1 nucleus.

Model (:func:`build_unet3d`; Cicek et al., "3D U-Net", MICCAI 2016; residual stages as V-Net,
Milletari et al., 3DV 2016): per level two 3x3x3 Conv3D + BatchNorm + ReLU with a 1x1x1
projected residual add, a strided 2x2x2 Conv3D down (TFLite has no 3D max-pool builtin),
Conv3DTranspose up, concatenated skips, a 1x1x1
Conv3D to the class logits (``mask_logits`` ``[B, D, H, W, C]``).

TFLite: :func:`convert_variants` tries float32, float16, dynamic-range and full int8 and runs
each file in LiteRT on the held-out volume; a variant that does not convert or run is reported
with the converter's or the interpreter's reason, and one that converts into something else is
failed too, with what the file holds: ``CONV_3D`` and ``CONV_3D_TRANSPOSE`` have float kernels
only in TFLite, so "int8" comes out as a float32 model between QUANTIZE / DEQUANTIZE and
dynamic-range quantization changes nothing (measured in the files' filter dtypes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvision._keras import keras
from kvision.errors import InputValueError

layers = keras.layers
PATCH = 16
SPLIT_Y = 40


def load_nuclei_3d():
    """``(volume float32 [D, H, W] normalized to the 1st..99.8th percentile, labels uint8
    [D, H, W] with 0 background / 1 nucleus)`` from the stardist package."""
    try:
        import stardist
        import tifffile
    except ImportError as exc:
        raise InputValueError(
            f"The 3D nuclei volume needs {exc.name}: pip install 'kvision[segmentation]'"
        ) from None
    folder = Path(stardist.__file__).parent / "data" / "images"
    volume = tifffile.imread(folder / "img3d.tif").astype(np.float32)
    lo, hi = np.percentile(volume, (1.0, 99.8))
    volume = np.clip((volume - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    labels = (tifffile.imread(folder / "mask3d.tif") > 0).astype(np.uint8)
    return volume, labels


def _block(x, filters: int, name: str):
    shortcut = layers.Conv3D(filters, 1, name=f"{name}_proj")(x)
    for i in (1, 2):
        x = layers.Conv3D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        if i == 1:
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def build_unet3d(input_shape=(PATCH, PATCH, PATCH, 1), num_classes: int = 2, width: int = 8,
                 depth: int = 2):  # fmt: skip
    """The residual 3D U-Net (module docstring).

    Args:
        input_shape: ``(depth, height, width, channels)``, sides divisible by ``2**depth``.
        num_classes: classes, background included (default 2).
        width: filters of the first level, doubled per level (default 8).
        depth: down-samplings (default 2).

    Returns:
        A tf_keras model with output ``{"mask_logits": [B, D, H, W, num_classes]}``.

    Raises:
        InputValueError: a side not divisible by ``2**depth``.
    """
    if any(int(s) % 2**depth for s in input_shape[:3]):
        raise InputValueError(
            f"3D U-Net inputs need sides divisible by {2**depth}. Received: {input_shape}"
        )
    inputs = keras.Input(tuple(int(s) for s in input_shape), name="volumes")
    skips, x = [], inputs
    for level in range(depth):
        x = _block(x, width * 2**level, f"enc{level}")
        skips.append(x)
        # strided 2x2x2 convolution down, as V-Net (TFLite has no MAX_POOL_3D builtin)
        x = layers.Conv3D(width * 2 ** (level + 1), 2, strides=2, name=f"enc{level}_down")(x)
    x = _block(x, width * 2**depth, "bottom")
    for level in reversed(range(depth)):
        x = layers.Conv3DTranspose(width * 2**level, 2, strides=2, name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_skip")([x, skips[level]])
        x = _block(x, width * 2**level, f"dec{level}")
    out = layers.Conv3D(num_classes, 1, name="mask_logits")(x)
    return keras.Model(inputs, {"mask_logits": out}, name="unet3d")


def _patches(volume, labels, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    d, h, w = volume.shape
    xs, ys = [], []
    for _ in range(n):
        z, y, x = (int(rng.integers(0, s - PATCH + 1)) for s in (d, h, w))
        v = volume[z : z + PATCH, y : y + PATCH, x : x + PATCH]
        m = labels[z : z + PATCH, y : y + PATCH, x : x + PATCH]
        for axis in range(3):  # mirror symmetry holds for nuclei in every axis
            if rng.random() < 0.5:
                v, m = np.flip(v, axis), np.flip(m, axis)
        xs.append(v[..., None])
        ys.append(m)
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int32)


def sliding_window(run, volume: np.ndarray, num_classes: int = 2, stride: int = PATCH // 2):
    """Class probabilities ``[D, H, W, C]`` of a whole volume from overlapping ``PATCH``^3
    windows (``run(x) -> {"mask_logits": [B, P, P, P, C]}``), softmax averaged where windows
    overlap. The volume's sides must be at least ``PATCH``."""
    shape = volume.shape
    starts = [sorted({*range(0, s - PATCH + 1, stride), s - PATCH}) for s in shape]
    probs = np.zeros((*shape, num_classes), np.float64)
    count = np.zeros(shape, np.float64)
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                window = np.s_[z : z + PATCH, y : y + PATCH, x : x + PATCH]
                logits = np.asarray(run(volume[window][None, ..., None])["mask_logits"][0])
                e = np.exp(logits - logits.max(-1, keepdims=True))
                probs[window] += e / e.sum(-1, keepdims=True)
                count[window] += 1
    return probs / count[..., None]


def dice(truth, pred) -> float:
    """Foreground Dice ``2|T & P| / (|T| + |P|)`` of two binary volumes (1.0 when both empty)."""
    t, p = np.asarray(truth) > 0, np.asarray(pred) > 0
    total = t.sum() + p.sum()
    return 1.0 if total == 0 else float(2 * (t & p).sum() / total)


@dataclass
class VolumeResult:
    """What :func:`train_and_convert` measured (JSON-ready via ``__dict__``)."""

    keras_dice: float
    train_s: float
    params: int
    variants: list = field(default_factory=list)


def train_volume_model(volume, labels, *, steps: int = 300, batch: int = 8, seed: int = 0,
                       width: int = 8, depth: int = 2, learning_rate: float = 3e-3):  # fmt: skip
    """A :func:`build_unet3d` trained on random patches of the ``y < SPLIT_Y`` part with CE +
    Dice. Returns ``(model, seconds)``."""
    from kvision.tasks.segmentation.losses import build_loss

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_unet3d((PATCH, PATCH, PATCH, 1), 2, width, depth)
    model.compile(keras.optimizers.Adam(learning_rate), loss={"mask_logits": build_loss()})
    train_v, train_l = volume[:, :SPLIT_Y], labels[:, :SPLIT_Y]
    t0 = time.perf_counter()
    x, y = _patches(train_v, train_l, steps * batch, rng)
    model.fit(x, {"mask_logits": y}, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return model, time.perf_counter() - t0


def _not_as_claimed(path, variant: str) -> str | None:
    """Why the file at ``path`` is not the ``variant`` it was converted as (None when it is),
    read from the dtypes of its convolutions' filters and of its tensors."""
    from ai_edge_litert import interpreter as lite

    it = lite.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    filters = [
        np.dtype(tensors[op["inputs"][1]]["dtype"]).name
        for op in it._get_ops_details()
        if op["op_name"] in ("CONV_3D", "CONV_3D_TRANSPOSE")
    ]
    kinds = {np.dtype(t["dtype"]).name for t in tensors.values()}
    if variant == "int8" and any(f != "int8" for f in filters):
        return (
            "not an int8 model: TFLite has float kernels only for CONV_3D and "
            "CONV_3D_TRANSPOSE, so the converter kept them in float32 between QUANTIZE and "
            "DEQUANTIZE (its filters are " + ", ".join(sorted(set(filters))) + ")"
        )
    if variant == "dynamic" and "int8" not in filters:
        return (
            "nothing quantized: dynamic-range quantization has no hybrid CONV_3D kernel, every "
            "weight stayed float32 (the file is the float32 model)"
        )
    if variant == "float16" and "float16" not in kinds:
        return "no float16 tensor in the file"
    return None


def convert_variants(model, out_dir, volume, labels, calibration) -> list[dict]:
    """Convert ``model`` to each TFLite variant and score each file on the held-out volume.

    Returns:
        One dict per variant: ``variant``, ``status`` (``ok`` / ``failed``), ``reason``,
        ``ops``, ``size_bytes``, ``dice`` (None unless it ran), ``max_abs_diff`` against Keras
        on the held-out windows, ``p50_ms`` per 16^3 window.
    """
    import tensorflow as tf

    from kvision.runtime import open_runtime, split_ops, tflite_op_names

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_v, test_l = volume[:, SPLIT_Y:], labels[:, SPLIT_Y:]
    keras_probs = sliding_window(lambda x: {"mask_logits": model(x, training=False)
                                            ["mask_logits"].numpy()}, test_v)  # fmt: skip
    rows = []
    for variant in ("float32", "float16", "dynamic", "int8"):
        row = {"variant": variant, "status": "failed", "reason": "", "ops": [],
               "size_bytes": 0, "dice": None, "max_abs_diff": None, "p50_ms": None}  # fmt: skip
        path = out_dir / f"unet3d_{variant}.tflite"
        try:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if variant != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if variant == "float16":
                converter.target_spec.supported_types = [tf.float16]
            if variant == "int8":
                converter.representative_dataset = lambda: ([c[None]] for c in calibration)
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            path.write_bytes(converter.convert())
            row["size_bytes"] = path.stat().st_size
            row["ops"] = tflite_op_names(path)
            flex, custom = split_ops(row["ops"])
            if flex or custom:
                raise ValueError(f"needs non-builtin ops {flex + custom}")
            claim = _not_as_claimed(path, variant)
            if claim:
                row["reason"] = claim
            rt = open_runtime(path, "litert")
            rt.load()
            probs = sliding_window(rt.run, test_v)
            times = []
            window = test_v[None, :PATCH, :PATCH, :PATCH, None]
            for _ in range(10):
                t = time.perf_counter()
                rt.run(window)
                times.append(1000 * (time.perf_counter() - t))
            rt.close()
            row["p50_ms"] = round(float(np.median(times)), 3)
            row["max_abs_diff"] = float(np.abs(probs - keras_probs).max())
            row["dice"] = dice(test_l, probs.argmax(-1))
            row["status"] = "failed" if claim else "ok"  # it ran, but it is not that variant
        except Exception as exc:  # a variant that cannot convert or run is reported, not hidden
            from kvision.export.artifact import short_reason

            row["reason"] = short_reason(exc)
        rows.append(row)
    return rows
