"""Train a tiny model for a few steps, compress it, and check the artifacts and their weights.

Model: LeNet (8/16 filters, 32 units, no batch norm, see the note in the final report about
Dense + BatchNorm under QAT) on 64 28x28 images in 4 learnable classes. Parity tolerances come
from one table, ``kvision.compress.artifacts.PARITY_TOLERANCES``.
"""

import json

import numpy as np
import pytest

from kvision.compress.artifacts import PARITY_TOLERANCES, build_artifact

tf = pytest.importorskip("tensorflow")


def _tiny():
    rng = np.random.default_rng(0)
    n, classes = 64, 4
    labels = np.arange(n) % classes
    images = rng.integers(0, 60, size=(n, 28, 28, 1)).astype(np.float32)
    for i, c in enumerate(labels):
        images[i, c * 7 : c * 7 + 7] = 220
    return images / 255.0, labels.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    x, y = _tiny()
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=0).batch(16)
    return x, y, train


@pytest.fixture(scope="module")
def model(data):
    from kvision._keras import keras
    from kvision.compress.finetune import finetune
    from kvision.models import build_model

    keras.utils.set_random_seed(0)
    x, y, train = data
    m = build_model("lenet", (28, 28, 1), 4, filters=(8, 16), dense_units=32, batch_norm=False)
    finetune(m, train, epochs=6, learning_rate=3e-3)
    assert np.mean(m.predict(x, verbose=0).argmax(-1) == y) == 1.0
    return m


def _check_parity(artifact, variant):
    tol = PARITY_TOLERANCES[variant]
    assert artifact.ok, artifact.reason
    assert artifact.checks["flex_ops"] == [] and artifact.checks["custom_ops"] == []
    assert artifact.checks["max_abs_diff"] <= tol["max_abs_diff"], artifact.checks
    assert artifact.checks["top1_agreement"] >= tol["top1"], artifact.checks


@pytest.fixture(scope="module")
def pruned(model, data):
    from kvision.compress import PruneConfig
    from kvision.compress.finetune import finetune
    from kvision.compress.prune import prune_model, pruning_callbacks, strip

    _, _, train = data
    cfg = PruneConfig(target_sparsity=0.75, epochs=3)
    wrapped, report, schedule = prune_model(model, cfg, total_steps=3 * 4)
    finetune(wrapped, train, epochs=3, learning_rate=1e-3, callbacks=pruning_callbacks())
    return strip(wrapped), report, schedule


def test_pruning_reaches_target_and_survives_pqat_int8(pruned, data, tmp_path):
    from kvision.compress.finetune import finetune
    from kvision.compress.prune import keep_zeros
    from kvision.compress.qat import quantize_model
    from kvision.compress.sparsity import keras_weight_stats, overall_sparsity, tflite_weight_stats

    x, _, train = data
    stripped, report, schedule = pruned
    names = report.names("pruned")
    assert set(names) == {"conv1", "conv2", "fc1", "probabilities"}
    assert schedule.end_step <= schedule.total_steps - 1
    keras_sparsity = overall_sparsity(keras_weight_stats(stripped), names)
    assert keras_sparsity >= 0.75 - 0.01

    pqat, qreport = quantize_model(stripped, scheme="prune_preserve")
    assert qreport.technique == "pqat" and qreport.count("quantized") >= 4
    finetune(pqat, train.repeat(), epochs=1, steps_per_epoch=8, learning_rate=1e-4)
    # fc1 (Dense -> BatchNorm) is left to the converter by tfmot: unmasked, its zeros drift
    assert keep_zeros(pqat, stripped, names) > 0
    assert keep_zeros(pqat, stripped, names) == 0
    art = build_artifact(pqat, tmp_path / "pqat_int8.tflite", "int8", x, x, name="pqat_int8")
    _check_parity(art, "int8")
    assert (art.checks["input_dtype"], art.checks["output_dtype"]) == ("int8", "int8")
    stats = tflite_weight_stats(art.path, [layer.name for layer in stripped.layers], True)
    assert {s["layer"] for s in stats} == set(names)
    assert all(s["dtype"] == "int8" for s in stats)
    # every weight pruned in Keras is still zero in the int8 file (rounding may add a few zeros)
    for s in stats:
        kernel = stripped.get_layer(s["layer"]).kernel.numpy()
        keras_layout = np.moveaxis(kernel, -1, 0)  # [.., in, out] -> TFLite [out, .., in]
        assert keras_layout.shape == s["values"].shape
        assert not s["values"][keras_layout == 0].any(), s["layer"]
    tflite_sparsity = overall_sparsity(stats, names)
    assert keras_sparsity <= tflite_sparsity <= keras_sparsity + 0.05
    assert tflite_sparsity >= 0.75 - 0.02


