"""Config: defaults, YAML round-trip, validated key=value overrides."""

import pytest

from kvision.config import ConfigError, PipelineConfig, load_config, save_config, to_dict


def test_defaults_are_the_main_job():
    cfg = load_config()
    assert cfg.data.dataset == "fashion_mnist"
    assert cfg.model.name == "compact_mobilenet"
    assert cfg.augment.enabled


def test_overrides_are_typed():
    cfg = load_config(
        overrides=[
            "train.epochs=3",
            "train.learning_rate=1e-3",
            "augment.enabled=false",
            "model.options.width=0.5",
            "data.limit=100",
            "export.formats=[tflite]",
        ]
    )
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.augment.enabled is False
    assert cfg.model.options == {"width": 0.5}
    assert cfg.data.limit == 100
    assert cfg.export.formats == ["tflite"]


def test_yaml_round_trip(tmp_path):
    cfg = load_config(overrides=["name=abc", "train.epochs=2", "model.input_size=[32, 32]"])
    path = save_config(cfg, tmp_path / "c.yaml")
    again = load_config(path)
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "Did you mean `train.epochs`"),
        ("trian.epochs=3", "Did you mean `train`"),
        ("train.epochs=three", "`train.epochs` should be a whole number >= 1 or `auto`"),
        ("train.epochs=0", "`train.epochs` should be >= 1"),
        ("augment.enabled=7", "`augment.enabled` should be bool"),
        ("data.dataset=cifar", "`data.dataset` should be one of"),
        ("data.on_error=ignore", "`data.on_error` should be one of skip, raise"),
        ("data.val_split=1.5", "`data.val_split` should be in [0, 1)"),
        ("export.formats=[onnx]", "`export.formats` entries should be in"),
        ("train", "should look like key=value"),
        ("train=3", "`train` is a section"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="Unknown config key `train.epochz`"):
        load_config(unknown)


def test_run_dir():
    cfg = PipelineConfig(name="x", runs_dir="out")
    assert str(cfg.run_dir) == "out/x"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.class_weights={0: 5.0}", {0: 5.0, 1: 1.0, 2: 1.0, 3: 1.0}),
        ('train.class_weights={"3": 2}', {0: 1.0, 1: 1.0, 2: 1.0, 3: 2.0}),
        ("train.class_weights=balanced", {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}),
    ],
)
def test_class_weights_from_an_override(override, expected):
    """YAML gives int keys for {0: 5.0} and str keys for {"3": 2}: both name classes."""
    from kvision.train import class_weights_for

    cfg = load_config(overrides=[override])
    assert class_weights_for([0, 1, 2, 3], cfg.train.class_weights, 4) == expected
