"""Fast compression tests: configs, schedule maths, distillation loss, reports, errors, floor."""

import os
import sys

import numpy as np
import pytest

from kvision.compress import CompressConfig, PruneConfig
from kvision.compress.artifacts import EXPORTED_BUT_FAILED, apply_accuracy_floor, evaluate_accuracy
from kvision.compress.prune import resolve_schedule
from kvision.export.artifact import Artifact


def test_import_does_not_load_tf_or_tfmot_or_touch_env():
    code = (
        "import os, sys, kvision.compress;"
        "print('tensorflow' in sys.modules, 'tensorflow_model_optimization' in sys.modules,"
        " os.environ.get('TF_USE_LEGACY_KERAS'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["False", "False", "None"], out.stderr[-500:]


def test_tfmot_import_restores_environment(monkeypatch):
    import kvision.compress._tfmot as t

    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    monkeypatch.setattr(t, "_MODULE", None)
    t.tfmot()
    assert "TF_USE_LEGACY_KERAS" not in os.environ


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_sparsity": 1.2}, "target_sparsity"),
        ({"schedule": "cubic"}, "schedule"),
        ({"m_by_n": [4, 2]}, "m_by_n"),
        ({"frequency": 0}, "frequency"),
    ],
)
def test_prune_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_compress_config_names_unknown_fields_and_techniques():
    with pytest.raises(ValueError, match="techniques"):
        CompressConfig(techniques=["prune", "magic"])
    with pytest.raises(ValueError, match="clusterz"):
        CompressConfig(cluster={"clusterz": 4})
    cfg = CompressConfig(prune={"target_sparsity": 0.5})
    assert cfg.prune.target_sparsity == 0.5


@pytest.mark.parametrize("total", [5, 12, 37, 150, 1000])
@pytest.mark.parametrize("end", [0.5, 0.7, 1.0])
def test_schedule_end_is_a_pruning_step_inside_the_run(total, end):
    s = resolve_schedule(PruneConfig(begin=0.0, end=end), total)
    assert 0 <= s.begin_step < s.end_step <= total - 1
    assert (s.end_step - s.begin_step) % s.frequency == 0  # the target is applied at `end`
    assert s.frequency < 100 or total > 1000  # never tfmot's silent default on short runs


def test_schedule_rejects_frequency_longer_than_window():
    with pytest.raises(ValueError, match="frequency"):
        resolve_schedule(PruneConfig(frequency=50), total_steps=20)


