"""The one place kvision imports ``tensorflow_model_optimization`` (tfmot).

tfmot is optional (``pip install kvision[compress]``) and is imported lazily, inside the functions
here, never at ``import kvision`` time. Importing tfmot sets ``TF_USE_LEGACY_KERAS=1`` in the
process environment as a side effect; :func:`tfmot` undoes that change so that importing kvision's
compression stage leaves the environment as it found it (kvision uses ``tf_keras`` explicitly and
does not need the variable).

Every other compression module gets tfmot objects through the small functions below, so the tfmot
API surface kvision depends on is listed in one file.
"""

from __future__ import annotations

import contextlib
import os

from kvision._keras import require_tf_keras_model
from kvision.errors import InputValueError, MissingDependencyError

INSTALL_HINT = (
    "tensorflow-model-optimization is missing: `pip install kvision[compress]` "
    "(or `pip install tensorflow-model-optimization==0.8.1`)."
)
_ENV = "TF_USE_LEGACY_KERAS"
_MODULE = None


def tfmot():
    """The ``tensorflow_model_optimization`` module, imported on first use.

    Raises:
        ImportError: tfmot is not installed (the message says how to install it).
    """
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    before = os.environ.get(_ENV)
    try:
        import tensorflow_model_optimization as module
    except ImportError as exc:
        raise MissingDependencyError(INSTALL_HINT) from exc
    finally:
        # tfmot sets TF_USE_LEGACY_KERAS=1 at import; restore what the user had.
        if before is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = before
    _MODULE = module
    return module


def available() -> bool:
    """True when tfmot can be imported."""
    try:
        tfmot()
    except ImportError:
        return False
    return True


def check_model(model, argument: str = "model"):
    """``model`` if it is a tf_keras model; a Keras 3 model raises a ``TypeError`` saying why."""
    return require_tf_keras_model(model, argument)


@contextlib.contextmanager
def unsafe_clone_scope():
    """Allow cloning in-memory models that hold Python lambdas (``Lambda`` layers).

    tfmot clones models through ``get_config``/``from_config``; tf_keras refuses to rebuild a
    ``Lambda`` layer from config in safe mode. The model is already in this process (its code
    already ran), so rebuilding it here is not loading untrusted code.
    """
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(False):
        yield


# -- pruning ---------------------------------------------------------------------------------
def polynomial_decay(initial, final, begin_step, end_step, frequency, power=3.0):
    return tfmot().sparsity.keras.PolynomialDecay(
        initial_sparsity=initial,
        final_sparsity=final,
        begin_step=begin_step,
        end_step=end_step,
        power=power,
        frequency=frequency,
    )


def constant_sparsity(target, begin_step, end_step, frequency):
    return tfmot().sparsity.keras.ConstantSparsity(
        target, begin_step=begin_step, end_step=end_step, frequency=frequency
    )


def xnnpack_policy():
    return tfmot().sparsity.keras.PruneForLatencyOnXNNPack()


def prune_low_magnitude(model_or_layer, **kwargs):
    return tfmot().sparsity.keras.prune_low_magnitude(model_or_layer, **kwargs)


def pruning_callbacks():
    """The callback that advances the pruning step (required when fitting a pruned model)."""
    return [tfmot().sparsity.keras.UpdatePruningStep()]


def strip_pruning(model):
    return tfmot().sparsity.keras.strip_pruning(model)


def prunable_weights(layer) -> list[str] | None:
    """Names of the weights tfmot prunes in ``layer`` ([] for none); ``None`` if unsupported."""
    from tensorflow_model_optimization.python.core.sparsity.keras import (
        prunable_layer,
        prune_registry,
    )

    tfmot()
    if isinstance(layer, prunable_layer.PrunableLayer):
        return [w.name for w in layer.get_prunable_weights()]
    registry = prune_registry.PruneRegistry
    if not registry.supports(layer):
        return None
    if layer.__class__ not in registry._LAYERS_WEIGHTS_MAP:  # noqa: SLF001 (RNN layers)
        return ["cell weights"]
    return list(registry._weight_names(layer))  # noqa: SLF001


def is_pruning_wrapper(layer) -> bool:
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    return isinstance(layer, pruning_wrapper.PruneLowMagnitude)


# -- quantization ----------------------------------------------------------------------------
def quantize_registry():
    """tfmot's default 8-bit registry (which layer gets which quantize config)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    tfmot()
    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def quantize_annotate_layer(layer):
    return tfmot().quantization.keras.quantize_annotate_layer(layer)


def quantize_annotate_model(model):
    return tfmot().quantization.keras.quantize_annotate_model(model)


def quantize_apply(annotated, scheme: str = "default"):
    """``quantize_apply`` with a scheme.

    ``default``, ``prune_preserve`` (PQAT), ``cluster_preserve`` (CQAT) or
    ``cluster_sparsity_preserve`` (PCQAT).
    """
    t = tfmot()
    combine = t.experimental.combine
    schemes = {
        "default": lambda: None,
        "prune_preserve": combine.Default8BitPrunePreserveQuantizeScheme,
        "cluster_preserve": lambda: combine.Default8BitClusterPreserveQuantizeScheme(False),
        "cluster_sparsity_preserve": lambda: combine.Default8BitClusterPreserveQuantizeScheme(True),
    }
    if scheme not in schemes:
        raise InputValueError(
            f"`scheme` should be one of {sorted(schemes)}. Received: scheme={scheme!r}"
        )
    chosen = schemes[scheme]()
    if chosen is None:
        return t.quantization.keras.quantize_apply(annotated)
    return t.quantization.keras.quantize_apply(annotated, chosen)


def quantize_scope():
    return tfmot().quantization.keras.quantize_scope()


def is_quantize_wrapper(layer) -> bool:
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_wrapper

    return isinstance(layer, quantize_wrapper.QuantizeWrapper)


# -- clustering ------------------------------------------------------------------------------
def cluster_weights(model_or_layer, number_of_clusters: int, init: str, **kwargs):
    c = tfmot().clustering.keras
    init_enum = getattr(c.CentroidInitialization, init.upper())
    return c.cluster_weights(
        model_or_layer,
        number_of_clusters=number_of_clusters,
        cluster_centroids_init=init_enum,
        **kwargs,
    )


def strip_clustering(model):
    return tfmot().clustering.keras.strip_clustering(model)


def strip_clustering_cqat(model):
    return tfmot().experimental.combine.strip_clustering_cqat(model)


def clusterable_weights(layer) -> list[str] | None:
    """Names of the weights tfmot clusters in ``layer`` ([] for none); ``None`` if unsupported."""
    from tensorflow_model_optimization.python.core.clustering.keras import (
        clusterable_layer,
        clustering_registry,
    )

    tfmot()
    if isinstance(layer, clusterable_layer.ClusterableLayer):
        return [w.name for _, w in layer.get_clusterable_weights()]
    registry = clustering_registry.ClusteringRegistry
    if not registry.supports(layer):
        return None
    if layer.trainable_weights and layer.__class__ not in registry._LAYERS_WEIGHTS_MAP:  # noqa: SLF001
        return ["cell weights"]
    return list(registry._weight_names(layer))  # noqa: SLF001


def is_cluster_wrapper(layer) -> bool:
    from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper

    return isinstance(layer, cluster_wrapper.ClusterWeights)


def centroid_inits() -> tuple[str, ...]:
    """Names of tfmot's centroid initialisations (lower case)."""
    return ("kmeans_plus_plus", "linear", "density_based", "random")
