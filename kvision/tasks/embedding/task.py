"""Image embeddings for similarity retrieval: an image -> a unit vector; the nearest stored
vectors are the most similar images.

The head's raw output is ``{"embedding": float32 [B, D]}``, L2-normalised inside the graph (so
the cosine of two embeddings is their dot product); there is nothing to decode but the vector.
Training is metric learning on the classes of the training split (``train.loss``):

- ``triplet`` (default; ``auto``): online-mined triplet loss on P x K batches (FaceNet's
  semi-hard mining; ``{type: triplet, mining: hard | semihard | all, margin: 0.2}``);
- ``arcface``: an additive angular margin head (Deng et al., CVPR 2019) trained with
  cross-entropy, for training only (``{type: arcface, scale: 30, margin: 0.5}``);
- ``softmax``: a plain classifier on the projection, whose penultimate features are the
  embedding: the baseline a Keras user would reach for.

The metric is retrieval on classes never seen in training (``data.unseen_classes``): every test
image queries all the others; recall@1/5/10 and mAP@R (Musgrave et al., "A Metric Learning
Reality Check", ECCV 2020). The primary metric is recall@1.

Parity between the Keras model and an artifact compares embeddings of the same images by cosine
similarity (mean and worst), and the nearest-neighbour structure: the fraction of samples whose
nearest other sample under the artifact is also (within a tie of 0.005 cosine) the nearest
under Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvision._keras import keras
from kvision.errors import InputValueError
from kvision.tasks.base import Parity, StreamingMetric, Task, Tolerance, register_task
from kvision.tasks.embedding.model import EMBEDDING_OUTPUT, LOGITS_OUTPUT

#: ``train.loss`` values, ``auto`` is ``triplet``
LOSSES = ("triplet", "arcface", "softmax")
#: QAT's fine-tuning loss (:meth:`EmbeddingTask.fine_tune_loss`): match the float embeddings
DISTILL = "distill"
_LOSS_OPTIONS = {
    "triplet": {"margin": 0.2, "mining": "semihard"},
    "arcface": {"scale": 30.0, "margin": 0.5},
    "softmax": {},
    DISTILL: {},
}


def loss_spec(train_cfg) -> tuple[str, dict]:
    """``(type, options)`` of ``train.loss`` for an embedding model.

    Accepts ``auto`` (triplet), a name of :data:`LOSSES`, or ``{type: name, option: value}``
    with the options of that loss (triplet: ``margin``, ``mining``; arcface: ``scale``,
    ``margin``).

    Raises:
        InputValueError: another name, or an unknown option (naming ``train.loss``).
    """
    value = getattr(train_cfg, "loss", "auto")
    if value == "auto":
        value = "triplet"
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict) or value.get("type") not in (*LOSSES, DISTILL):
        raise InputValueError(
            f"`train.loss` should be auto, {', '.join(LOSSES)} or {{type: ..., options}} for "
            f"task embedding. Received: loss={value!r}"
        )
    kind = value["type"]
    options = {k: v for k, v in value.items() if k != "type"}
    unknown = sorted(set(options) - set(_LOSS_OPTIONS[kind]))
    if unknown:
        raise InputValueError(
            f"`train.loss` {kind} has no option(s) {unknown}. "
            f"Allowed: {sorted(_LOSS_OPTIONS[kind])}"
        )
    return kind, {**_LOSS_OPTIONS[kind], **options}


@dataclass
class EmbeddingPrediction:
    """One image's embedding: float32 ``[D]``, unit L2 norm (as the model gives it)."""

    vector: np.ndarray


class RetrievalMetric(StreamingMetric):
    """recall@1/5/10 and mAP@R over everything fed (each item queries all the others), via
    :class:`~kvision.tasks.embedding.metrics.StreamingEmbeddings` (which keeps the ``[N, D]``
    embeddings and labels, never the images)."""

    def __init__(self, ks=(1, 5, 10)):
        from kvision.tasks.embedding.metrics import StreamingEmbeddings

        self.inner = StreamingEmbeddings(ks)

    def update(self, outputs, targets) -> None:
        self.inner.update(np.asarray(outputs[EMBEDDING_OUTPUT]), np.asarray(targets))

    def result(self) -> dict:
        return self.inner.result()


#: nearest neighbours whose Keras cosines differ by at most this count as tied
NEIGHBOUR_TIE = 0.005


