"""The kvision command: help, config, validation errors and a tiny end-to-end pipeline."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kvision.cli import build_parser, main


def test_help_on_every_command(capsys):
    from deploy.cli import add_deploy_commands
    from deploy.cli import main as full_main

    parser = build_parser((add_deploy_commands,))
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) >= {
        "train",
        "evaluate",
        "export",
        "predict",
        "pipeline",
        "config",
        "list",
        "compress",
        "benchmark",
        "serve",
        "convert",
        "inspect",
    }
    assert "benchmark" not in build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit) as exit_:
            full_main([name, "--help"])
        assert exit_.value.code == 0
        assert "usage: kvision" in capsys.readouterr().out


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "train.epochs=3", "model.name=lenet"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "name: lenet" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["config", "train.epoch=3"], "Did you mean `train.epochs`"),
        (["config", "model.nmae=x"], "Did you mean `model.name`"),
        (["config", "missing.yaml"], "Config file not found: missing.yaml"),
        (
            ["train", "data.dataset=npz", "data.path=/nonexistent.npz"],
            "not found: /nonexistent.npz",
        ),
        (
            ["train", "model.name=mobilenet", "data.dataset=npz", "data.path=PLACEHOLDER"],
            "Unknown model `mobilenet`",
        ),
    ],
)
def test_user_errors_are_one_clear_line(args, message, capsys, tiny_npz, tmp_path):
    args = [a.replace("PLACEHOLDER", str(tiny_npz)) for a in args]
    args += [f"runs_dir={tmp_path}"] if args[0] == "train" else []
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bug_is_an_internal_error_with_its_traceback(monkeypatch, capsys):
    """Only user errors are one-liners: an unexpected exception says it is a bug and shows where
    (before, every ValueError/TypeError became a one-line `error:`)."""
    import kvision.config

    def broken(*args, **kwargs):
        raise ValueError("an inconsistency inside kvision")

    monkeypatch.setattr(kvision.config, "load_config", broken)
    assert main(["config", "train.epochs=3"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in broken" in err
    assert err.rstrip().endswith(
        "kvision config: internal error (a bug in kvision, please report it): "
        "ValueError: an inconsistency inside kvision"
    )
    with pytest.raises(ValueError, match="inconsistency"):
        main(["--debug", "config"])


def test_user_errors_are_typed(capsys, tiny_npz, tmp_path):
    """What kvision validates raises a user-error type, so the CLI keeps it to one line."""
    from kvision.errors import UserError, is_user_error
    from kvision.models import build_model

    with pytest.raises(UserError) as info:
        build_model("compact_mobilenet", (28, 28, 1), 4, width=-1)
    assert isinstance(info.value, ValueError) and is_user_error(info.value)
    assert not is_user_error(ValueError("from numpy")) and not is_user_error(KeyError("k"))
    assert is_user_error(FileNotFoundError("x")) and is_user_error(kvision_config_error())
    args = ["train", "data.dataset=npz", f"data.path={tiny_npz}", f"runs_dir={tmp_path}"]
    for i, (override, message) in enumerate([
        ("model.options.width=-1", "`width` should be > 0. Received: width=-1"),
        ("augment.transforms=[twist]", "Unknown transform `twist`"),
        ("train.class_weights={9: 2.0}", "`train.class_weights` names class 9"),
    ]):  # fmt: skip
        assert main([*args, f"name=case{i}", override]) == 2, override
        err = capsys.readouterr().err
        assert f"kvision train: error: {message}" in err and "Traceback" not in err, err


def kvision_config_error():
    from kvision.config import ConfigError

    return ConfigError("bad key")


def _without_log_level():
    import os

    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def test_tensorflow_start_up_lines_only_with_verbose():
    """`kvision list models` imports TensorFlow: by default no start-up line (written from C++
    before TF_CPP_MIN_LOG_LEVEL applies), with --verbose TensorFlow's own log lines."""
    import re

    from kvision._env import STARTUP_NOISE

    absl_line = re.compile(r"^[IWEF]\d{4} ", re.M)
    cmd = [sys.executable, "-m", "deploy.cli", "list", "models"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=_without_log_level())
    assert quiet.returncode == 0, quiet.stderr
    assert "compact_mobilenet" in quiet.stdout
    assert not absl_line.search(quiet.stderr) and not STARTUP_NOISE.search(quiet.stderr), (
        quiet.stderr
    )
    loud = subprocess.run(
        [*cmd[:3], "--verbose", *cmd[3:]], capture_output=True, text=True, env=_without_log_level()
    )
    assert loud.returncode == 0, loud.stderr
    assert absl_line.search(loud.stderr) and STARTUP_NOISE.search(loud.stderr), loud.stderr


