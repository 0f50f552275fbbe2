"""The segmentation :class:`~kvision.tasks.base.Task`: per-pixel class logits, argmax outside
the graph, mIoU / Dice streamed, nuclei instances, parity on decoded masks.

The model's raw output is ``mask_logits`` float ``[B, H, W, C]`` at the input's resolution
(class 0 is background). The contract's ``postprocess`` holds what decoding needs::

    {"head": "unet", "ignore_index": 255,
     "instances": {"seed_classes": [1], "foreground_classes": [1, 2], "min_size": 10,
                   "grow_px": 3}}          # only for datasets with instance ids (nuclei)

Decoding takes the per-pixel argmax and maps it back to each original image (nearest-neighbour
resize for a stretch; the padding cropped first for a letterbox).

Parity (Keras vs an artifact) compares decoded class masks on the same inputs: the
``mask_IoU_agreement`` is the mean IoU of the artifact's class mask against the Keras model's,
over the classes the Keras model predicts (so an artifact that collapses to background fails even
where background dominates); pixel agreement is reported beside it. Float variants are also held
to a raw-logit tolerance. A quantized variant checked on samples where the Keras model predicts
one class only fails as "not verified".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.base import Parity, Task, Tolerance, register_task
from kvision.tasks.segmentation.heads import MASK_OUTPUT

#: the label of training pixels that take no loss (the dataset's ``ignore_index`` maps to it)
IGNORE_LABEL = 255
#: a class mask PNG palette: background transparent in overlays, then distinct colours
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0]],
    np.uint8,
)  # fmt: skip


def palette(n: int) -> np.ndarray:
    """uint8 ``[n, 3]`` class colours (class 0 black, then :data:`PALETTE`, then seeded)."""
    if n <= len(PALETTE):
        return PALETTE[:n]
    extra = np.random.default_rng(0).integers(40, 256, (n - len(PALETTE), 3), dtype=np.uint8)
    return np.concatenate([PALETTE, extra])


@dataclass
class SegmentationTarget:
    """Ground truth of one image at its own size: class ids ``[H, W]`` and instance ids (or
    ``None``)."""

    name: str
    classes: np.ndarray
    instances: np.ndarray | None = None


@dataclass
class SegmentationPrediction:
    """One decoded image: ``classes`` uint8 ``[H, W]`` (argmax) and ``confidence`` float32
    ``[H, W]`` (the softmax probability of that class), at the original image's size."""

    classes: np.ndarray
    confidence: np.ndarray

    def instance_ids(self, contract) -> np.ndarray:
        """int32 ``[H, W]`` instances (0 = none) by the contract's ``instances`` rule;
        ``ValueError`` when it has none."""
        from kvision.tasks.segmentation.metrics import instances_from_classes

        cfg = (contract.postprocess or {}).get("instances")
        if not cfg:
            raise ValueError("This model's contract has no `instances` rule (no instance model)")
        return instances_from_classes(self.classes, **cfg)

    def to_json(self, contract) -> dict:
        """``{"size": [h, w], "classes": [{"class_index", "label", "pixels", "mean_confidence",
        "rle"}]}`` for every class present but class 0; ``rle`` is the class's binary mask in
        COCO compressed RLE (``pycocotools.mask.decode`` reads it); plus ``"instances"``
        (count, and per instance its box, area and RLE) for an instance model."""
        from pycocotools import mask as mask_utils

        def rle(binary):
            r = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
            return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}

        h, w = self.classes.shape
        entries = []
        for c in np.unique(self.classes):
            if c == 0:
                continue
            binary = self.classes == c
            entries.append({
                "class_index": int(c),
                "label": contract.labels[int(c)] if int(c) < len(contract.labels) else str(c),
                "pixels": int(binary.sum()),
                "mean_confidence": round(float(self.confidence[binary].mean()), 4),
                "rle": rle(binary),
            })  # fmt: skip
        out = {"size": [int(h), int(w)], "classes": entries}
        if (contract.postprocess or {}).get("instances"):
            ids = self.instance_ids(contract)
            objects = []
            for i in range(1, int(ids.max()) + 1):
                ys, xs = np.nonzero(ids == i)
                if not len(ys):
                    continue
                box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
                objects.append({"id": i, "box": box, "area": int(len(ys)), "rle": rle(ids == i)})
            out["instances"] = {"count": len(objects), "objects": objects}
        return out


