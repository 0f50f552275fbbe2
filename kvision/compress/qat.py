"""Quantization-aware training (QAT), selective: unsupported layers stay in float with a reason.

tfmot's ``quantize_model`` fails on the first layer it cannot quantize (a ``Lambda``, a custom
layer, a BatchNormalization it cannot fold) with an opaque error. :func:`quantize_model` flattens
nested models, annotates only the layers tfmot's 8-bit registry supports plus the
BatchNormalization layers tfmot folds into the convolution before them (decided from the model's
structure, :mod:`kvision.compress.folding`), applies the quantization, and returns a
:class:`LayerReport` saying which layers are fake-quantized during training and which are left in
float, and why. The same function runs the collaborative schemes:
``scheme="prune_preserve"`` (PQAT: sparsity survives QAT) and ``"cluster_preserve"`` (CQAT).

A layer left in float during QAT is still converted to int8 by the full-integer TFLite converter,
from calibration ranges (like PTQ); :func:`kvision.compress.ptq` deny-lists keep layers in float in
the ``.tflite`` itself.

Example::

    qat, report = quantize_model(model)                    # fit qat, then convert "int8"
    print(report.to_markdown())
"""

from __future__ import annotations

import contextlib

from kvision._keras import keras
from kvision.compress import _tfmot
from kvision.compress._models import (
    clone_with,
    contract_of,
    copy_model,
    flat_layers,
    nested_model_reason,
    with_contract,
)
from kvision.compress.folding import unfoldable_batchnorms
from kvision.compress.layer_report import LayerReport
from kvision.errors import InputValueError

SCHEMES = ("default", "prune_preserve", "cluster_preserve", "cluster_sparsity_preserve")
_FOLDED = ("BatchNormalization",)
_CONFIG_REASONS = {
    "Default8BitConvQuantizeConfig": "int8 per-channel weights, int8 activations",
    "Default8BitQuantizeConfig": "int8 weights/activations",
    "Default8BitOutputQuantizeConfig": "int8 output activations",
    "NoOpQuantizeConfig": "folded into the preceding layer (quantized with it)",
    "OutputOnlyConfig": "int8 output activations",
    "Default8BitActivationQuantizeConfig": "int8 activations",
}
# tfmot gives NoOpQuantizeConfig to a Conv/Dense/Add followed by a ReLU (LayerReLUQuantize)
_FUSED_WITH_NEXT = (
    "fused with the following ReLU, whose output is quantized: its weights are not "
    "fake-quantized during QAT; the int8 converter quantizes them after training"
)
_FUSED_NO_WEIGHTS = "fused with the following ReLU, whose output is quantized"


def _custom_objects(model) -> dict:
    """Layer classes of ``model`` that are not tf_keras built-ins (needed to clone it)."""
    out = {}
    for layer in flat_layers(model):
        module = type(layer).__module__
        if not module.startswith(("tf_keras.", "keras.", "tensorflow_model_optimization.")):
            out[type(layer).__name__] = type(layer)
    return out


def _skip_reason(layer, registry, skip_layers) -> str | None:
    """Why ``layer`` is not annotated for QAT, or ``None`` when it is."""
    kind = type(layer).__name__
    if layer.name in skip_layers:
        return "in skip_layers (kept in float during QAT)"
    nested = nested_model_reason(layer, "quantized")
    if nested:
        return f"{nested}; kept in float during QAT"
    if kind in _FOLDED:
        return None
    if registry.supports(layer):
        return None
    if isinstance(layer, keras.layers.Lambda):
        return (
            "Lambda layer: tfmot cannot quantize arbitrary Python code; kept in float during QAT "
            "(replace it with built-in layers, or give it a QuantizeConfig, to quantize it)"
        )
    if kind in _custom_objects_names(layer):
        return (
            f"custom layer {kind}: tfmot has no QuantizeConfig for it; kept in float during QAT "
            "(annotate it with a tfmot QuantizeConfig to quantize it)"
        )
    return f"tfmot's 8-bit registry does not support {kind}; kept in float during QAT"


def _custom_objects_names(layer) -> set:
    module = type(layer).__module__
    if module.startswith(("tf_keras.", "keras.")):
        return set()
    return {type(layer).__name__}


@contextlib.contextmanager
def _scope(model):
    with _tfmot.quantize_scope(), keras.utils.custom_object_scope(_custom_objects(model)):
        with _tfmot.unsafe_clone_scope():
            yield


