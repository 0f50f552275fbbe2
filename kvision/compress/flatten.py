"""Flatten nested models into one functional model of leaf layers: same weights, same outputs.

tfmot wraps the layers of the model it is given, not the layers of a model used as a layer inside
it: a ``Sequential`` backbone inside a ``Sequential``, or a functional model that calls a
sub-model, would get pruning, QAT or clustering on its outer layers only. :func:`flatten_model`
rebuilds such a model as one functional graph of its leaf layers (copies, with the original
weights), so every technique reaches every layer and the per-layer report names each of them.

Example::

    flat = flatten_model(model)               # `model` itself when nothing is nested
    origins = nested_origins(model)           # {"conv": "backbone", ...}: where layers came from
"""

from __future__ import annotations

import inspect

from kvision._keras import keras
from kvision.errors import InputValueError


def is_graph_model(layer) -> bool:
    """True for a ``Sequential`` or functional model (whose layers can be inlined)."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and bool(getattr(layer, "_is_graph_network", False))
    )


def has_nested_models(model) -> bool:
    """True when a layer of ``model`` (a Sequential or functional model) is itself a model."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten_model(model, origins: dict | None = None):
    """``model`` as one functional model of its leaf layers (nested models inlined).

    Nested ``Sequential`` and functional models, at any depth, are replaced by their layers. A
    ``training`` argument a nested model was called with (``backbone(x, training=False)``, the
    usual way to keep BatchNormalization in inference mode) is passed on to its layers, as Keras
    does. Layers are copies (``from_config``) holding the original weights and ``trainable``
    flags; the input model is not changed. A nested layer whose name is already taken is renamed
    ``<nested model>_<layer>`` (see :func:`nested_origins`). A nested *subclassed* model cannot be
    inlined and stays one layer.

    Args:
        model: a tf_keras ``Sequential`` or functional model.
        origins: optional dict, filled with :func:`nested_origins` (flat layer name -> the
            nested model path it came from).

    Returns:
        ``model`` itself when it is functional and nothing is nested; otherwise a new functional
        model with the same name, inputs, outputs and weights (the input contract is kept).

    Raises:
        ValueError: ``model`` is a subclassed model, or a layer cannot be copied (no
            ``get_config``) or is called in a way that cannot be inlined (the layer is named).

    Example:
        >>> flat = flatten_model(outer)
        >>> np.allclose(flat.predict(x), outer.predict(x))
        True
    """
    from kvision.compress._models import check_functional, contract_of, with_contract

    check_functional(model)
    if not has_nested_models(model) and not isinstance(model, keras.Sequential):
        return model
    builder = _Builder(model)
    flat = builder.build()
    if origins is not None:
        origins.update(builder.origins)
    return with_contract(flat, contract_of(model))


def nested_origins(model) -> dict[str, str]:
    """Layer name in :func:`flatten_model`'s result -> the nested model(s) it came from.

    Only layers that were inside a nested model are listed; the path joins model names with
    ``/`` (``"backbone/block1"``). Empty when nothing is nested.
    """
    origins: dict[str, str] = {}
    flatten_model(model, origins)
    return origins


