"""Model plumbing shared by the techniques: copy, clone layer by layer, keep the input contract."""

from __future__ import annotations

from kvision._keras import keras


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
    raise ValueError(
        f"`{argument}` is a subclassed tf_keras model ({type(model).__name__}); pruning, "
        "clustering and quantization-aware training need a Sequential or functional model. "
        "Rebuild it with the functional API (kvision.models builders are functional)."
    )


def copy_model(model):
    """An independent copy (new layers, same weights) so a technique never mutates the input."""
    from kvision.compress._tfmot import unsafe_clone_scope

    check_functional(model)
    with unsafe_clone_scope():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return with_contract(clone, contract_of(model))


def clone_with(model, wrap):
    """Clone ``model`` replacing each (non-input) layer by ``wrap(layer)``; nested models recurse.

    ``wrap`` receives the layer of ``model`` itself and may return it unchanged (shared weights):
    call it on a :func:`copy_model` copy when the original must stay untouched.
    """
    from kvision.compress._tfmot import unsafe_clone_scope

    def fn(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=fn)
        return wrap(layer)

    with unsafe_clone_scope():
        clone = keras.models.clone_model(model, clone_function=fn)
    return with_contract(clone, contract_of(model))


def flat_layers(model) -> list:
    """All non-input layers in model order, nested models expanded."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            out.extend(flat_layers(layer))
        else:
            out.append(layer)
    return out