def quantize_model(model, scheme: str = "default", skip_layers=()):
    """A QAT copy of ``model``: supported layers fake-quantized, the rest left in float.

    Args:
        model: trained tf_keras functional/Sequential model, nested models allowed (a pruned
            model must be stripped first; a clustered one too for ``cluster_preserve``).
        scheme: ``"default"``, ``"prune_preserve"`` (PQAT), ``"cluster_preserve"`` (CQAT) or
            ``"cluster_sparsity_preserve"`` (default ``"default"``).
        skip_layers: layer names kept in float even when supported (default none).

    Returns:
        ``(qat_model, report)``; fit ``qat_model`` with the training pipeline, then convert it
        with the ``int8`` / ``int8_float_io`` variants.

    Raises:
        TypeError: ``model`` is not a tf_keras model (Keras 3 models are explained).
        ValueError: unknown ``scheme``, a subclassed model, or no quantizable layer; the model's
            layers are named.

    Example:
        >>> qat, report = quantize_model(model)
        >>> report.count("quantized") > 0
        True
    """
    _tfmot.check_model(model)
    if scheme not in SCHEMES:
        raise InputValueError(f"`scheme` should be one of {SCHEMES}. Received: scheme={scheme!r}")
    contract = contract_of(model)
    base = copy_model(model)
    registry = _tfmot.quantize_registry()
    skips = {
        layer.name: _skip_reason(layer, registry, set(skip_layers)) for layer in flat_layers(base)
    }
    # a BatchNormalization tfmot cannot fold would fail quantize_apply: keep it in float
    annotated = {name for name, reason in skips.items() if reason is None}
    skips.update(unfoldable_batchnorms(base, annotated))
    if all(reason is not None for reason in skips.values()):
        raise InputValueError(
            "No layer of the model can be quantized by tfmot. Layers: "
            f"{[(n, r) for n, r in skips.items()][:10]}"
        )

    def annotate(layer):
        if skips.get(layer.name) is None and layer.name in skips:
            return _tfmot.quantize_annotate_layer(layer)
        return layer

    with _scope(base):
        annotated = clone_with(base, annotate)
        try:
            qat = _tfmot.quantize_apply(annotated, scheme)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise InputValueError(
                f"tfmot could not apply quantization ({scheme}) to {model.name}: "
                f"{' '.join(str(exc).split())[:400]}. Layers left in float so far: "
                f"{[n for n, r in skips.items() if r]}. Add the failing layer to "
                "`skip_layers` to keep it in float."
            ) from exc
    with_contract(qat, contract)
    return qat, _report(base, qat, skips, scheme)


def _report(base, qat, skips: dict, scheme: str) -> LayerReport:
    wrapped = {}
    for layer in flat_layers(qat):
        if _tfmot.is_quantize_wrapper(layer):
            wrapped[layer.layer.name] = type(layer.quantize_config).__name__
    technique = {
        "default": "qat",
        "prune_preserve": "pqat",
        "cluster_preserve": "cqat",
        "cluster_sparsity_preserve": "pcqat",
    }[scheme]
    report = LayerReport(technique)
    present = {getattr(layer, "layer", layer).name for layer in flat_layers(qat)}
    for layer in flat_layers(base):
        if layer.name in wrapped:
            config = wrapped[layer.name]
            reason = _CONFIG_REASONS.get(config, f"quantized ({config})")
            action = "quantized"
            if config == "NoOpQuantizeConfig" and type(layer).__name__ not in _FOLDED:
                reason = _FUSED_WITH_NEXT if layer.weights else _FUSED_NO_WEIGHTS
                if layer.weights:  # its weights train in float: not quantization-aware
                    action = "float"
            if scheme != "default" and "Preserve" in config:
                reason += " (preserving sparsity/clusters)"
            report.add(layer, action, reason, quantize_config=config)
        elif skips.get(layer.name) is not None:
            report.add(layer, "float", skips[layer.name])
        elif not layer.weights:
            report.add(layer, "float", "no weights or activations to quantize of its own")
        elif layer.name not in present:
            report.add(layer, "float", "replaced by tfmot's layout transforms (not in QAT model)")
        else:
            report.add(layer, "float", "left unwrapped (in float) by tfmot's quantize_apply")
    floats = [r.layer for r in report.rows if r.action == "float" and "QAT" in r.reason]
    report.message = f"{report.count('quantized')} layer(s) quantization-aware ({scheme})."
    if floats:
        report.message += (
            f" Left in float during QAT: {floats}. The full-integer TFLite conversion still "
            "quantizes their ops from calibration ranges; keep them in float in the .tflite "
            "with ptq.deny_layers if that costs accuracy."
        )
    return report


def is_quantized_model(model) -> bool:
    """True when ``model`` holds tfmot quantize wrappers (a QAT model)."""
    return any(_tfmot.is_quantize_wrapper(layer) for layer in flat_layers(model))
