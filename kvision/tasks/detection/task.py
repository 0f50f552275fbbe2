"""The detection :class:`~kvision.tasks.base.Task`: RetinaNet-style head, focal + box loss,
NMS outside the graph, COCO mAP through pycocotools, parity on decoded detections.

The model's raw outputs are ``class_logits`` ``[B, A, C]`` and ``box_deltas`` ``[B, A, 4]``
(anchor order of :mod:`kvision.tasks.detection.anchors`). Everything needed to decode them lives
in the contract's ``postprocess`` dict, so an exported artifact decodes with nothing else::

    {"anchors": AnchorConfig.to_dict(), "variances": [0.1, 0.1, 0.2, 0.2],
     "score_threshold": 0.05, "iou_threshold": 0.5, "max_detections": 100}

Parity (Keras vs an artifact) compares decoded detections: per image, detections with a score of
at least ``PARITY_SCORE`` are matched greedily (same class, IoU >= 0.5, by decreasing score) and
the agreement is ``2 * matched / (n_keras + n_artifact)`` over the sample (an F1). Float variants
are also held to a raw-output tolerance; a quantized variant checked on samples where the Keras
model has no confident detection fails as "not verified" rather than passing on nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np

from kvision.tasks.base import (
    Parity,
    StreamingMetric,
    Task,
    Tolerance,
    check_auto_loss,
    register_task,
)
from kvision.tasks.detection.heads import BOX_OUTPUT, CLASS_OUTPUT

PARITY_SCORE = 0.3
PARITY_IOU = 0.5
DEFAULT_POSTPROCESS = {
    "variances": [0.1, 0.1, 0.2, 0.2],
    "score_threshold": 0.05,
    "iou_threshold": 0.5,
    "max_detections": 100,
    "pre_nms_top_k": 1000,
}


def postprocess_options(contract) -> dict:
    """The contract's post-processing parameters over :data:`DEFAULT_POSTPROCESS`."""
    return {**DEFAULT_POSTPROCESS, **(getattr(contract, "postprocess", None) or {})}


def head_type(contract) -> str:
    """``"anchors"`` (RetinaNet-style, the default) or ``"grid"`` (anchor-free, one cell per
    location: :mod:`kvision.tasks.detection.grid`)."""
    return postprocess_options(contract).get("head", "anchors")


