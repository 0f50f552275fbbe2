"""A killed compress run resumes at the technique it was in; finished techniques are reused
only after their files are checked, and only for the same model and settings."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")


def _trained_lenet(images, labels):
    """A small LeNet that fits the tiny images (confident outputs: int8 agrees on top-1)."""
    from kvision._keras import keras
    from kvision.compress.finetune import finetune
    from kvision.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("lenet", (28, 28, 1), 4, filters=(4, 8), dense_units=16)
    x = images.astype(np.float32) / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).shuffle(64, seed=0).batch(16)
    finetune(model, ds, epochs=10, learning_rate=5e-3)
    assert np.mean(model.predict(x, verbose=0).argmax(-1) == labels) == 1.0
    return model, x, ds


def _rows(result_or_dict):
    data = result_or_dict if isinstance(result_or_dict, dict) else result_or_dict.to_dict()
    return [(a["name"], a["status"]) for a in data["artifacts"]]


def _layer_rows(data):
    return [
        (r["technique"], [(row["layer"], row["action"], row["reason"]) for row in r["rows"]])
        for r in data["layer_reports"]
    ]


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.tflite"))}


def test_finished_techniques_are_reused_checked_and_keyed(tmp_path, tiny_images):
    from kvision.compress import CompressConfig, compress
    from kvision.compress.resume import technique_settings, technique_store

    model, x, ds = _trained_lenet(*tiny_images)
    y = tiny_images[1]
    cfg = CompressConfig(techniques=["ptq", "qat"], steps_per_epoch=2, verify_samples=16)
    cfg.ptq.variants, cfg.qat.outputs = ["dynamic"], ["int8"]
    run = tmp_path / "c"
    first = compress(model, ds, ds, cfg, run, test=(x, y))
    assert first.resumed == [] and first.errors == {}
    assert {p.name for p in (run / "state").iterdir()} == {"ptq.json", "qat.json"}
    files = _mtimes(run / "tflite")

    # same model, data and settings: both techniques reused, the files not rewritten
    again = compress(model, ds, ds, cfg, run, test=(x, y))
    assert again.resumed == ["ptq", "qat"]
    assert _rows(again) == _rows(first)
    assert [a.metrics["accuracy"] for a in again.artifacts] == [
        a.metrics["accuracy"] for a in first.artifacts
    ]
    assert again.to_dict()["layer_reports"] == first.to_dict()["layer_reports"]
    assert again.wall_time_s["qat"] == first.wall_time_s["qat"]
    assert f"qat {first.wall_time_s['qat']:.0f} s (resumed)" in again.to_markdown()
    mtimes = _mtimes(run / "tflite")
    assert all(mtimes[n] == files[n] for n in files if "float32" not in n)

    # a changed QAT setting redoes QAT only
    cfg.qat.learning_rate = 1e-4
    changed = compress(model, ds, ds, cfg, run, test=(x, y))
    assert changed.resumed == ["ptq"]
    after = _mtimes(run / "tflite")
    assert after["classifier_qat_int8.tflite"] != mtimes["classifier_qat_int8.tflite"]
    assert after["classifier_ptq_dynamic.tflite"] == mtimes["classifier_ptq_dynamic.tflite"]

    # a recorded file that changed on disk is never trusted; other weights match no state
    from kvision.compress._models import contract_of
    from kvision.compress.resume import data_key

    def technique_store_for(model, x_test=x, y_test=y):
        return technique_store(model, run, ds, data_key(x_test, y_test, contract_of(model)))

    settings = technique_settings(cfg, "ptq")
    assert technique_store_for(model).load("ptq", settings) is not None
    # the same test set in another order is the same data; another test set is not
    order = np.random.default_rng(0).permutation(len(x))
    assert technique_store_for(model, x[order], y[order]).load("ptq", settings) is not None
    other = technique_store_for(model, y_test=(y + 1) % 4)
    assert other.load("ptq", settings) is None and "data set" in other.last_reason
    ptq_file = run / "tflite" / "classifier_ptq_dynamic.tflite"
    original = ptq_file.read_bytes()
    ptq_file.write_bytes(original[:-8] + b"tampered")  # same size, other bytes
    store = technique_store_for(model)
    assert store.load("ptq", settings) is None and "changed since" in store.last_reason
    ptq_file.unlink()
    assert store.load("ptq", settings) is None and "missing" in store.last_reason
    ptq_file.write_bytes(original)
    assert store.load("ptq", settings) is not None
    model.get_layer("probabilities").bias.assign_add(np.full(4, 0.01, np.float32))
    store = technique_store_for(model)
    assert store.load("ptq", settings) is None and "another model" in store.last_reason


def _cli(model_path, tiny_npz, out):
    return [
        "compress", "--model", str(model_path), "--out", str(out), "data.dataset=npz",
        f"data.path={tiny_npz}", "data.batch_size=16", "data.val_split=0.25",
        "augment.enabled=false", "compress.techniques=[ptq,qat]",
        "compress.ptq.variants=[dynamic,int8]", "compress.qat.outputs=[int8]",
        "compress.steps_per_epoch=4", "compress.qat.epochs=2", "compress.verify_samples=16",
        "compress.accuracy_floor=100",
    ]  # fmt: skip


def test_killed_compression_resumes_at_the_running_technique(tmp_path, tiny_images, tiny_npz):
    """kill -9 during QAT, after the PTQ files were written; the same command finishes the job
    without redoing PTQ, and reports what an uninterrupted run reports."""
    from kvision.cli import main

    model, _, _ = _trained_lenet(*tiny_images)
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kvision.cli", *_cli(model_path, tiny_npz, out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "state" / "ptq.json").is_file():
        if proc.poll() is not None:
            pytest.fail(
                f"compression ended before it could be killed: {proc.stderr.read()[-2000:]}"
            )
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "state" / "ptq.json").is_file(), "PTQ never finished"
    assert not (out / "state" / "qat.json").exists(), "killed after QAT had finished"
    assert not (out / "compress_report.json").exists()
    ptq_files = {n: t for n, t in _mtimes(out / "tflite").items() if "ptq" in n}
    assert set(ptq_files) == {"classifier_ptq_dynamic.tflite", "classifier_ptq_int8.tflite"}

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "compress: ptq resumed" in rerun.stdout
    assert "compress: qat (" in rerun.stdout  # QAT itself runs (again) from its start
    assert {n: t for n, t in _mtimes(out / "tflite").items() if n in ptq_files} == ptq_files
    resumed = json.loads((out / "compress_report.json").read_text())
    assert resumed["resumed"] == ["ptq"]

    # the same command, never interrupted (in this process)
    clean = tmp_path / "clean"
    assert main(_cli(model_path, tiny_npz, clean)) == 0
    uninterrupted = json.loads((clean / "compress_report.json").read_text())
    assert _rows(resumed) == _rows(uninterrupted)
    assert _layer_rows(resumed) == _layer_rows(uninterrupted)
    assert set(resumed["wall_time_s"]) == set(uninterrupted["wall_time_s"])
    for a, b in zip(resumed["artifacts"], uninterrupted["artifacts"], strict=True):
        if a["name"].startswith("ptq") or a["name"] == "float32":  # deterministic conversions
            assert a["metrics"]["accuracy"] == b["metrics"]["accuracy"], a["name"]
