"""Embedding models: a registered backbone, global average pooling, a linear projection to
``dim`` and L2 normalisation, with the ``embedding`` task's contract; and the training-only
heads that teach them (an ArcFace margin head, or a plain softmax classifier: the baseline).

    model = build_embedder((28, 28, 1), backbone="compact_mobilenet", dim=128)
    model.output_shape     # {"embedding": (None, 128)}: unit vectors (cosine = dot product)
    trainer = training_model(model, "arcface", num_classes=6)   # for fit only, never exported

The exported model is the embedder alone (images -> unit vector), with builtin ops only: the
normalisation is :class:`L2Normalize`, which TFLite runs as its builtin ``L2_NORMALIZATION``
(float and int8).
"""

from __future__ import annotations

import tensorflow as tf

from kvision._keras import keras
from kvision.backbones import build_backbone
from kvision.errors import InputValueError
from kvision.models.contract import InputContract, attach_contract

layers = keras.layers
EMBEDDING_OUTPUT = "embedding"
LOGITS_OUTPUT = "class_logits"
#: the projection whose (unnormalised) output the softmax baseline classifies
PROJECTION = "embedding_dense"
#: the backbones' classification 1x1 "head" conv is kept: it is the pooled feature's width
_BACKBONE_DEFAULTS: dict = {}


@keras.saving.register_keras_serializable(package="kvision")
class L2Normalize(layers.Layer):
    """``x / max(||x||_2, eps)`` along the last axis (``tf.math.l2_normalize``), float32
    ``[B, D]`` -> ``[B, D]`` unit rows; converts to TFLite's builtin ``L2_NORMALIZATION``."""

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        return tf.math.l2_normalize(x, axis=-1, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def build_embedder(input_shape, backbone: str = "compact_mobilenet", backbone_options=None,
                   dim: int = 128, labels=None, postprocess=None, resize: str = "stretch",
                   name: str | None = None):  # fmt: skip
    """An embedding model with its contract attached.

    Args:
        input_shape: ``(height, width, channels)``.
        backbone: a registered backbone (``kvision.backbones.list_backbones()``).
        backbone_options: its options (e.g. ``{"width": 0.5}``).
        dim: the embedding size ``D`` (default 128).
        labels: class names of the dataset it was trained on (the contract's ``labels``;
            retrieval does not need them).
        postprocess: extra contract post-processing entries (the training / unseen classes).
        resize: the contract's resize (``stretch`` or ``letterbox``).
        name: the model name (default ``embedder_<backbone>``).

    Returns:
        A tf_keras model ``images float32 [B, H, W, C] -> {"embedding": float32 [B, D]}`` of
        unit L2 norm, with ``model.kvision_contract`` (task ``embedding``).

    Raises:
        InputValueError: ``dim < 2``; as :func:`kvision.backbones.build_backbone`.
    """
    if isinstance(dim, bool) or int(dim) != dim or dim < 2:
        raise InputValueError(f"`dim` should be an integer >= 2. Received: dim={dim!r}")
    h, w, c = (int(v) for v in input_shape)
    inputs = keras.Input((h, w, c), name="images")
    options = {**_BACKBONE_DEFAULTS.get(backbone, {}), **(backbone_options or {})}
    features = build_backbone(backbone, inputs, **options)
    deepest = list(features.values())[-1]
    x = layers.GlobalAveragePooling2D(name="embedding_pool")(deepest)
    x = layers.Dense(int(dim), name=PROJECTION)(x)
    embedding = L2Normalize(name=EMBEDDING_OUTPUT)(x)
    model = keras.Model(inputs, {EMBEDDING_OUTPUT: embedding}, name=name or f"embedder_{backbone}")
    contract = InputContract(h, w, c, labels=list(labels or []), task="embedding", resize=resize,
                             postprocess={"dim": int(dim), "normalized": True,
                                          **(postprocess or {})})  # fmt: skip
    return attach_contract(model, contract)


def training_model(embedder, loss: str, num_classes: int, scale: float = 30.0,
                   margin: float = 0.5) -> keras.Model:  # fmt: skip
    """The model ``fit`` trains for an embedder whose loss needs a class head.

    - ``"arcface"``: inputs ``(images, labels int [B])``, output ``{"class_logits": [B,
      num_classes]}`` of :class:`~kvision.tasks.embedding.losses.ArcFaceHead` (``scale``,
      ``margin`` in radians) on the embedding.
    - ``"softmax"``: inputs ``images``, output ``{"class_logits"}`` of a Dense classifier on the
      unnormalised projection (``embedding_dense``): a plain classifier whose penultimate
      features are the embedding, the baseline a Keras user would take.

    The embedder's layers are shared, so training updates it in place; the head is discarded.

    Raises:
        InputValueError: another ``loss`` or ``num_classes < 2``.
    """
    from kvision.tasks.embedding.losses import ArcFaceHead

    if num_classes < 2:
        raise InputValueError(
            f"`{loss}` training needs >= 2 training classes. Received: {num_classes}"
        )
    images = embedder.inputs[0]
    if loss == "arcface":
        labels = keras.Input(shape=(), dtype="int32", name="labels")
        head = ArcFaceHead(num_classes, scale=scale, margin=margin, name="arcface_head")
        logits = head([embedder.outputs[0], labels])
        inputs = [images, labels]
    elif loss == "softmax":
        features = embedder.get_layer(PROJECTION).output
        logits = layers.Dense(num_classes, name="softmax_head")(features)
        inputs = images
    else:
        raise InputValueError(f"`loss` should be arcface or softmax. Received: {loss!r}")
    logits = layers.Activation("linear", dtype="float32", name=LOGITS_OUTPUT)(logits)
    return keras.Model(inputs, {LOGITS_OUTPUT: logits}, name=f"{embedder.name}_{loss}")