def test_distillation_loss_alpha_one_is_hard_cross_entropy():
    import tensorflow as tf

    from kvision.compress.distill import distillation_loss

    rng = np.random.default_rng(0)
    s = rng.dirichlet(np.ones(4), size=8).astype(np.float32)
    t = rng.dirichlet(np.ones(4), size=8).astype(np.float32)
    y = np.arange(8) % 4
    ce = float(tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, s)))
    assert float(distillation_loss(y, t, s, 3.0, 1.0)) == pytest.approx(ce, rel=1e-5)
    # alpha=0: pure soft term, zero when student equals teacher, positive otherwise
    assert float(distillation_loss(y, t, t, 3.0, 0.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(distillation_loss(y, t, s, 3.0, 0.0)) > 0.01


def test_temperature_softens_targets():
    from kvision.compress.distill import soften

    p = np.array([[0.9, 0.05, 0.03, 0.02]], np.float32)
    hot, warm = soften(p, 1.0).numpy(), soften(p, 4.0).numpy()
    np.testing.assert_allclose(hot, p, rtol=1e-4)
    assert warm.max() < hot.max() and warm.min() > hot.min()
    np.testing.assert_allclose(warm.sum(), 1.0, rtol=1e-5)


def _lambda_and_custom_model():
    from kvision._keras import keras

    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 0.5

    inp = keras.Input((28, 28, 1), name="images")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = Scale(name="half")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(4, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out)


def test_layer_report_for_lambda_and_custom_layers():
    from kvision.compress.prune import prune_model
    from kvision.compress.qat import quantize_model

    model = _lambda_and_custom_model()
    qat, report = quantize_model(model)
    assert report.row("conv").action == "quantized"
    assert report.row("double").action == "float" and "Lambda" in report.row("double").reason
    assert report.row("half").action == "float" and "custom layer" in report.row("half").reason
    assert "double" in report.message and "half" in report.message
    assert "| double | Lambda | float |" in report.to_markdown()
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    assert qat.predict(x, verbose=0).shape == (2, 4)

    _, prune_report, _ = prune_model(model, PruneConfig(), total_steps=20)
    assert prune_report.row("conv").action == "pruned"
    assert prune_report.row("half").action == "unchanged"


def test_keras3_model_is_rejected_with_the_reason():
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("keras 3 not installed")
    from kvision.compress.qat import quantize_model

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="tf_keras"):
        quantize_model(model)


def test_accuracy_floor_marks_failed_with_remedy():
    a = Artifact("ptq_int8", "tflite", "x.tflite", 10, 8, "ok", checks={"variant": "int8"})
    a.metrics["accuracy"] = 0.80
    apply_accuracy_floor(a, float_accuracy=0.90, floor_points=1.0, head="probabilities")
    assert a.status == "failed"
    assert a.reason.startswith(EXPORTED_BUT_FAILED)
    for remedy in ("quantization-aware training", "int16x8", "deny_layers=[probabilities]"):
        assert remedy in a.reason
    assert a.metrics["accuracy_drop_points"] == pytest.approx(10.0)

    # the remedy fits how the artifact was made
    pqat = Artifact("pqat_int8", "tflite", "x.tflite", 10, 8, "ok", checks={"variant": "int8"})
    pqat.metrics["accuracy"] = 0.80
    reason = apply_accuracy_floor(pqat, 0.90, 1.0, head="probabilities").reason
    assert "compress.prune.epochs" in reason and "compress.qat.epochs" in reason
    assert "int16x8" not in reason and "techniques: qat" not in reason
    student = Artifact("distill_int8", "tflite", "x.tflite", 1, 1, "ok", checks={"variant": "int8"})
    student.metrics["accuracy"] = 0.80
    reason = apply_accuracy_floor(student, 0.90, 1.0, head="probabilities").reason
    assert "larger student" in reason and "deny_layers" not in reason

    ok = Artifact("ptq_int8", "tflite", "x.tflite", 10, 8, "ok", checks={"variant": "int8"})
    ok.metrics["accuracy"] = 0.895
    assert apply_accuracy_floor(ok, 0.90, 1.0).status == "ok"


def test_missing_file_is_never_ok(tmp_path):
    a = Artifact("ptq_int8", "tflite", tmp_path / "missing.tflite", 0, 0, "ok")
    evaluate_accuracy(a, np.zeros((2, 28, 28, 1), np.float32), np.zeros(2))
    assert a.status == "failed" and a.metrics["accuracy"] is None


def test_is_m_by_n():
    from kvision.compress.sparsity import is_m_by_n

    k = np.ones((3, 3, 8, 4))
    assert not is_m_by_n(k)
    k[:, :, [0, 1, 4, 5], :] = 0
    assert is_m_by_n(k)


def test_lamp_allocation_prunes_big_redundant_layers_harder_and_hits_the_target():
    from kvision.compress.prune import lamp_sparsities

    rng = np.random.default_rng(0)
    kernels = {
        "big": rng.normal(size=20000),
        "mid": rng.normal(size=2000),
        "small": rng.normal(size=100),
    }
    s = lamp_sparsities(kernels, 0.8)
    total = sum(k.size for k in kernels.values())
    assert sum(s[n] * kernels[n].size for n in kernels) / total == pytest.approx(0.8, abs=1e-3)
    assert s["big"] > 0.8 > s["mid"] > s["small"]
    # LAMP scores are invariant to rescaling a layer: the allocation does not change
    scaled = {**kernels, "big": kernels["big"] * 1000.0}
    assert lamp_sparsities(scaled, 0.8) == pytest.approx(s)
    with pytest.raises(ValueError, match="allocation"):
        PruneConfig(allocation="global")


def test_gzip_budget_splits_the_file_into_weights_biases_and_the_floor():
    from pathlib import Path

    from kvision.compress.sparsity import gzip_budget, tflite_weight_stats

    path = Path(__file__).parent.parent / "tflite_models" / "classifier_int8.tflite"
    b = gzip_budget(path)
    stats = tflite_weight_stats(path)
    assert b["weights"] == sum(s["size"] for s in stats)  # int8: one byte per weight
    zeros = sum(round(s["zero_fraction"] * s["size"]) for s in stats)
    assert b["nonzero_weights"] == b["weights"] - zeros
    assert b["repacked_gzip_bytes"] == pytest.approx(b["gzip_bytes"], rel=0.02)
    parts = b["weights_gzip_bytes"] + b["biases_gzip_bytes"] + b["floor_gzip_bytes"]
    assert parts == b["repacked_gzip_bytes"]
    assert b["weights_gzip_bytes"] > b["biases_gzip_bytes"] > 0 and b["floor_gzip_bytes"] > 0
    assert b["per_channel_scales"] > 0  # per-channel int8 weights and biases


def test_loading_a_model_with_unimportable_custom_code_names_the_layers(tmp_path):
    from kvision.compress import load_model_for_compression

    path = tmp_path / "custom.keras"
    model = _lambda_and_custom_model()
    model.save(path)
    with pytest.raises(ValueError) as err:
        load_model_for_compression(path)
    text = str(err.value)
    assert str(path) in text
    assert "custom layer class(es)" in text and "Scale']" in text
    assert "Lambda layer(s) ['double']" in text


def test_a_finished_compression_is_reused_only_for_the_same_checkpoint_and_settings(tmp_path):
    import json
    import os

    from kvision.compress.result import REPORT_FILE, CompressionResult

    ckpt = tmp_path / "best.keras"
    ckpt.write_bytes(b"model")
    tflite = tmp_path / "c" / "m.tflite"
    tflite.parent.mkdir()
    tflite.write_bytes(b"TFL3")
    cfg = CompressConfig(techniques=["ptq"])
    result = CompressionResult(artifacts=[Artifact("ptq_int8", "tflite", tflite, 4, 4, "ok")])
    (tmp_path / "c" / REPORT_FILE).write_text(
        json.dumps({**result.to_dict(), "config": cfg.to_dict()})
    )
    os.utime(ckpt, (1, 1))  # the checkpoint is older than the result
    found = CompressionResult.load_finished(tmp_path / "c", cfg, ckpt)
    assert found is not None and found.artifact("ptq_int8").path == str(tflite)
    qat = CompressConfig(techniques=["qat"])
    assert CompressionResult.load_finished(tmp_path / "c", qat, ckpt) is None  # other settings
    os.utime(ckpt, None)
    os.utime(tmp_path / "c" / REPORT_FILE, (1, 1))
    assert CompressionResult.load_finished(tmp_path / "c", cfg, ckpt) is None  # retrained since
    os.utime(ckpt, (1, 1))
    tflite.unlink()
    assert CompressionResult.load_finished(tmp_path / "c", cfg, ckpt) is None  # a file is gone
