"""Weight clustering: k shared values per layer kernel, fine-tuned, then stripped.

Layers are wrapped one by one, so a layer tfmot cannot cluster is left unchanged with a reason in
the :class:`LayerReport`. After :func:`strip` the kernels hold at most ``k`` distinct values
(measure them with :func:`kvision.compress.sparsity.keras_weight_stats`); cluster-preserving QAT
(``quantize_model(..., scheme="cluster_preserve")``) keeps that count through int8.

Example::

    clustered, report = cluster_model(model, ClusterConfig(clusters=16))
    finetune(clustered, train_ds, epochs=1, learning_rate=2e-4)
    plain = strip(clustered)
"""

from __future__ import annotations

from kvision.compress import _tfmot
from kvision.compress._models import (
    clone_with,
    contract_of,
    copy_model,
    flat_layers,
    nested_model_reason,
    with_contract,
)
from kvision.compress.config import ClusterConfig
from kvision.compress.layer_report import LayerReport
from kvision.errors import InputValueError


def cluster_model(model, cfg: ClusterConfig):
    """Wrap ``model``'s clusterable layers (the input model is not changed).

    Args:
        model: trained tf_keras functional/Sequential model.
        cfg: clusters per layer, centroid initialisation, layers to skip.

    Returns:
        ``(clustered_model, report)``; fine-tune ``clustered_model`` then :func:`strip` it.

    Raises:
        ValueError: nothing in the model can be clustered (the layers are named).

    Example:
        >>> clustered, report = cluster_model(model, ClusterConfig(clusters=8))
        >>> report.count("clustered") > 0
        True
    """
    _tfmot.check_model(model)
    base = copy_model(model)
    report = LayerReport("cluster")
    decisions = {}
    for layer in flat_layers(base):
        action, reason = _decide(layer, cfg)
        decisions[layer.name] = action
        report.add(layer, action, reason)
    if not report.count("clustered"):
        raise InputValueError(
            "No layer of the model can be clustered (tfmot clusters Conv/Dense-type kernels). "
            f"Layers: {[(r.layer, r.type, r.reason) for r in report.rows][:10]}"
        )

    def wrap(layer):
        if decisions.get(layer.name) != "clustered":
            return layer
        return _tfmot.cluster_weights(layer, cfg.clusters, cfg.init)

    clustered = clone_with(base, wrap)
    report.message = (
        f"{report.count('clustered')} layer(s) clustered to {cfg.clusters} values per kernel "
        f"({cfg.init} init)."
    )
    return with_contract(clustered, contract_of(model)), report


def _decide(layer, cfg: ClusterConfig) -> tuple[str, str]:
    if layer.name in cfg.skip_layers:
        return "unchanged", "in cluster.skip_layers"
    nested = nested_model_reason(layer, "clustered")
    if nested:
        return "unchanged", nested
    weights = _tfmot.clusterable_weights(layer)
    if weights is None:
        return "unchanged", (
            f"not supported by tfmot clustering ({type(layer).__name__} is not a built-in "
            "clusterable layer and does not implement tfmot's ClusterableLayer)"
        )
    if not weights:
        return "unchanged", "no clusterable weights"
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        kernel = getattr(layer, "depthwise_kernel", None)
    size = int(kernel.shape.num_elements()) if kernel is not None else None
    if size is not None and size <= cfg.clusters:
        return "unchanged", f"kernel has {size} values, not more than {cfg.clusters} clusters"
    return "clustered", f"{', '.join(weights)} clustered to {cfg.clusters} values"


def strip(clustered_model, cqat: bool = False):
    """Remove the clustering wrappers (``cqat=True`` for a cluster-preserving QAT model)."""
    contract = contract_of(clustered_model)
    stripped = (
        _tfmot.strip_clustering_cqat(clustered_model)
        if cqat
        else _tfmot.strip_clustering(clustered_model)
    )
    return with_contract(stripped, contract)
