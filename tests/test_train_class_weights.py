"""``train.class_weights``: partial mappings, bad indices and weights, and a real fit with them."""

import numpy as np
import pytest
import tensorflow as tf

from kvision.config import ConfigError, TrainConfig
from kvision.train import class_weights_for, fit

LABELS = np.arange(40) % 4


def test_unlisted_classes_weigh_one():
    assert class_weights_for(LABELS, {0: 5.0}, 4) == {0: 5.0, 1: 1.0, 2: 1.0, 3: 1.0}
    assert class_weights_for(LABELS, {"2": 0.5, 3: 0}, 4) == {0: 1.0, 1: 1.0, 2: 0.5, 3: 0.0}
    assert class_weights_for(LABELS, None, 4) is None


def test_balanced():
    labels = np.array([0, 0, 0, 1])
    assert class_weights_for(labels, "balanced", 2) == pytest.approx({0: 4 / 6, 1: 2.0})
    with pytest.raises(ConfigError, match=r"`train.class_weights`=balanced.*\[2\]"):
        class_weights_for(labels, "balanced", 3)


@pytest.mark.parametrize(
    "setting, match",
    [
        ({4: 1.0}, r"`train.class_weights` names class 4; class indices are integers 0\.\.3"),
        ({-1: 1.0}, r"names class -1"),
        ({"cat": 2.0}, r"names class 'cat'"),
        ({True: 2.0}, r"names class True"),
        ({1.5: 2.0}, r"names class 1.5"),
        ({0: -2.0}, r"`train.class_weights\[0\]` should be a finite number >= 0\. Received: -2.0"),
        ({1: "heavy"}, r"\[1\]` should be a finite number >= 0\. Received: 'heavy'"),
        ({1: float("nan")}, r"Received: nan"),
        ({1: None}, r"Received: None"),
        ({0: 0, 1: 0, 2: 0, 3: 0}, r"weighs every class 0"),
        ("inverse", r"should be null, 'balanced' or a mapping.*Received: 'inverse'"),
        ([1.0, 2.0], r"Received: \[1.0, 2.0\]"),
    ],
)
def test_bad_settings_name_the_field_and_value(setting, match):
    with pytest.raises(ConfigError, match=match):
        class_weights_for(LABELS, setting, 4)


def test_fit_with_a_partial_mapping_trains(tmp_path, tiny_images):
    """The reporter's case: {0: 5.0} on 4 classes went to Keras as-is and ended in a traceback."""
    from kvision.models import build_model

    images, labels = tiny_images
    x = images.astype("float32") / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    model = build_model("lenet", (28, 28, 1), 4, filters=(4, 8), dense_units=8)
    weights = class_weights_for(labels, {0: 5.0}, 4)
    cfg = TrainConfig(epochs=1, label_smoothing=0.0)
    result = fit(model, ds, None, cfg, tmp_path, class_weight=weights, verbose=0)
    assert result.epochs_run == 1 and np.isfinite(result.history["loss"][0])