def neighbour_agreement(reference: np.ndarray, outputs: np.ndarray) -> float:
    """The fraction of samples whose nearest other sample under ``outputs`` is also nearest
    under ``reference`` (unit rows ``[N, D]`` each, N >= 2), where neighbours within
    :data:`NEIGHBOUR_TIE` of the best Keras cosine count as tied (a near-tie may flip)."""
    ref = reference @ reference.T
    out = outputs @ outputs.T
    np.fill_diagonal(ref, -np.inf)
    np.fill_diagonal(out, -np.inf)
    picked = np.argmax(out, axis=1)
    rows = np.arange(len(ref))
    return float(np.mean(ref[rows, picked] >= ref.max(axis=1) - NEIGHBOUR_TIE))


def _triplet_targets(x, y):
    return x, {EMBEDDING_OUTPUT: y}


def _arcface_targets(x, y):
    return (x, y), {LOGITS_OUTPUT: y}


def _softmax_targets(x, y):
    return x, {LOGITS_OUTPUT: y}


@register_task("embedding")
class EmbeddingTask(Task):
    """Image embeddings for retrieval (module docstring)."""

    primary_metric = "recall@1"
    higher_is_better = True
    stages = "kvision.tasks.embedding.stages"
    artifact_name = "embedder"
    output_names = (EMBEDDING_OUTPUT,)
    #: ``min_agreement``: the fraction of samples whose nearest other sample is the same as
    #: under the Keras model; :attr:`min_cosine`: the least mean cosine to Keras' embeddings
    tolerances = {
        "float": Tolerance(max_abs_diff=1e-3, min_agreement=0.99),
        "float16": Tolerance(max_abs_diff=None, min_agreement=0.95),
        "dynamic": Tolerance(max_abs_diff=None, min_agreement=0.85),
        "int8": Tolerance(max_abs_diff=None, min_agreement=0.75),
        "int16x8": Tolerance(max_abs_diff=None, min_agreement=0.85),
    }
    unsupported_variants = {
        "int16x8": "TFLite has no 16x8 kernel for L2_NORMALIZATION, the embedder's last op; "
        "int8 (PTQ or QAT) and float16 are the compressed embedders"
    }
    min_cosine = {"float": 0.9999, "float16": 0.999, "dynamic": 0.99, "int8": 0.97,
                  "int16x8": 0.99}  # fmt: skip

    # -- training ------------------------------------------------------------------------------
    def compile_args(self, train_cfg, num_classes: int) -> dict:
        from kvision.tasks.embedding.losses import TripletLoss

        kind, options = loss_spec(train_cfg)
        if kind == "triplet":
            return {"loss": {EMBEDDING_OUTPUT: TripletLoss(**options)}, "metrics": None}
        if kind == DISTILL:  # keras' CosineSimilarity loss is -cos: minimised at the teacher
            return {"loss": {EMBEDDING_OUTPUT: keras.losses.CosineSimilarity()}, "metrics": None}
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return {"loss": {LOGITS_OUTPUT: loss}, "metrics": {LOGITS_OUTPUT: ["accuracy"]}}

    def monitor(self, has_validation: bool) -> tuple[str, str]:
        return ("val_loss" if has_validation else "loss"), "min"

    def trainer(self, model, train_cfg):
        """The model ``fit`` trains: the embedder under its training-only heads
        (:func:`~kvision.tasks.embedding.model.training_model`: the projection for triplet, a
        class head on the contract's training classes for arcface and softmax)."""
        from kvision.tasks.embedding.model import training_model

        kind, options = loss_spec(train_cfg)
        if kind == DISTILL:
            return model
        if kind == "triplet":
            return training_model(model, "triplet")
        classes = model.kvision_contract.postprocess.get("train_classes") or []
        return training_model(model, kind, len(classes), **options)

    def fine_tune_loss(self, train_cfg):
        """QAT fine-tunes the quantized embedder to give the float model's embeddings
        (``distill``: 1 - cosine to the float embedding of the same augmented image), whatever
        loss trained it: the training-only heads are not carried into QAT, and re-training a
        fresh head (or the triplet loss on an ArcFace-trained space) first undoes what the float
        model learnt (measured: -4.75 points of recall@1 with triplet fine-tuning of an ArcFace
        embedder)."""
        return DISTILL

    def fine_tune_targets(self, dataset, train_cfg, model, teacher):
        """``(images, labels)`` batches -> ``(images, {"embedding": teacher's embeddings})``
        for ``distill``; the training targets otherwise."""
        if loss_spec(train_cfg)[0] != DISTILL:
            return self.training_targets(dataset, train_cfg, model)

        def targets(x, y):
            return x, {EMBEDDING_OUTPUT: teacher(x, training=False)[EMBEDDING_OUTPUT]}

        return dataset.map(targets)

    def training_targets(self, dataset, train_cfg, model):
        """``(images, labels)`` batches -> what the loss of ``train.loss`` takes."""
        kind, _ = loss_spec(train_cfg)
        if kind == DISTILL:
            raise InputValueError(
                "`train.loss` distill needs the float model's embeddings: it is QAT's loss "
                "(fine_tune_targets), not a training loss."
            )
        # named functions, not lambdas: autograph cannot tell several lambdas of one function apart
        return dataset.map({"triplet": _triplet_targets, "arcface": _arcface_targets,
                            "softmax": _softmax_targets}[kind])  # fmt: skip

    # -- outside the graph ---------------------------------------------------------------------
    def decode(self, outputs, contract, image_sizes=None) -> list[EmbeddingPrediction]:
        self.check_outputs(outputs)
        vectors = np.asarray(outputs[EMBEDDING_OUTPUT], np.float32)
        return [EmbeddingPrediction(v) for v in vectors]

    def metric(self, contract) -> RetrievalMetric:
        return RetrievalMetric()

    def parity(self, reference, outputs, variant: str, contract=None, min_agreement=None):
        """Cosine similarity of each artifact embedding to Keras' (mean at least
        :attr:`min_cosine` of the variant kind), the largest raw difference (float variants)
        and the nearest-neighbour agreement among the samples (``min_agreement``)."""
        from kvision.tasks.base import variant_kind
        from kvision.tasks.embedding.metrics import cosine_similarity

        tol = self.tolerance(variant)
        need = tol.min_agreement if min_agreement is None else min_agreement
        self.check_outputs(reference, "the Keras outputs")
        self.check_outputs(outputs, "the artifact's outputs")
        ref = np.asarray(reference[EMBEDDING_OUTPUT], np.float32)
        out = np.asarray(outputs[EMBEDDING_OUTPUT], np.float32)
        if ref.shape != out.shape:
            shape = f"{list(out.shape)} differs from Keras {list(ref.shape)}"
            return Parity(False, {}, [f"{EMBEDDING_OUTPUT}: shape {shape}"])
        if not (np.all(np.isfinite(out)) and np.all(np.isfinite(ref))):
            return Parity(False, {}, [f"{EMBEDDING_OUTPUT}: outputs contain NaN or Inf"])
        norms = np.linalg.norm(out, axis=1)
        if not np.all(norms > 0):
            zeros = int(np.sum(norms == 0))
            return Parity(False, {}, [f"{EMBEDDING_OUTPUT}: {zeros} zero vectors"])
        cos = cosine_similarity(ref, out)
        checks = {"max_abs_diff": float(np.abs(out - ref).max()),
                  "mean_cosine": round(float(cos.mean()), 6),
                  "min_cosine": round(float(cos.min()), 6)}  # fmt: skip
        reasons = []
        if tol.max_abs_diff is not None and not checks["max_abs_diff"] <= tol.max_abs_diff:
            reasons.append(
                f"max |artifact - keras| = {checks['max_abs_diff']:.3g} > atol={tol.max_abs_diff:g}"
            )
        least = self.min_cosine[variant_kind(variant)]
        if not checks["mean_cosine"] >= least:
            reasons.append(f"mean cosine to Keras {checks['mean_cosine']:.4f} < {least:g}")
        if len(ref) >= 2:
            agreement = neighbour_agreement(ref, out / norms[:, None])
            checks["neighbour_agreement"] = round(agreement, 6)
            if agreement < need:
                reasons.append(
                    f"nearest neighbours agree on {agreement:.2%} of samples < required {need:.2%}"
                )
        return Parity(not reasons, checks, reasons)

    def prediction_json(self, prediction, contract) -> dict:
        v = prediction.vector
        return {"embedding": [round(float(a), 6) for a in v], "dim": int(v.shape[0]),
                "norm": round(float(np.linalg.norm(v)), 6)}  # fmt: skip

    def remedy(self, artifact_name: str) -> str:
        if "qat" in artifact_name:
            return "train QAT longer (compress.qat.epochs) or at a lower learning rate"
        return "use QAT (compress.techniques includes qat), or a larger embedding (model.head.dim)"