def test_two_four_structure(model, data):
    from kvision.compress import PruneConfig
    from kvision.compress.finetune import finetune
    from kvision.compress.prune import prune_model, pruning_callbacks, strip
    from kvision.compress.sparsity import is_m_by_n

    _, _, train = data
    wrapped, report, _ = prune_model(model, PruneConfig(m_by_n=[2, 4]), total_steps=4)
    finetune(wrapped, train, epochs=1, callbacks=pruning_callbacks())
    stripped = strip(wrapped)
    # conv1 has 1 input channel: 2:4 along input channels is impossible, reported as such
    assert (
        report.row("conv1").action == "unchanged" and "multiple of 4" in report.row("conv1").reason
    )
    for name in ("conv2", "fc1", "probabilities"):
        kernel = stripped.get_layer(name).kernel.numpy()
        assert is_m_by_n(kernel, 2, 4), name
        assert abs(np.mean(kernel == 0) - 0.5) < 0.01


def test_qat_int8_io_dtypes_and_parity(model, data, tmp_path):
    from kvision.compress.finetune import finetune
    from kvision.compress.qat import quantize_model

    x, y, train = data
    qat, report = quantize_model(model)
    # every layer left in float says why: no weights of its own, or tfmot's NoOp config for a
    # layer followed by a ReLU (its weights train in float; the int8 converter quantizes them)
    for r in report.rows:
        if r.action == "float":
            assert "no weights" in r.reason or "fused with the following ReLU" in r.reason, r
    assert report.count("quantized") >= 1
    finetune(qat, train.repeat(), epochs=1, steps_per_epoch=8, learning_rate=5e-4)
    for variant, io in (("int8", "int8"), ("int8_float_io", "float32")):
        art = build_artifact(qat, tmp_path / f"qat_{variant}.tflite", variant, x, x)
        _check_parity(art, variant)
        assert (art.checks["input_dtype"], art.checks["output_dtype"]) == (io, io)
        assert "QUANTIZE" not in art.checks["ops"] or io == "float32"


def test_clusters_per_layer_survive_strip_and_int8(model, data, tmp_path):
    from kvision.compress import ClusterConfig
    from kvision.compress.cluster import cluster_model, strip
    from kvision.compress.finetune import finetune
    from kvision.compress.sparsity import keras_weight_stats, tflite_weight_stats

    x, _, train = data
    k = 8
    clustered, report = cluster_model(model, ClusterConfig(clusters=k))
    finetune(clustered, train, epochs=1, learning_rate=2e-4)
    stripped = strip(clustered)
    names = report.names("clustered")
    assert names
    stats = keras_weight_stats(stripped)
    assert all(stats[n]["unique_values"] <= k for n in names)
    art = build_artifact(stripped, tmp_path / "cluster_int8.tflite", "int8", x, x)
    _check_parity(art, "int8")
    tfl = [s for s in tflite_weight_stats(art.path, names) if s["layer"] in names]
    assert len(tfl) == len(names)
    assert all(s["max_unique_per_channel"] <= k for s in tfl)


