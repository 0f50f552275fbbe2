"""CRNN for text lines (Shi et al., "An End-to-End Trainable Neural Network for Image-based
Sequence Recognition", TPAMI 2017): a convolutional feature extractor collapsed to a width-wise
sequence, a sequence model, per-timestep class logits for CTC.

    model = build_crnn((32, 256, 1), charset=list("abc..."), sequence="conv")
    model.output_shape    # {"char_logits": (None, 64, len(charset) + 1)}  (index 0: CTC blank)

Feature extractor: four stages of two 3x3 Conv + BatchNorm + ReLU (``width``, 2x, 4x, 4x
filters); 2x2 max-pools after the first two stages and 2x1 (height only) after the last two, so
a 32-px line becomes a 2-row map at a quarter of the width; a 2x1 valid convolution collapses it
to one row: ``T = W / 4`` timesteps.

Sequence model (``sequence``):

- ``"conv"`` (default, edge-friendly): ``depth`` residual blocks of a 1x5 depthwise-separable
  convolution along the width (a receptive field of ~``4 * (4 * depth + 6)`` px), builtin int8
  ops only.
- ``"bilstm"``: ``depth`` bidirectional LSTM layers (``units`` each way), as the paper, unrolled
  over the ``T`` timesteps so that TFLite runs them with builtin ops (a rolled LSTM with a
  dynamic batch keeps TensorList ops that only Flex can run).

Builtin tf_keras layers only; no CTC op in the graph (decoding is :mod:`kvision.tasks.ocr.ctc`).
"""

from __future__ import annotations

from kvision._keras import keras
from kvision.errors import InputValueError
from kvision.models.contract import InputContract, attach_contract

layers = keras.layers
CHAR_OUTPUT = "char_logits"
SEQUENCES = ("conv", "bilstm")


def _conv(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def crnn_features(inputs, width: int = 32):
    """The CRNN feature extractor (module docstring): ``[N, 32, W, C]`` ->
    ``[N, 1, W / 4, 4 * width]``."""
    x = inputs
    for stage, (mult, pool) in enumerate(((1, (2, 2)), (2, (2, 2)), (4, (2, 1)), (4, (2, 1)))):
        x = _conv(x, width * mult, f"s{stage}a")
        x = _conv(x, width * mult, f"s{stage}b")
        x = layers.MaxPooling2D(pool, name=f"s{stage}_pool")(x)
    return layers.Conv2D(width * 4, (int(x.shape[1]), 1), name="collapse")(x)


def build_crnn(input_shape, charset, sequence: str = "conv", width: int = 32, depth: int = 3,
               units: int = 128, name: str | None = None):  # fmt: skip
    """A CRNN with its OCR contract attached.

    Args:
        input_shape: ``(32, width, channels)``: height 32, width divisible by 4.
        charset: the characters (index ``i + 1`` of the logits is ``charset[i]``).
        sequence: ``"conv"`` (default) or ``"bilstm"`` (module docstring).
        width: filters of the first conv stage (default 32).
        depth: sequence blocks / LSTM layers (default 3).
        units: LSTM units each way (default 128).
        name: the model name (default ``crnn_<sequence>``).

    Returns:
        A tf_keras model with output ``{"char_logits": [B, W / 4, len(charset) + 1]}`` and
        ``model.kvision_contract`` (task ``ocr``, letterbox resize: aspect kept, padded).

    Raises:
        InputValueError: a height other than 32, a width not divisible by 4, an empty charset
            or an unknown ``sequence``.
    """
    h, w, c = (int(v) for v in input_shape)
    if h != 32 or w % 4:
        raise InputValueError(
            f"CRNN inputs should be 32 px high with a width divisible by 4. Received: {h}x{w}"
        )
    charset = [str(ch) for ch in charset]
    if not charset or any(len(ch) != 1 for ch in charset) or len(set(charset)) != len(charset):
        raise InputValueError(
            f"`charset` should be distinct single characters. Received: {charset[:20]}"
        )
    if sequence not in SEQUENCES:
        raise InputValueError(
            f"`sequence` should be one of {', '.join(SEQUENCES)}. Received: {sequence!r}"
        )
    inputs = keras.Input((h, w, c), name="images")
    x = crnn_features(inputs, width)  # [N, 1, T, F]
    features = int(x.shape[-1])
    if sequence == "conv":
        for i in range(depth):
            y = layers.DepthwiseConv2D((1, 5), padding="same", use_bias=False, name=f"seq{i}_dw")(x)
            y = layers.BatchNormalization(momentum=0.9, name=f"seq{i}_dw_bn")(y)
            y = layers.ReLU(name=f"seq{i}_dw_relu")(y)
            y = layers.Conv2D(features, 1, use_bias=False, name=f"seq{i}_pw")(y)
            y = layers.BatchNormalization(momentum=0.9, name=f"seq{i}_pw_bn")(y)
            x = layers.ReLU(name=f"seq{i}_out")(layers.Add(name=f"seq{i}_add")([x, y]))
        x = layers.Reshape((w // 4, features), name="sequence")(x)
    else:
        x = layers.Reshape((w // 4, features), name="sequence")(x)
        for i in range(depth):
            # unrolled over the static T timesteps: plain builtin ops in TFLite (a rolled LSTM
            # keeps TensorList ops with a dynamic batch, which only Flex ops can run)
            lstm = layers.LSTM(units, return_sequences=True, unroll=True, name=f"lstm{i}")
            x = layers.Bidirectional(lstm, name=f"bilstm{i}")(x)
    logits = layers.Dense(len(charset) + 1, name=CHAR_OUTPUT)(x)
    model = keras.Model(inputs, {CHAR_OUTPUT: logits}, name=name or f"crnn_{sequence}")
    contract = InputContract(h, w, c, labels=charset, task="ocr", resize="letterbox",
                             postprocess={"sequence": sequence, "decoder": "greedy",
                                          "beam_width": 8})  # fmt: skip
    return attach_contract(model, contract)