def decode_masks(outputs: dict, contract, image_sizes) -> list[SegmentationPrediction]:
    """Raw ``mask_logits`` of a batch -> one :class:`SegmentationPrediction` per image at its
    ``(width, height)`` (one pair for all, or one per image)."""
    from PIL import Image

    from kvision.preprocess import letterbox_geometry

    logits = np.asarray(outputs[MASK_OUTPUT], np.float32)
    sizes = list(image_sizes)
    if len(sizes) == 2 and np.isscalar(sizes[0]):
        sizes = [tuple(sizes)] * len(logits)
    z = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    classes = probs.argmax(axis=-1).astype(np.uint8)
    confidence = probs.max(axis=-1).astype(np.float32)
    out = []
    for cls, conf, (w, h) in zip(classes, confidence, sizes, strict=True):
        w, h = int(w), int(h)
        if getattr(contract, "resize", "stretch") == "letterbox":
            _, px, py, nw, nh = letterbox_geometry(w, h, (contract.height, contract.width))
            cls, conf = cls[py : py + nh, px : px + nw], conf[py : py + nh, px : px + nw]
        if cls.shape != (h, w):
            cls = np.asarray(Image.fromarray(cls).resize((w, h), Image.Resampling.NEAREST))
            conf = np.asarray(Image.fromarray(conf).resize((w, h), Image.Resampling.NEAREST))
        out.append(SegmentationPrediction(cls, conf))
    return out


def mask_agreement(reference: list, outputs: list) -> tuple[float, float, int]:
    """``(mean IoU over the classes the reference predicts, pixel agreement, classes)`` of two
    lists of predictions of the same images."""
    ref = np.concatenate([p.classes.ravel() for p in reference])
    out = np.concatenate([p.classes.ravel() for p in outputs])
    classes = np.unique(ref)
    ious = [((ref == c) & (out == c)).sum() / max(1, ((ref == c) | (out == c)).sum())
            for c in classes]  # fmt: skip
    return float(np.mean(ious)) if ious else 1.0, float((ref == out).mean()), int(len(classes))


