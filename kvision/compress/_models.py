"""Model plumbing shared by the techniques: copy, clone layer by layer, keep the input contract."""

from __future__ import annotations

from kvision._keras import keras
from kvision.errors import InputValueError


def contract_of(model):
    """The ``InputContract`` the model carries, or one derived from its shapes."""
    from kvision.models.contract import InputContract

    return InputContract.from_model(model)


def with_contract(model, contract):
    """Attach ``contract`` to ``model`` and return it (clones lose ``kvision_contract``)."""
    from kvision.models.contract import attach_contract

    return attach_contract(model, contract)


def check_functional(model, argument: str = "model") -> None:
    """tfmot only rewrites Sequential and functional models; raise a clear error otherwise."""
    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False):
        return
    raise InputValueError(
        f"`{argument}` is a subclassed tf_keras model ({type(model).__name__}); pruning, "
        "clustering and quantization-aware training need a Sequential or functional model. "
        "Rebuild it with the functional API (kvision.models builders are functional)."
    )


def copy_model(model):
    """An independent copy (new layers, same weights) so a technique never mutates the input.

    Nested models are inlined first (:func:`kvision.compress.flatten.flatten_model`), so the copy
    is one functional model whose layers are all leaves: every technique reaches every layer.
    """
    from kvision.compress._tfmot import unsafe_clone_scope
    from kvision.compress.flatten import flatten_model

    check_functional(model)
    contract = contract_of(model)
    model = flatten_model(model)
    with unsafe_clone_scope():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return with_contract(clone, contract)


def clone_with(model, wrap):
    """Clone ``model`` replacing each (non-input) layer by ``wrap(layer)``; nested Sequential and
    functional models recurse (a nested subclassed model is passed to ``wrap`` as one layer).

    ``wrap`` receives the layer of ``model`` itself and may return it unchanged (shared weights):
    call it on a :func:`copy_model` copy when the original must stay untouched.
    """
    from kvision.compress._tfmot import unsafe_clone_scope
    from kvision.compress.flatten import is_graph_model

    def fn(layer):
        if is_graph_model(layer):
            return keras.models.clone_model(layer, clone_function=fn)
        return wrap(layer)

    with unsafe_clone_scope():
        clone = keras.models.clone_model(model, clone_function=fn)
    return with_contract(clone, contract_of(model))


def flat_layers(model) -> list:
    """All non-input layers in model order, nested Sequential/functional models expanded (a
    nested subclassed model is one entry)."""
    from kvision.compress.flatten import is_graph_model

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if is_graph_model(layer):
            out.extend(flat_layers(layer))
        else:
            out.append(layer)
    return out


def nested_model_reason(layer, what: str) -> str | None:
    """Why ``layer`` is left as it is when it is a nested model kvision could not inline.

    ``what`` names the technique's action (``"pruned"``, ``"quantized"``, ``"clustered"``).
    """
    if not isinstance(layer, keras.Model):
        return None
    return (
        f"nested subclassed model {type(layer).__name__}: kvision can only inline nested "
        f"Sequential/functional models, so none of its layers is {what} (rebuild it with the "
        "functional API to compress its layers)"
    )