@pytest.mark.parametrize("variant", ["float16", "dynamic", "int8", "int16x8"])
def test_ptq_variants_convert_and_verify(model, data, tmp_path, variant):
    from kvision.compress import PTQConfig
    from kvision.compress.ptq import ptq_artifacts

    x, _, _ = data
    (art,) = ptq_artifacts(model, tmp_path, PTQConfig(variants=[variant]), x, x)
    assert art.name == f"ptq_{variant}"
    _check_parity(art, variant)


def test_deny_list_keeps_layer_in_float(model, data, tmp_path):
    from kvision.compress import PTQConfig
    from kvision.compress.ptq import ptq_artifacts
    from kvision.compress.sparsity import tflite_weight_stats

    x, _, _ = data
    cfg = PTQConfig(variants=["int8_float_io"], deny_layers=["probabilities"])
    (art,) = ptq_artifacts(model, tmp_path, cfg, x, x)
    _check_parity(art, "int8_float_io")
    dtypes = {
        s["layer"]: s["dtype"] for s in tflite_weight_stats(art.path, ["conv1", "probabilities"])
    }
    assert dtypes["probabilities"] == "float32"
    assert dtypes["conv1"] == "int8"
    assert "DEQUANTIZE" in art.checks["ops"]
    from kvision.export.converter import convert_tflite

    with pytest.raises(ValueError, match="unknown layer"):
        convert_tflite(model, tmp_path / "x.tflite", "int8", x, deny_layers=["nope"])
    with pytest.raises(ValueError, match="`variant` with `deny_layers`"):
        convert_tflite(model, tmp_path / "x.tflite", "float16", deny_layers=["probabilities"])
    assert not (tmp_path / "x.tflite").exists()


def test_distiller_trains_student_with_fit(model, data):
    from kvision._keras import keras
    from kvision.compress.distill import Distiller
    from kvision.models import build_model

    x, y, train = data
    student = build_model("lenet", (28, 28, 1), 4, filters=(4,), dense_units=0, batch_norm=False)
    before = student.get_weights()[0].copy()
    teacher_before = [w.copy() for w in model.get_weights()]
    d = Distiller(student, model, temperature=2.0, alpha=0.5)
    d.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = d.fit(train, epochs=2, verbose=0).history
    assert set(history) >= {"loss", "hard_loss", "soft_loss", "accuracy"}
    assert np.isfinite(history["loss"]).all()
    assert not np.allclose(before, student.get_weights()[0])
    assert history["loss"][-1] < history["loss"][0]
    # the teacher is neither updated nor frozen for later use (it is the model being compressed)
    assert model.trainable and all(layer.trainable for layer in model.layers)
    for a, b in zip(teacher_before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_compress_end_to_end_writes_report(model, data, tmp_path):
    from kvision.compress import CompressConfig, compress

    x, y, train = data
    cfg = CompressConfig(techniques=["ptq", "prune"], steps_per_epoch=4)
    cfg.ptq.variants = ["int8"]
    cfg.prune.epochs = 1
    assert cfg.self_distill  # the default: fine-tuning learns from the float model too
    result = compress(model, train, train, cfg, tmp_path, test=(x, y))
    names = [a.name for a in result.artifacts]
    assert names == ["float32", "ptq_int8", "pruned_float32"]
    assert model.trainable  # still trainable for the next technique or the user
    assert set(result.wall_time_s) == {"ptq", "prune", "evaluate"}
    assert all(t >= 0 for t in result.wall_time_s.values())
    assert "Wall time: ptq " in result.to_markdown()
    assert result.artifact("ptq_int8").ok, result.artifact("ptq_int8").reason
    assert result.float_accuracy == 1.0
    data_json = json.loads((tmp_path / "compress_report.json").read_text())
    assert [a["name"] for a in data_json["artifacts"]] == names
    assert data_json["weights"]["pruned_float32"]["tflite_sparsity"] >= 0.8 - 0.02
    assert "prune: per-layer report" in (tmp_path / "compress_report.md").read_text()