@register_task("segmentation")
class SegmentationTask(Task):
    """Semantic segmentation (and nuclei instances) on one spine (module docstring)."""

    primary_metric = "mIoU"
    higher_is_better = True
    stages = "kvision.tasks.segmentation.stages"
    artifact_name = "segmenter"
    default_backbone = "unet"
    output_names = (MASK_OUTPUT,)
    #: ``min_agreement`` is on the mean IoU of decoded class masks against the Keras model's
    tolerances = {
        "float": Tolerance(max_abs_diff=1e-3, min_agreement=0.99),
        "float16": Tolerance(max_abs_diff=None, min_agreement=0.97),
        "dynamic": Tolerance(max_abs_diff=None, min_agreement=0.95),
        "int8": Tolerance(max_abs_diff=None, min_agreement=0.9),
        "int16x8": Tolerance(max_abs_diff=None, min_agreement=0.95),
    }

    def build_head(self, features, num_classes: int, head="unet", input_size=None, **options):
        """``{"mask_logits"}`` from ``head`` (``unet``, ``fcn``, ``deeplab``: see
        :mod:`kvision.tasks.segmentation.heads`) on a backbone's features."""
        from kvision.tasks.segmentation import heads

        builders = {"unet": heads.unet_decoder, "fcn": heads.fcn_head,
                    "deeplab": heads.deeplab_head}  # fmt: skip
        return builders[head](features, num_classes, input_size, **options)

    def compile_args(self, train_cfg, num_classes: int) -> dict:
        """CE + Dice by default; ``train.class_weights`` weigh the cross-entropy."""
        from kvision.tasks.segmentation.losses import build_loss

        weights = train_cfg.class_weights
        if isinstance(weights, dict):
            weights = [float(weights.get(i, weights.get(str(i), 1.0))) for i in range(num_classes)]
        elif weights is not None:
            raise InputValueError(
                "`train.class_weights` for segmentation should be a mapping {class_index: "
                f"weight}} (unlisted classes weigh 1.0). Received: {weights!r}"
            )
        spec = "ce_dice" if train_cfg.loss == "auto" else train_cfg.loss
        loss = build_loss(spec, weights, IGNORE_LABEL)
        return {"loss": {MASK_OUTPUT: loss}, "metrics": None}

    def monitor(self, has_validation: bool) -> tuple[str, str]:
        return ("val_loss" if has_validation else "loss"), "min"

    def decode(self, outputs, contract, image_sizes=None) -> list:
        return decode_masks(outputs, contract, image_sizes or (contract.width, contract.height))

    def metric(self, contract):
        from kvision.tasks.segmentation.metrics import SegmentationMetric

        return SegmentationMetric(self, contract)

    def parity(self, reference, outputs, variant: str, contract=None, min_agreement=None):
        """Raw-logit difference (float variants) and the mean IoU of decoded class masks."""
        if contract is None:
            raise ValueError("Segmentation parity decodes the outputs: pass the model `contract`.")
        tol = self.tolerance(variant)
        need = tol.min_agreement if min_agreement is None else min_agreement
        self.check_outputs(reference, "the Keras outputs")
        self.check_outputs(outputs, "the artifact's outputs")
        ref, out = np.asarray(reference[MASK_OUTPUT]), np.asarray(outputs[MASK_OUTPUT])
        if ref.shape != out.shape:
            shape = f"{list(out.shape)} differs from Keras {list(ref.shape)}"
            return Parity(False, {}, [f"{MASK_OUTPUT}: shape {shape}"])
        for what, arr in (("outputs", out), ("Keras outputs", ref)):
            if not np.all(np.isfinite(arr)):
                return Parity(False, {}, [f"{MASK_OUTPUT}: the {what} contain NaN or Inf"])
        checks, reasons = {"max_abs_diff": float(np.abs(out - ref).max())}, []
        if tol.max_abs_diff is not None and not checks["max_abs_diff"] <= tol.max_abs_diff:
            reasons.append(
                f"max |artifact - keras| = {checks['max_abs_diff']:.3g} > atol={tol.max_abs_diff:g}"
            )
        size = (contract.width, contract.height)
        miou, pixels, n_classes = mask_agreement(
            decode_masks(reference, contract, size), decode_masks(outputs, contract, size)
        )
        checks.update(mask_IoU_agreement=round(miou, 6), pixel_agreement=round(pixels, 6),
                      keras_classes=n_classes)  # fmt: skip
        if n_classes < 2 and tol.max_abs_diff is None:
            reasons.append(
                f"not verified: the Keras model predicts one class only on the {len(ref)} "
                "samples, so masks cannot be compared (train longer, or verify on images with "
                "objects)"
            )
        elif miou < need:
            reasons.append(
                f"decoded masks agree with mean IoU {miou:.2%} (pixels {pixels:.2%}) < required "
                f"{need:.2%}"
            )
        return Parity(not reasons, checks, reasons)

    def prediction_json(self, prediction, contract) -> dict:
        return {"segmentation": prediction.to_json(contract)}

    def draw(self, pixels, prediction, contract, min_score: float = 0.0):
        from kvision.tasks.segmentation.draw import overlay

        return overlay(pixels, prediction.classes, len(contract.labels))

    def prediction_images(self, prediction, contract) -> dict:
        """``{"mask": uint8 [H, W] class ids}``: ``kvision predict --out`` writes it as
        ``<stem>_mask.png`` (a palette PNG whose indices are the class ids)."""
        return {"mask": prediction.classes}

    def write_prediction_image(self, name, pixels, path, contract):
        from kvision.tasks.segmentation.draw import write_mask_png

        return write_mask_png(pixels, path, len(contract.labels))

    def remedy(self, artifact_name: str) -> str:
        if "qat" in artifact_name:
            return "train QAT longer (compress.qat.epochs) or at a lower learning rate"
        return "use QAT (compress.techniques includes qat), or more calibration images"