def test_quiet_start_up_passes_other_stderr_lines_through(capfd):
    """The filter drops only the known start-up lines: anything else written to fd 2 while
    TensorFlow loads (a real error) still reaches the user, in order."""
    import os

    from kvision._env import filtered_stderr

    with filtered_stderr():
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. ...\n")
        os.write(2, b"E0000 00:00:1.0 1 loader.cc:9] could not load libfoo.so\n")
        os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: x\n")
        os.write(2, b"UserWarning: something\n")
    err = capfd.readouterr().err
    assert (
        err == "E0000 00:00:1.0 1 loader.cc:9] could not load libfoo.so\nUserWarning: something\n"
    )


def test_tiny_train_then_predict_end_to_end(tmp_path, tiny_npz):
    """The fast end-to-end check of the real command: `kvision train`, then `kvision predict`
    with the checkpoint it wrote (the full pipeline test is marked slow)."""
    run = [
        sys.executable, "-m", "deploy.cli", "train", "data.dataset=npz", f"data.path={tiny_npz}",
        "data.batch_size=16", "data.val_split=0.25", f"runs_dir={tmp_path}", "name=t",
        "model.name=lenet", "model.options.filters=[4,8]", "model.options.dense_units=8",
        "train.epochs=1", "augment.enabled=false",
    ]  # fmt: skip
    out = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    checkpoint = tmp_path / "t" / "checkpoints" / "best.keras"
    assert checkpoint.is_file() and "best val accuracy" in out.stdout
    img = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(img)
    cmd = [sys.executable, "-m", "deploy.cli", "predict", "--model", str(checkpoint), str(img)]
    p = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    top = json.loads(p.stdout)[0]["top_k"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"]


def test_list_models(capsys):
    assert main(["list", "models"]) == 0
    assert "compact_mobilenet" in capsys.readouterr().out.split()


@pytest.mark.slow  # 251 s of the file's 340 s (--durations); the fast end-to-end check is
# test_tiny_train_then_predict_end_to_end
def test_tiny_pipeline_end_to_end(tmp_path, tiny_npz):
    """train -> evaluate -> export -> compress -> benchmark -> report, then predict with each
    artifact; a second run reuses the finished training and compression."""
    cmd = [
        sys.executable,
        "-m",
        "kvision.cli",
        "pipeline",
        "data.dataset=npz",
        f"data.path={tiny_npz}",
        "data.batch_size=16",
        "data.val_split=0.25",
        f"runs_dir={tmp_path / 'runs'}",
        "name=tiny",
        "model.options.width=0.25",
        "train.epochs=2",
        "benchmark.runs=5",
        "benchmark.warmup=1",
        "export.verify_samples=16",
        "compress.techniques=[ptq,pqat]",
        "compress.ptq.variants=[int8]",
        "compress.qat.outputs=[int8]",
        "compress.steps_per_epoch=3",
        "compress.prune.epochs=1",
        "compress.qat.epochs=1",
        "compress.verify_samples=16",
        "compress.accuracy_floor=100",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    report = json.loads((run / "report.json").read_text())
    for name in (
        "report.md",
        "report.html",
        "config.yaml",
        "history.csv",
        "metrics.json",
        "confusion_matrix.png",
        "training_curves.png",
        "augment_preview.png",
        "checkpoints/best.keras",
        "checkpoints/contract.json",
    ):
        assert (run / name).is_file(), name
    rows = {a["name"]: a for a in report["artifacts"]}
    assert {"keras", "saved_model", "float32"} <= set(rows)
    keras_acc = report["evaluation"]["accuracy"]
    for name in ("saved_model", "float32"):
        row = rows[name]
        assert row["status"] == "ok", row["reason"]
        assert row["metrics"]["accuracy"] == pytest.approx(keras_acc, abs=1e-9)
        assert row["checks"]["max_abs_diff"] <= 1e-4
        assert row["latency"]["p50_ms"] > 0 and row["size_bytes"] > 0
    markdown = (run / "report.md").read_text().replace("`", "")
    assert "| float32 |" in markdown

    # the compressed variants are rows of the same table, benchmarked like the float ones
    assert [a["name"] for a in report["artifacts"]].count("float32") == 1
    for name in ("ptq_int8", "pqat_int8"):
        row = rows[name]
        assert row["status"] == "ok", row["reason"]
        assert row["checks"]["input_dtype"] == "int8" and not row["checks"]["flex_ops"]
        assert 0 <= row["metrics"]["accuracy"] <= 1 and row["latency"]["p50_ms"] > 0
        assert row["compression"]["gzip_ratio"] > 1
    assert rows["pqat_int8"]["compression"]["technique"] == "pqat"
    sparsity = report["compression"]["weights"]["pqat_int8"]["tflite_sparsity"]
    assert sparsity >= 0.8 - 0.02
    assert rows["pqat_int8"]["compression"]["tflite_sparsity"] == sparsity
    assert report["run"]["wall_time_s"]["compress"] > 0
    assert "## Compression" in markdown and "| pqat_int8 | pqat |" in markdown
    assert "Compression trade-off" in (run / "report.html").read_text()
    assert (run / report["compression"]["report_md"]).is_file()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout and "Compression in" in again.stdout
    rerun = {a["name"]: a for a in json.loads((run / "report.json").read_text())["artifacts"]}
    assert rerun["pqat_int8"]["metrics"]["accuracy"] == rows["pqat_int8"]["metrics"]["accuracy"]

    img = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(img)
    for model in (
        run / rows["float32"]["path"],
        run / rows["saved_model"]["path"],
        run / "checkpoints" / "best.keras",
    ):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "kvision.cli",
                "predict",
                "--model",
                str(model),
                str(img),
                "--top-k",
                "2",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        result = json.loads(p.stdout)
        probs = [t["probability"] for t in result[0]["top_k"]]
        assert len(probs) == 2 and probs[0] >= probs[1]


def test_compress_command_on_a_user_model_file(tmp_path, tiny_npz, capsys):
    """`kvision compress --model FILE` with PTQ: verified artifacts and a per-layer report."""
    from kvision.models import build_model

    model = build_model("lenet", (28, 28, 1), 4)
    path = tmp_path / "user" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    code = main([
        "compress", "--model", str(path), "--out", str(tmp_path / "c"), "data.dataset=npz",
        f"data.path={tiny_npz}", "data.val_split=0.25", "compress.techniques=[ptq]",
        "compress.ptq.variants=[float16,dynamic]", "compress.accuracy_floor=100",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "c" / "compress_report.json").is_file()
    report = json.loads((tmp_path / "c" / "compress_report.json").read_text())
    names = {a["name"]: a for a in report["artifacts"]}
    assert {"ptq_float16", "ptq_dynamic"} <= set(names)
    assert all(a["status"] == "ok" for a in names.values())
    assert "float16" in out


def test_exit_status_separates_floor_misses_from_broken_artifacts(capsys):
    from kvision.cli import _exit_status

    ok = {"name": "float32", "status": "ok", "reason": "", "metrics": {}}
    below = {
        "name": "distill_int8",
        "status": "failed",
        "reason": "exported but failed validation: accuracy 88.59% is 3.72 points below ...",
        "metrics": {"accuracy_drop_points": 3.72},
    }
    broken = {"name": "ptq_int8", "status": "failed", "reason": "ConversionError: x", "metrics": {}}
    assert _exit_status([ok], strict=False) == 0
    assert _exit_status([ok, below], strict=False) == 0
    assert "distill_int8 (3.72 points)" in capsys.readouterr().out
    assert _exit_status([ok, below], strict=True) == 1
    assert _exit_status([ok, broken], strict=False) == 1


def test_compress_imports_the_module_of_a_custom_layer(tmp_path, tiny_npz, monkeypatch, capsys):
    """`--import MODULE` makes a registered custom layer loadable; the per-layer report says it
    stays in float and why."""
    (tmp_path / "kv_user_layers.py").write_text(
        "import tf_keras as keras\n\n\n"
        '@keras.saving.register_keras_serializable(package="kv_test")\n'
        "class Halve(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return x * 0.5\n"
    )
    monkeypatch.chdir(tmp_path)
    code = (
        "import sys; sys.path.insert(0, '.'); import tf_keras as keras; "
        "from kv_user_layers import Halve; "
        "i = keras.Input((28, 28, 1), name='images'); "
        "x = keras.layers.Conv2D(4, 3, activation='relu', name='conv')(i); "
        "x = Halve(name='halve')(x); x = keras.layers.GlobalAveragePooling2D(name='pool')(x); "
        "o = keras.layers.Dense(4, activation='softmax', name='probabilities')(x); "
        "keras.Model(i, o).save('user.keras')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)
    args = [
        "compress", "--model", "user.keras", "--out", "c", "data.dataset=npz",
        f"data.path={tiny_npz}", "data.val_split=0.25", "compress.techniques=[qat]",
        "compress.qat.outputs=[int8_float_io]", "compress.steps_per_epoch=2",
        "compress.accuracy_floor=100", "compress.verify_samples=8",
    ]  # fmt: skip
    assert main(args) == 2
    assert "custom layer class(es) ['kv_user_layers.Halve']" in capsys.readouterr().err
    assert main([*args, "--import", "kv_user_layers"]) == 0
    out = capsys.readouterr().out
    assert "| halve | Halve | float |" in out
    report = json.loads((tmp_path / "c" / "compress_report.json").read_text())
    qat = next(r for r in report["layer_reports"] if r["technique"] == "qat")
    assert {r["layer"]: r["action"] for r in qat["rows"]}["conv"] == "quantized"
