"""A thinner student initialized from the teacher's most important channels."""

import numpy as np
import pytest

from kvision.compress.student import init_from_teacher
from kvision.models import build_model

SHAPE = (28, 28, 1)


def _randomize(model, seed):
    """Random weights everywhere, BatchNormalization statistics included (an untrained model's
    BN is an identity, which would hide channel mix-ups)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for w, var in zip(layer.get_weights(), layer.weights, strict=True):
            if "moving_variance" in var.name:
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            elif "gamma" in var.name:
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            else:
                new.append(rng.normal(0, 0.3, w.shape).astype(np.float32))
        layer.set_weights(new)
    return model


def _embed(small, big):
    """Put ``small``'s weights into the first channels of ``big``; every other channel is dead
    (zero filters, BatchNormalization that outputs 0), so ``big`` computes what ``small`` does."""
    for s_layer, b_layer in zip(small.layers, big.layers, strict=True):
        new = []
        for s_w, b_w, var in zip(s_layer.get_weights(), b_layer.get_weights(), b_layer.weights,
                                 strict=True):  # fmt: skip
            w = np.ones_like(b_w) if "moving_variance" in var.name else np.zeros_like(b_w)
            w[tuple(slice(0, n) for n in s_w.shape)] = s_w
            new.append(w)
        b_layer.set_weights(new)
    return big


def test_same_width_student_reproduces_the_teacher():
    teacher = _randomize(build_model("compact_mobilenet", SHAPE, 10), 0)
    student = build_model("compact_mobilenet", SHAPE, 10)
    info = init_from_teacher(student, teacher)
    assert info == {"groups": 0, "kept_fraction": 1.0, "layers": info["layers"]}
    x = np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)
    np.testing.assert_array_equal(student.predict(x, verbose=0), teacher.predict(x, verbose=0))


def test_thinner_student_keeps_the_live_channels():
    # a width-1.0 teacher whose extra channels are dead computes exactly a width-0.6 network;
    # initializing a fresh width-0.6 student must find those channels and reproduce it
    small = _randomize(build_model("compact_mobilenet", SHAPE, 10, width=0.6), 2)
    teacher = _embed(small, build_model("compact_mobilenet", SHAPE, 10))
    x = np.random.default_rng(3).random((8, *SHAPE), dtype=np.float32)
    expected = small.predict(x, verbose=0)
    np.testing.assert_allclose(teacher.predict(x, verbose=0), expected, atol=1e-5)

    student = build_model("compact_mobilenet", SHAPE, 10, width=0.6)
    info = init_from_teacher(student, teacher)
    assert info is not None and info["groups"] > 5 and 0.5 < info["kept_fraction"] < 0.8
    np.testing.assert_allclose(student.predict(x, verbose=0), expected, atol=1e-5)
    assert student.count_params() < teacher.count_params() / 2


@pytest.mark.parametrize(
    "student_args",
    [
        ("lenet", {}),  # another architecture
        ("compact_mobilenet", {"width": 0.6, "squeeze_excite": True}),  # other layers
    ],
)
def test_unmappable_students_are_left_alone(student_args):
    teacher = _randomize(build_model("compact_mobilenet", SHAPE, 10), 4)
    name, options = student_args
    student = build_model(name, SHAPE, 10, **options)
    before = [w.copy() for w in student.get_weights()]
    assert init_from_teacher(student, teacher) is None
    for a, b in zip(before, student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_wider_student_is_refused():
    teacher = _randomize(build_model("compact_mobilenet", SHAPE, 10, width=0.6), 5)
    student = build_model("compact_mobilenet", SHAPE, 10)
    assert init_from_teacher(student, teacher) is None


def test_distill_starts_from_the_teacher_and_says_so(tmp_path, tiny_images):
    import tensorflow as tf

    from kvision.compress import compress
    from kvision.compress.config import CompressConfig

    images, labels = tiny_images
    x = images.astype(np.float32) / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    teacher = build_model("compact_mobilenet", SHAPE, 4, width=0.5, dropout=0.0)
    teacher.compile("adam", "sparse_categorical_crossentropy")
    teacher.fit(ds, epochs=2, verbose=0)
    cfg = CompressConfig(techniques=["distill"], self_distill=False)
    cfg.distill.student_options = {"width": 0.35, "dropout": 0.0}
    cfg.distill.epochs = 1
    result = compress(teacher, ds, ds, cfg, tmp_path / "c", test=(x, labels))
    assert result.distill["init"] == "teacher"
    assert result.distill["init_detail"]["groups"] > 0
    assert result.distill["student_params"] < teacher.count_params()
    row = next(a for a in result.artifacts if a.name == "distill_int8")
    assert (tmp_path / "c" / "tflite").is_dir() and row.checks.get("exported", row.ok)

    cfg.distill.init = "random"
    again = compress(teacher, ds, ds, cfg, tmp_path / "r", test=(x, labels))
    assert again.distill["init"] == "random"


def test_a_student_oneDNN_cannot_train_stops_the_run_not_a_row(tmp_path, tiny_images, monkeypatch):
    """The oneDNN refusal is not a failed row: the whole run must start again with oneDNN off
    (the kvision command does that), so compress() raises it, for the student too."""
    import tensorflow as tf

    from kvision import _env
    from kvision.compress import compress
    from kvision.compress.config import CompressConfig
    from kvision.errors import UnsafeTrainingError

    images, labels = tiny_images
    x = images.astype(np.float32) / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    teacher = build_model("lenet", SHAPE, 4, filters=(4, 8), dense_units=16)
    monkeypatch.setattr(_env, "onednn_enabled", lambda: True)
    risky = {"compact_mobilenet": ["stem_conv (Conv2D 1x1, stride 2, 28x28 map)"]}
    monkeypatch.setattr(_env, "onednn_risky_layers", lambda m: risky.get(m.name, []))
    cfg = CompressConfig(techniques=["distill"], self_distill=False)
    with pytest.raises(UnsafeTrainingError, match="distillation student.*stem_conv"):
        compress(teacher, ds, ds, cfg, tmp_path / "c", test=(x, labels))