def contract_anchors(contract) -> np.ndarray:
    """The anchors of a detector's contract: float32 ``[A, 4]`` normalized xyxy, one row per
    prediction (the grid head's cells for ``head: grid``); computed once per input size and
    config, then shared: do not modify the array."""
    options = postprocess_options(contract)
    kind = head_type(contract)
    config = options.get("grid" if kind == "grid" else "anchors", {})
    return _anchors(contract.height, contract.width, kind, json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _anchors(height: int, width: int, kind: str, config_json: str) -> np.ndarray:
    from kvision.tasks.detection.anchors import AnchorConfig, generate_anchors
    from kvision.tasks.detection.grid import GridConfig, grid_cells

    config = json.loads(config_json)
    if kind == "grid":
        anchors = grid_cells((height, width), GridConfig.from_dict(config))
    else:
        anchors = generate_anchors((height, width), AnchorConfig.from_dict(config))
    anchors.setflags(write=False)
    return anchors


def target_encoder(contract):
    """``(boxes [N, 4] normalized, classes [N]) -> {"box_targets", "class_targets"}`` in graph
    mode, for the contract's head (``tf.data`` map function of the training pipeline)."""
    anchors = contract_anchors(contract)
    if head_type(contract) == "grid":
        from kvision.tasks.detection.grid import GridConfig, encode_grid_targets_tf

        config = GridConfig.from_dict(postprocess_options(contract).get("grid", {}))
        return lambda boxes, classes: encode_grid_targets_tf(boxes, classes, anchors, config)
    from kvision.tasks.detection.anchors import encode_targets_tf

    variances = postprocess_options(contract)["variances"]
    return lambda boxes, classes: encode_targets_tf(boxes, classes, anchors, variances=variances)


def decode_batch(outputs: dict, contract, image_sizes) -> list:
    """Raw outputs of a batch -> one ``Detections`` per image, boxes in that image's pixels.

    Args:
        outputs: ``{"class_logits": [B, A, C], "box_deltas": [B, A, 4]}``.
        contract: the detector's contract (anchors and post-processing parameters).
        image_sizes: ``(width, height)`` of each original image (a stretch resize is undone by
            scaling each axis, a letterbox by removing its padding and scale), or one pair for
            all.
    """
    from kvision.tasks.detection.nms import postprocess

    opts = postprocess_options(contract)
    anchors = contract_anchors(contract)
    logits = np.asarray(outputs[CLASS_OUTPUT], np.float32)
    deltas = np.asarray(outputs[BOX_OUTPUT], np.float32)
    sizes = list(image_sizes)
    if len(sizes) == 2 and np.isscalar(sizes[0]):
        sizes = [tuple(sizes)] * len(logits)
    if getattr(contract, "resize", "stretch") == "letterbox":
        return _unletterboxed(outputs, contract, sizes)
    probs = 1.0 / (1.0 + np.exp(-logits))
    decoder = None
    if head_type(contract) == "grid":
        from kvision.tasks.detection.grid import decode_ltrb as decoder
    return [
        postprocess(
            probs[i],
            deltas[i],
            anchors,
            image_size=sizes[i],
            score_threshold=opts["score_threshold"],
            iou_threshold=opts["iou_threshold"],
            max_detections=opts["max_detections"],
            pre_nms_top_k=opts["pre_nms_top_k"],
            variances=opts["variances"],
            box_decoder=decoder,
        )
        for i in range(len(logits))
    ]


def _unletterboxed(outputs, contract, sizes) -> list:
    """Decode in model-input pixels, then undo each image's letterbox (scale and padding)."""
    from kvision.preprocess import letterbox_boxes
    from kvision.tasks.detection.boxes import clip_boxes
    from kvision.tasks.detection.nms import Detections

    stretched = dataclasses.replace(contract, resize="stretch")
    decoded = decode_batch(outputs, stretched, (contract.width, contract.height))
    out = []
    for det, (w, h) in zip(decoded, sizes, strict=True):
        size = (contract.height, contract.width)
        boxes = letterbox_boxes(det.boxes, int(w), int(h), size, inverse=True)
        boxes = clip_boxes(boxes, float(w), float(h))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out.append(Detections(boxes[keep], det.scores[keep], det.classes[keep]))
    return out


class DetectionMetric(StreamingMetric):
    """COCO box metrics, streamed: each batch is decoded and only its detections are kept.

    ``update(outputs, examples)`` takes the batch's raw outputs and its ``DetectionExample``
    objects (ground truth in pixels, mask areas for the size buckets when present).
    """

    def __init__(self, contract, labels=None, category_ids=None):
        from kvision.tasks.detection.coco_eval import CocoEvaluator

        self.contract = contract
        self.evaluator = CocoEvaluator(labels or contract.labels, category_ids)

    def update(self, outputs, targets) -> None:
        sizes = [(ex.width, ex.height) for ex in targets]
        for ex, det in zip(targets, decode_batch(outputs, self.contract, sizes), strict=True):
            areas = getattr(ex, "areas", None)
            crowd = getattr(ex, "iscrowd", None)
            self.evaluator.update(
                int(ex.image_id),
                ex.boxes,
                ex.classes,
                det,
                width=ex.width,
                height=ex.height,
                gt_area=areas,
                gt_iscrowd=crowd,
            )

    def result(self) -> dict:
        out = self.evaluator.result()
        out["n"] = self.evaluator.num_images
        return out


@register_task("detection")
class DetectionTask(Task):
    """Object detection with anchors (see the module docstring)."""

    primary_metric = "mAP@[.5:.95]"
    higher_is_better = True
    stages = "kvision.tasks.detection.stages"
    artifact_name = "detector"
    output_names = (CLASS_OUTPUT, BOX_OUTPUT)
    #: agreement of confident decoded detections (score >= 0.3) with the Keras model's
    tolerances = {
        "float": Tolerance(max_abs_diff=1e-3, min_agreement=0.99),
        "float16": Tolerance(max_abs_diff=None, min_agreement=0.95),
        "dynamic": Tolerance(max_abs_diff=None, min_agreement=0.9),
        "int8": Tolerance(max_abs_diff=None, min_agreement=0.8),
        "int16x8": Tolerance(max_abs_diff=None, min_agreement=0.9),
    }

    def build_head(self, features, num_classes: int, anchor_config=None, channels=64, depth=2, **_):
        """The pyramid and the class / box subnets: ``anchor_config`` an ``AnchorConfig``
        (RetinaNet-style, 9 anchors per location by default) or a ``GridConfig`` (anchor-free
        grid head, one prediction per location)."""
        from kvision.tasks.detection.anchors import AnchorConfig, anchors_per_location
        from kvision.tasks.detection.grid import GridConfig
        from kvision.tasks.detection.heads import pyramid, retina_head

        config = anchor_config or AnchorConfig()
        per_location = 1 if isinstance(config, GridConfig) else anchors_per_location(config)
        levels = pyramid(features, config.strides, channels)
        return retina_head(levels, num_classes, per_location, channels, depth)

    def compile_args(self, train_cfg, num_classes: int) -> dict:
        check_auto_loss(train_cfg, self.name)
        from kvision.tasks.detection.losses import BoxLoss, FocalLoss

        return {"loss": {CLASS_OUTPUT: FocalLoss(), BOX_OUTPUT: BoxLoss()}, "metrics": None}

    def monitor(self, has_validation: bool) -> tuple[str, str]:
        return ("val_loss" if has_validation else "loss"), "min"

    def decode(self, outputs, contract, image_sizes=None) -> list:
        size = image_sizes or (contract.width, contract.height)
        return decode_batch(outputs, contract, size)

    def metric(self, contract) -> DetectionMetric:
        return DetectionMetric(contract)

    def parity(self, reference, outputs, variant: str, contract=None, min_agreement=None):
        """Raw-output difference (float variants) and the agreement of decoded detections."""
        if contract is None:
            raise ValueError("Detection parity decodes the outputs: pass the model's `contract`.")
        tol = self.tolerance(variant)
        need = tol.min_agreement if min_agreement is None else min_agreement
        self.check_outputs(reference, "the Keras outputs")
        self.check_outputs(outputs, "the artifact's outputs")
        checks, reasons = {}, []
        for name in self.output_names:
            ref, out = np.asarray(reference[name]), np.asarray(outputs[name])
            if ref.shape != out.shape:
                reasons.append(
                    f"{name}: shape {list(out.shape)} differs from Keras {list(ref.shape)}"
                )
                continue
            if not np.all(np.isfinite(out)):
                reasons.append(f"{name}: outputs contain NaN or Inf")
            if not np.all(np.isfinite(ref)):
                reasons.append(f"{name}: the Keras outputs contain NaN or Inf")
            checks[f"{name}_max_abs_diff"] = float(np.abs(out - ref).max())
        if reasons:
            return Parity(False, checks, reasons)
        if tol.max_abs_diff is not None:
            for name in self.output_names:
                if not checks[f"{name}_max_abs_diff"] <= tol.max_abs_diff:
                    reasons.append(
                        f"{name}: max |artifact - keras| = {checks[f'{name}_max_abs_diff']:.3g} "
                        f"> atol={tol.max_abs_diff:g}"
                    )
        agreement, n_ref, n_out = detection_agreement(
            decode_batch(reference, contract, (contract.width, contract.height)),
            decode_batch(outputs, contract, (contract.width, contract.height)),
        )
        checks.update(
            detection_agreement=agreement, keras_detections=n_ref, artifact_detections=n_out
        )
        if n_ref == 0 and tol.max_abs_diff is None:  # nothing to compare: never a vacuous pass
            reasons.append(
                f"not verified: the Keras model has no detection scoring >= {PARITY_SCORE} on the "
                f"{len(reference[CLASS_OUTPUT])} samples, so decoded detections cannot be compared "
                "(train longer, or verify on images with objects)"
            )
        elif agreement < need:
            reasons.append(
                f"decoded detections agree {agreement:.2%} (score >= {PARITY_SCORE}, IoU >= "
                f"{PARITY_IOU}, same class) < required {need:.2%}"
            )
        return Parity(not reasons, checks, reasons)

    def prediction_json(self, prediction, contract) -> dict:
        return {"detections": prediction.to_json(contract.labels)}

    def draw(self, pixels, prediction, contract, min_score: float = 0.0):
        from kvision.tasks.detection.draw import draw_detections

        return draw_detections(pixels, prediction, contract.labels, min_score)

    def remedy(self, artifact_name: str) -> str:
        if "qat" in artifact_name:
            return "train QAT longer (compress.qat.epochs) or at a lower learning rate"
        return (
            "use QAT (compress.techniques includes qat): it recovers what post-training "
            "calibration of the class and box heads loses"
        )


def detection_agreement(reference: list, outputs: list, score: float = PARITY_SCORE):
    """``(F1 agreement, n_reference, n_outputs)`` of confident detections, matched greedily
    (same class, IoU >= ``PARITY_IOU``, by decreasing reference score) image by image."""
    from kvision.tasks.detection.boxes import iou

    matched = n_ref = n_out = 0
    for ref, out in zip(reference, outputs, strict=True):
        r = np.flatnonzero(ref.scores >= score)
        o = np.flatnonzero(out.scores >= score)
        n_ref, n_out = n_ref + len(r), n_out + len(o)
        if not len(r) or not len(o):
            continue
        overlaps = iou(ref.boxes[r], out.boxes[o])
        overlaps[ref.classes[r][:, None] != out.classes[o][None, :]] = 0.0
        used = np.zeros(len(o), bool)
        for i in np.argsort(-ref.scores[r], kind="stable"):
            candidates = np.where(~used & (overlaps[i] >= PARITY_IOU), overlaps[i], -1.0)
            j = int(np.argmax(candidates))
            if candidates[j] >= PARITY_IOU:
                used[j] = True
                matched += 1
    total = n_ref + n_out
    return (1.0 if total == 0 else 2.0 * matched / total), n_ref, n_out
