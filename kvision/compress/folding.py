"""Which BatchNormalization layers tfmot's 8-bit QAT folds, decided from the model's structure.

tfmot's registry has no quantize config for ``BatchNormalization``: it only quantizes one when a
layout transform folds it into the layer before it. A BatchNormalization annotated for QAT that no
transform matches makes ``quantize_apply`` fail for the whole model ("Layer ... is not
supported"). The transforms (``default_8bit_transforms.Conv2DBatchNorm*Quantize``) match a
BatchNormalization whose only input is a ``Conv2D`` or ``DepthwiseConv2D`` that

* has no activation of its own (``activation="linear"``),
* is itself annotated (not in ``skip_layers``, not left in float),
* is called once and feeds nothing but that BatchNormalization (not a model output either),

and the BatchNormalization is called once. Everything else (a BatchNormalization after an
activation layer, after a convolution with a fused activation, after pooling, on the input, after
a layer kept in float) is not folded. ``Dense -> BatchNormalization`` *is* matched by tfmot
(``DenseBatchNormQuantize``), but the int8 file converted from it disagrees with the QAT model
(measured: max |diff| 0.28 on softmax outputs vs 0.001 with the BatchNormalization in float), so
it is treated as not foldable too.

:func:`unfoldable_batchnorms` applies these rules to a functional model's config before anything
is annotated, so QAT, PQAT and CQAT keep those layers in float with the reason instead of failing.
The full-integer converter still quantizes them (a multiply and an add) from calibration ranges.

Example::

    reasons = unfoldable_batchnorms(model, annotated={"conv", "bn", "head"})
    # {"bn": "follows conv, which has its own activation (relu); ..."}
"""

from __future__ import annotations

BATCH_NORMS = ("BatchNormalization", "SyncBatchNormalization")
# layer classes tfmot folds a following BatchNormalization into, with a correct int8 file
FOLD_INTO = ("Conv2D", "DepthwiseConv2D")
_KEPT = "kept in float during QAT; the int8 converter quantizes it from calibration ranges"


def unfoldable_batchnorms(model, annotated) -> dict[str, str]:
    """BatchNormalization layers of ``model`` that tfmot would not fold, with the reason.

    Args:
        model: a functional tf_keras model (flattened: no nested models).
        annotated: names of the layers that will be annotated for QAT (BatchNormalization
            layers included). A BatchNormalization can only be folded into an annotated layer.

    Returns:
        ``{layer name: reason}`` for every BatchNormalization in ``annotated`` that cannot be
        folded; the reason names the layer before it and ends with what happens instead.

    Example:
        >>> unfoldable_batchnorms(model, {"conv", "bn"})
        {}
    """
    config = model.get_config()
    layers = {entry["name"]: entry for entry in config["layers"]}
    consumers: dict[str, int] = {name: 0 for name in layers}
    for entry in config["layers"]:
        for node in entry.get("inbound_nodes", []):
            for inbound in _connections(node):
                consumers[inbound[0]] = consumers.get(inbound[0], 0) + 1
    for output in config.get("output_layers", []):
        consumers[output[0]] = consumers.get(output[0], 0) + 1

    annotated = set(annotated)
    reasons = {}
    for name, entry in layers.items():
        if entry["class_name"] not in BATCH_NORMS or name not in annotated:
            continue
        reason = _why_not(entry, layers, consumers, annotated)
        if reason:
            reasons[name] = f"{reason}: tfmot cannot fold this BatchNormalization; {_KEPT}"
    return reasons


def _why_not(entry, layers, consumers, annotated) -> str | None:
    nodes = entry.get("inbound_nodes", [])
    if len(nodes) != 1:
        return f"it is called {len(nodes)} times (shared)"
    inputs = _connections(nodes[0])
    if len(inputs) != 1:
        return f"it has {len(inputs)} inputs"
    source = layers.get(inputs[0][0])
    if source is None:
        return f"its input {inputs[0][0]!r} is not a layer of the model"
    kind, name = source["class_name"], source["name"]
    if kind == "InputLayer":
        return "it is applied to the model input, not after a convolution"
    if kind == "Dense":
        return (
            f"it follows Dense {name!r}; tfmot's Dense + BatchNormalization folding gives an int8 "
            "file that disagrees with the model"
        )
    if kind not in FOLD_INTO:
        return f"it follows {kind} {name!r}, not a Conv2D or DepthwiseConv2D"
    activation = source["config"].get("activation")
    if str(activation) != "linear":
        return f"it follows {kind} {name!r}, which has its own activation ({_short(activation)})"
    if name not in annotated:
        return f"it follows {kind} {name!r}, which is kept in float"
    if len(source.get("inbound_nodes", [])) != 1:
        return f"it follows {kind} {name!r}, which is called more than once (shared)"
    if consumers.get(name, 0) != 1:
        return f"it follows {kind} {name!r}, whose output is also used elsewhere"
    axis = entry["config"].get("axis", -1)
    axes = axis if isinstance(axis, list | tuple) else [axis]
    if [int(a) for a in axes] not in ([-1], [3]):
        return f"it normalizes axis {axis}, not the channels of {kind} {name!r}"
    return None


def _connections(node) -> list:
    """``[layer_name, node_index, tensor_index, kwargs]`` entries of one inbound node."""
    return list(node)


def _short(activation) -> str:
    if isinstance(activation, dict):
        return str(activation.get("config", activation.get("class_name", activation)))
    return str(activation)
