"""Tiny artifacts kvision did not make, generated in code: a two-output "detector" and a
two-input model in every format, a fixed-batch model and a model with a custom op.

``build_zoo(folder)`` returns ``{"paths": {kind: Path}, "x": inputs, "reference": Keras outputs
by name, ...}``. The references are the in-memory tf_keras models' own outputs, computed by
Keras, never by the runtimes under test. :data:`TOLERANCE` states how far each artifact kind
may be from them (measured on these models, with margin; the float16 and int8 kinds quantize
inputs, weights and outputs, so a wrong scale, zero point or dtype lands far outside).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPE = (12, 12, 3)
META = 5
N_CALIBRATION = 32

# max |artifact - keras| per output: absolute ("abs") or as a fraction of that output's range
# over the samples ("range"). Measured on these models: float32 kinds <= 2e-7; float16 (weights
# and I/O) <= 3.3e-4; int8 / uint8 I/O <= 0.0085 of the range (two-input int8: 0.0076).
TOLERANCE = {
    "keras_file": ("abs", 1e-6),
    "saved_model": ("abs", 1e-5),
    "float32": ("abs", 1e-5),
    "onnx": ("abs", 1e-5),
    "float16": ("abs", 2e-3),
    "int8": ("range", 0.03),
    "uint8": ("range", 0.03),
}


def tolerance(kind: str, reference: np.ndarray) -> float:
    """The largest allowed max |diff| for an output of ``kind`` with Keras values ``reference``."""
    how, value = TOLERANCE[kind]
    return value if how == "abs" else value * float(np.ptp(reference))


def _detector():
    from kvision._keras import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(SHAPE, name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    boxes = keras.layers.Dense(4, name="boxes")(h)
    scores = keras.layers.Dense(3, activation="softmax", name="scores")(h)
    return keras.Model(inp, [boxes, scores], name="detector")


def _two_inputs():
    from kvision._keras import keras

    keras.utils.set_random_seed(1)
    image = keras.Input(SHAPE, name="image")
    meta = keras.Input((META,), name="meta")
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    h = keras.layers.Concatenate()([h, keras.layers.Dense(4)(meta)])
    return keras.Model([image, meta], keras.layers.Dense(2, name="value")(h), name="two_in")


def _convert(converter, path: Path, variant: str, calibration=None) -> Path:
    import tensorflow as tf

    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant in ("int8", "uint8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, variant)
        converter.inference_output_type = getattr(tf, variant)
    path.write_bytes(converter.convert())
    return path


def _float16_io(model):
    """A module whose signature takes and returns float16 tensors (cast around ``model``)."""
    import tensorflow as tf

    class Float16IO(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float16, name="image")])
        def serve(self, image):
            boxes, scores = self.model(tf.cast(image, tf.float32), training=False)
            return {"boxes": tf.cast(boxes, tf.float16), "scores": tf.cast(scores, tf.float16)}

    return Float16IO()


def _fixed_batch(model, batch: int):
    import tensorflow as tf

    class Fixed(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([batch, *SHAPE], tf.float32, name="image")])
        def serve(self, image):
            boxes, scores = self.model(image, training=False)
            return {"boxes": boxes, "scores": scores}

    return Fixed()


def _custom_op():
    """A module whose only op (``tf.linalg.det``) has no TFLite builtin kernel."""
    import tensorflow as tf

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="matrix")])
        def serve(self, matrix):
            return {"det": tf.linalg.det(matrix)}

    return Det()


def build_zoo(folder, detector_only: bool = False) -> dict:
    """Write the artifacts under ``folder``; return their paths, inputs and Keras outputs.

    Keys of ``paths``: ``saved_model`` (a model folder with version 1), ``keras``, ``h5``,
    ``hdf5``, ``float32``, ``float16`` (float16 I/O tensors), ``int8`` and ``uint8`` (full
    integer with int8 / uint8 I/O), ``fixed_batch`` (float32, batch 2), ``custom_op``; with
    ``two_in_`` in front, the two-input model's ``saved_model``, ``keras``, ``float32`` and
    ``int8`` (unless ``detector_only``).
    """
    import tensorflow as tf

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.random((6, *SHAPE), dtype=np.float32)
    calib = rng.random((N_CALIBRATION, *SHAPE), dtype=np.float32)
    model = _detector()
    paths = {}
    sm = root / "saved_model" / "detector" / "1"
    tf.saved_model.save(model, str(sm))
    paths["saved_model"] = sm.parent
    for suffix in ("keras", "h5", "hdf5"):
        paths[suffix] = root / f"detector.{suffix}"
        model.save(paths[suffix], save_format="keras" if suffix == "keras" else "h5")

    def representative():
        for i in range(N_CALIBRATION):
            yield [calib[i : i + 1]]

    for variant in ("float32", "int8", "uint8"):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(sm))
        target = root / f"detector_{variant}.tflite"
        paths[variant] = _convert(converter, target, variant, representative)
    f16 = _float16_io(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [f16.serve.get_concrete_function()], f16
    )
    paths["float16"] = _convert(converter, root / "detector_float16.tflite", "float16")
    fixed = _fixed_batch(model, 2)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fixed.serve.get_concrete_function()], fixed
    )
    paths["fixed_batch"] = _convert(converter, root / "detector_b2.tflite", "float32")
    det = _custom_op()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [det.serve.get_concrete_function()], det
    )
    converter.allow_custom_ops = True
    paths["custom_op"] = _convert(converter, root / "custom_op.tflite", "float32")
    boxes, scores = model.predict(x, verbose=0)
    zoo = {
        "paths": paths,
        "x": x,
        "reference": {"boxes": boxes, "scores": scores},
        "model": model,
    }
    if detector_only:
        return zoo
    two = _two_inputs()
    meta = rng.random((len(x), META), dtype=np.float32)
    calib_meta = rng.random((N_CALIBRATION, META), dtype=np.float32)
    sm2 = root / "saved_model" / "two_in" / "1"
    tf.saved_model.save(two, str(sm2))
    paths["two_in_saved_model"] = sm2
    paths["two_in_keras"] = root / "two_in.keras"
    two.save(paths["two_in_keras"])

    def representative2():
        for i in range(N_CALIBRATION):
            yield {"image": calib[i : i + 1], "meta": calib_meta[i : i + 1]}

    for variant in ("float32", "int8"):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(sm2))
        target = root / f"two_in_{variant}.tflite"
        paths[f"two_in_{variant}"] = _convert(converter, target, variant, representative2)
    zoo["two_in_feeds"] = {"image": x, "meta": meta}
    zoo["two_in_reference"] = {"value": two.predict([x, meta], verbose=0)}
    return zoo