class _Builder:
    """Walks the (nested) graph of ``model`` and calls copies of its leaf layers on new inputs."""

    def __init__(self, model):
        self.model = model
        self.copies: dict[int, object] = {}  # id(original layer) -> copy
        self.originals: list = []
        self.origins: dict[str, str] = {}
        # the outer model keeps its layer names; nested layers are renamed on a clash
        self.taken = {layer.name for layer in model.layers if not isinstance(layer, keras.Model)}
        self.taken |= {layer.name for layer in getattr(model, "_input_layers", [])}

    def build(self):
        from kvision.compress._tfmot import unsafe_clone_scope

        model = self.model
        input_layers = getattr(model, "_input_layers", None) or []
        if not model.inputs or len(input_layers) != len(model.inputs):
            raise InputValueError(
                f"Model {model.name!r} has no defined input: build it with `keras.Input(...)` "
                "(or `input_shape=` on its first layer) before compressing it."
            )
        inputs = [
            keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=layer.name)
            for t, layer in zip(model.inputs, input_layers, strict=True)
        ]
        with unsafe_clone_scope():
            outputs = self._apply(model, inputs, None, ())
        import tensorflow as tf

        nested_outputs = getattr(model, "_nested_outputs", model.outputs)
        outputs = tf.nest.pack_sequence_as(nested_outputs, outputs)
        flat = keras.Model(inputs, outputs, name=model.name)
        for original in self.originals:
            self.copies[id(original)].set_weights(original.get_weights())
        return flat

    # -- graph walking ----------------------------------------------------------------------
    def _apply(self, model, inputs: list, training, path: tuple) -> list:
        """Call (copies of) ``model``'s layers on ``inputs``; returns its flat output list."""
        if isinstance(model, keras.Sequential):
            return self._apply_sequential(model, inputs, training, path)
        import tensorflow as tf

        tensors = {id(t): new for t, new in zip(model.inputs, inputs, strict=True)}
        for depth in sorted(model._nodes_by_depth, reverse=True):  # noqa: SLF001
            for node in model._nodes_by_depth[depth]:  # noqa: SLF001
                if node.is_input:
                    continue
                args = tf.nest.map_structure(lambda t: tensors.get(id(t), t), node.call_args)
                kwargs = tf.nest.map_structure(lambda t: tensors.get(id(t), t), node.call_kwargs)
                outputs = self._call(node.layer, list(args), dict(kwargs), training, path)
                for old, new in zip(
                    tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True
                ):
                    tensors[id(old)] = new
        return [tensors[id(t)] for t in model.outputs]

    def _apply_sequential(self, model, inputs: list, training, path: tuple) -> list:
        if len(inputs) != 1:
            raise InputValueError(f"Sequential model {model.name!r} got {len(inputs)} inputs.")
        x = inputs[0]
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            x = self._call(layer, [x], {}, training, path)
        return [x]

    def _call(self, layer, args: list, kwargs: dict, training, path: tuple):
        import tensorflow as tf

        explicit = kwargs.pop("training", None)
        training = explicit if explicit is not None else training
        mask = kwargs.pop("mask", None)
        if mask is not None:
            raise InputValueError(
                f"Layer {layer.name!r} is called with a mask; kvision cannot inline masked "
                "nested models."
            )
        if is_graph_model(layer):
            if kwargs or len(args) > 2 or (len(args) == 2 and not isinstance(args[1], bool)):
                raise InputValueError(
                    f"Nested model {layer.name!r} is called with arguments kvision cannot "
                    f"inline: {sorted(kwargs) or args[1:]}."
                )
            if len(args) == 2:
                training = args[1]
            outputs = self._apply(layer, tf.nest.flatten(args[0]), training, (*path, layer.name))
            nested = getattr(layer, "_nested_outputs", None)
            if isinstance(layer, keras.Sequential) or nested is None:
                return outputs[0] if len(outputs) == 1 else outputs
            return tf.nest.pack_sequence_as(nested, outputs)
        copy = self._copy(layer, path)
        if training is not None and _expects_training(copy):
            kwargs["training"] = training
        return copy(*args, **kwargs)

    def _copy(self, layer, path: tuple):
        if id(layer) in self.copies:
            return self.copies[id(layer)]
        name = layer.name
        if path:
            if name in self.taken:
                base, n = f"{path[-1]}_{layer.name}", 2
                name = base
                while name in self.taken:
                    name, n = f"{base}_{n}", n + 1
            self.origins[name] = "/".join(path)
        self.taken.add(name)
        try:
            config = layer.get_config()
        except NotImplementedError as exc:
            raise InputValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no get_config(), so the "
                "model cannot be copied for compression; implement get_config()."
            ) from exc
        config["name"] = name
        copy = layer.__class__.from_config(config)
        self.copies[id(layer)] = copy
        self.originals.append(layer)
        return copy


def _expects_training(layer) -> bool:
    expects = getattr(layer, "_expects_training_arg", None)
    if expects is not None:
        return bool(expects)
    return "training" in inspect.signature(layer.call).parameters
