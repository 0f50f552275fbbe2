"""Embedding models: a registered backbone, global average pooling and L2 normalisation, with
the ``embedding`` task's contract; and the training-only heads that teach them: a projection
(the loss's embedding), an ArcFace margin head, or a plain softmax classifier (the baseline).

    model = build_embedder((28, 28, 1), backbone="compact_mobilenet", dim=128)
    model.output_shape     # {"embedding": (None, 256)}: unit vectors (cosine = dot product)
    trainer = training_model(model, "arcface", num_classes=6)   # for fit only, never exported

Where the exported embedding is taken (``embedding``):

- ``pool`` (default): the pooled backbone features; the losses act on a ``dim``-wide projection
  of them that exists only in the training model (a projection head, as SimCLR: Chen et al.,
  ICML 2020). A projection trained on a few classes collapses towards those classes' directions;
  the features under it keep more of what tells classes apart that training never saw
  (measured on Fashion-MNIST's unseen classes in the README: +2 to +5.5 points of recall@1).
  With the ``softmax`` loss this is exactly the baseline a Keras user would take: a classifier
  (pooled features -> Dense) whose penultimate features are the embedding.
- ``projection``: the ``dim``-wide projection itself is exported (smaller vectors).

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
#: the projection layer (in the exported model with ``embedding="projection"``, else only in
#: the training model)
PROJECTION = "embedding_dense"
#: the pooled backbone features
POOL = "embedding_pool"
#: where the exported embedding is taken (module docstring)
EMBEDDING_FROM = ("pool", "projection")
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
                   name: str | None = None, embedding: str = "pool"):  # fmt: skip
    """An embedding model with its contract attached.

    Args:
        input_shape: ``(height, width, channels)``.
        backbone: a registered backbone (``kvision.backbones.list_backbones()``).
        backbone_options: its options (e.g. ``{"width": 0.5}``).
        dim: the projection's width (default 128): the exported embedding size with
            ``embedding="projection"``; the training-only projection head's with ``pool``.
        labels: class names of the dataset it was trained on (the contract's ``labels``;
            retrieval does not need them).
        postprocess: extra contract post-processing entries (the training / unseen classes).
        resize: the contract's resize (``stretch`` or ``letterbox``).
        name: the model name (default ``embedder_<backbone>``).
        embedding: ``pool`` (default) or ``projection`` (module docstring).

    Returns:
        A tf_keras model ``images float32 [B, H, W, C] -> {"embedding": float32 [B, D]}`` of
        unit L2 norm (``D``: the backbone's width for ``pool``, ``dim`` for ``projection``),
        with ``model.kvision_contract`` (task ``embedding``; ``postprocess`` has ``dim`` = D,
        ``projection_dim`` and ``embedding_from``).

    Raises:
        InputValueError: ``dim < 2`` or another ``embedding``; as
            :func:`kvision.backbones.build_backbone`.
    """
    if isinstance(dim, bool) or int(dim) != dim or dim < 2:
        raise InputValueError(f"`dim` should be an integer >= 2. Received: dim={dim!r}")
    if embedding not in EMBEDDING_FROM:
        raise InputValueError(
            f"`model.head.embedding` should be one of {EMBEDDING_FROM}. Received: {embedding!r}"
        )
    h, w, c = (int(v) for v in input_shape)
    inputs = keras.Input((h, w, c), name="images")
    options = {**_BACKBONE_DEFAULTS.get(backbone, {}), **(backbone_options or {})}
    features = build_backbone(backbone, inputs, **options)
    deepest = list(features.values())[-1]
    x = layers.GlobalAveragePooling2D(name=POOL)(deepest)
    if embedding == "projection":
        x = layers.Dense(int(dim), name=PROJECTION)(x)
    out = L2Normalize(name=EMBEDDING_OUTPUT)(x)
    model = keras.Model(inputs, {EMBEDDING_OUTPUT: out}, name=name or f"embedder_{backbone}")
    post = {"dim": int(x.shape[-1]), "projection_dim": int(dim), "embedding_from": embedding,
            "normalized": True, **(postprocess or {})}  # fmt: skip
    contract = InputContract(h, w, c, labels=list(labels or []), task="embedding", resize=resize,
                             postprocess=post)  # fmt: skip
    return attach_contract(model, contract)


def _projection(embedder):
    """The unnormalised projection the losses act on: the embedder's own (``projection``) or a
    training-only Dense of ``projection_dim`` on the pooled features (``pool``)."""
    post = getattr(embedder, "kvision_contract", None)
    post = post.postprocess if post is not None else {}
    if post.get("embedding_from", "projection") == "projection":
        return embedder.get_layer(PROJECTION).output
    dim = int(post.get("projection_dim") or 128)
    return layers.Dense(dim, name=PROJECTION)(embedder.get_layer(POOL).output)


def training_model(embedder, loss: str, num_classes: int = 0, scale: float = 30.0,
                   margin: float = 0.5) -> keras.Model:  # fmt: skip
    """The model ``fit`` trains for an embedder (:func:`build_embedder`).

    - ``"triplet"``: inputs ``images``, output ``{"embedding": [B, projection_dim]}``, the
      L2-normalised projection (for a ``pool`` embedder; a ``projection`` embedder is trained
      as it is: this returns it).
    - ``"arcface"``: inputs ``(images, labels int [B])``, output ``{"class_logits": [B,
      num_classes]}`` of :class:`~kvision.tasks.embedding.losses.ArcFaceHead` (``scale``,
      ``margin`` in radians) on the projection.
    - ``"softmax"``: inputs ``images``, output ``{"class_logits"}`` of a Dense classifier on
      the exported embedding's unnormalised features (the pooled features, or the projection):
      a plain classifier whose penultimate features are the embedding, the baseline a Keras
      user would take.

    The embedder's layers are shared, so training updates it in place; the heads are discarded.

    Raises:
        InputValueError: another ``loss``, or ``num_classes < 2`` for arcface / softmax.
    """
    from kvision.tasks.embedding.losses import ArcFaceHead

    if loss not in ("triplet", "arcface", "softmax"):
        raise InputValueError(f"`loss` should be triplet, arcface or softmax. Received: {loss!r}")
    if loss != "triplet" and num_classes < 2:
        raise InputValueError(
            f"`{loss}` training needs >= 2 training classes. Received: {num_classes}"
        )
    images = embedder.inputs[0]
    post = embedder.kvision_contract.postprocess if hasattr(embedder, "kvision_contract") else {}
    pooled = post.get("embedding_from", "projection") == "pool"
    if loss == "triplet":
        if not pooled:
            return embedder
        out = L2Normalize(name=EMBEDDING_OUTPUT)(_projection(embedder))
        return keras.Model(images, {EMBEDDING_OUTPUT: out}, name=f"{embedder.name}_triplet")
    if loss == "arcface":
        labels = keras.Input(shape=(), dtype="int32", name="labels")
        head = ArcFaceHead(num_classes, scale=scale, margin=margin, name="arcface_head")
        logits = head([_projection(embedder), labels])
        inputs = [images, labels]
    else:
        features = embedder.get_layer(POOL if pooled else PROJECTION).output
        logits = layers.Dense(num_classes, name="softmax_head")(features)
        inputs = images
    logits = layers.Activation("linear", dtype="float32", name=LOGITS_OUTPUT)(logits)
    return keras.Model(inputs, {LOGITS_OUTPUT: logits}, name=f"{embedder.name}_{loss}")
