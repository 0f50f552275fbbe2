"""Transfer learning: a backbone with a new head, frozen and unfrozen block by block.

``build_transfer_model`` takes a registered model name (ImageNet-style backbones with a local
``weights`` file) or a kvision-trained classifier (a tf_keras model or a saved model file, e.g.
an MNIST model reused for Fashion-MNIST), cuts the old head (the final Dense classifier and the
Dropout layers before it) and attaches a new one (``dropout`` + Dense softmax ``probabilities``).
The result is one flat functional model (tfmot rejects nested models), returned with the backbone
frozen. ``set_trainable_blocks`` then unfreezes the top N blocks for fine-tuning::

    model = build_transfer_model("runs/mnist/checkpoints/best.keras", num_classes=10,
                                 labels=fashion_labels)
    set_trainable_blocks(model, 0)   # phase 1: train the head only
    set_trainable_blocks(model, 2)   # phase 2: also the top two backbone blocks

BatchNormalization layers always stay frozen (``trainable=False``), which in tf_keras also makes
them run in inference mode: their moving statistics never change, whatever ``training`` is.

Blocks: the backbone layers (everything but the input and the head) in topological order,
grouped by the layer-name pattern of the model's family (:func:`block_families`, detected from
marker layer names). ``"prefix"`` patterns name a layer's block in group 1 and layers that do not
match join the block before them (the first ones form ``"stem"``); ``"end"`` patterns match the
last layer of each block. Unknown models fall back to one block per layer with weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kvision._keras import keras, load_model, require_tf_keras_model
from kvision.errors import InputTypeError, InputValueError

layers = keras.layers


@dataclass(frozen=True)
class BlockFamily:
    """How to split one model family into blocks.

    Args:
        name: family name (the registered model name).
        markers: layer names that identify the family (all must be present).
        pattern: regex on layer names (see the module docstring).
        mode: ``"prefix"`` or ``"end"``.
    """

    name: str
    markers: tuple[str, ...]
    pattern: str
    mode: str = "prefix"


_KVISION_FAMILIES = (
    BlockFamily("compact_mobilenet", ("stem_conv", "block1_1_dw"), r"^(block\d+_\d+)_"),
    BlockFamily("small_resnet", ("stem_conv", "stage1_block1_add"), r"^(stage\d+_block\d+)_"),
    BlockFamily("lenet", ("conv1", "pool1"), r"^(conv\d+|fc\d+)(?:_|$)"),
)

GENERIC = BlockFamily("generic", (), "", mode="layer")


def block_families() -> list[BlockFamily]:
    """All known families: the ``tf_keras.applications`` ones, then kvision's own models."""
    from kvision.models.applications import APPLICATIONS

    apps = [
        BlockFamily(a.name, (a.marker,), a.block_pattern, a.block_mode)
        for a in APPLICATIONS.values()
    ]
    return apps + list(_KVISION_FAMILIES)


def detect_family(model) -> BlockFamily:
    """The family of ``model`` from its layer names (:data:`GENERIC` when none matches)."""
    names = {layer.name for layer in model.layers}
    for family in block_families():
        if all(marker in names for marker in family.markers):
            return family
    return GENERIC


def classifier_head(model) -> list:
    """The head layers of a classifier: its output Dense (+ activation) and the Dropouts before.

    Raises ``ValueError`` when the model does not end in a Dense classifier.
    """
    require_tf_keras_model(model)
    if len(model.outputs) != 1:
        raise InputValueError(
            f"`model` should have one output (a classifier). "
            f"Received a model with {len(model.outputs)} outputs."
        )
    layer = model.get_layer(model.output_names[0])
    head = []
    if isinstance(layer, (layers.Activation, layers.Softmax)):
        head.append(layer)
        layer = _previous(layer)
    if not isinstance(layer, layers.Dense):
        raise InputValueError(
            f"`model` should end in a Dense classifier (optionally followed by an "
            f"activation). Received a model ending in {type(layer).__name__} "
            f"`{layer.name}`."
        )
    head.append(layer)
    previous = _previous(layer)
    while isinstance(previous, layers.Dropout):
        head.append(previous)
        previous = _previous(previous)
    return head


def backbone_blocks(model, family: str | None = None) -> list[tuple[str, list]]:
    """The backbone of ``model`` as ``[(block_name, [layers...]), ...]``, input side first.

    Args:
        model: a tf_keras classifier (its head is left out).
        family: a family name from :func:`block_families`, ``"generic"``, or ``None`` to detect.

    Example:
        >>> m = build_model("lenet", (28, 28, 1), 10)  # doctest: +SKIP
        >>> [name for name, _ in backbone_blocks(m)]  # doctest: +SKIP
        ['conv1', 'conv2', 'fc1']
    """
    spec = _family(model, family)
    head = {id(layer) for layer in classifier_head(model)}
    body = [
        layer
        for layer in model.layers
        if id(layer) not in head and not isinstance(layer, layers.InputLayer)
    ]
    blocks: dict[str, list] = {}
    if spec.mode == "end":
        end, current = re.compile(spec.pattern), []
        for layer in body:
            current.append(layer)
            if end.match(layer.name):
                blocks[layer.name], current = current, []
        if current:  # after the last block's end: joins that block
            blocks.setdefault(next(reversed(blocks), "stem"), []).extend(current)
        return [(name, group) for name, group in blocks.items()]
    prefix, key = re.compile(spec.pattern), "stem"
    for layer in body:
        if spec.mode == "layer":
            if layer.weights and not isinstance(layer, layers.BatchNormalization):
                key = layer.name
        else:
            match = prefix.match(layer.name)
            key = match.group(1) if match else key
        blocks.setdefault(key, []).append(layer)
    return [(name, group) for name, group in blocks.items()]


def set_trainable_blocks(model, n_blocks: int, family: str | None = None) -> list[str]:
    """Freeze the backbone of ``model`` except its top ``n_blocks`` blocks; the head trains.

    BatchNormalization layers stay frozen everywhere (inference mode, fixed statistics). Keras
    needs a recompile after this (:func:`kvision.train.fit` compiles itself).

    Args:
        model: a tf_keras classifier.
        n_blocks: number of top backbone blocks to train (0 = head only).
        family: block family (default: detected, see :func:`backbone_blocks`).

    Returns:
        The names of the unfrozen blocks.

    Example:
        >>> set_trainable_blocks(model, 2)  # doctest: +SKIP
        ['conv2', 'fc1']
    """
    blocks = backbone_blocks(model, family)
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0:
        raise InputValueError(
            f"`n_blocks` should be an integer >= 0. Received: n_blocks={n_blocks!r}"
        )
    if n_blocks > len(blocks):
        raise InputValueError(
            f"`n_blocks` should be at most {len(blocks)}, the number of blocks of "
            f"this model ({', '.join(name for name, _ in blocks)}). "
            f"Received: n_blocks={n_blocks}"
        )
    model.trainable = True
    top = blocks[len(blocks) - n_blocks :]
    for _, group in blocks[: len(blocks) - n_blocks]:
        for layer in group:
            layer.trainable = False
    for _, group in top:
        for layer in group:
            layer.trainable = True
    for layer in classifier_head(model):
        layer.trainable = True
    for layer in model.submodules:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    return [name for name, _ in top]


def build_transfer_model(
    backbone,
    num_classes: int,
    input_shape=None,
    dropout: float = 0.2,
    labels=None,
    weights=None,
    **options,
):
    """A classifier for ``num_classes`` on top of ``backbone``, with the backbone frozen.

    Args:
        backbone: a registered model name (see :func:`kvision.models.list_models`), a tf_keras
            classifier, or the path of a saved one (``.keras``, ``.h5``, SavedModel); an in-memory
            model is copied, not modified.
        num_classes: number of classes of the new head.
        input_shape: ``(height, width, channels)``; required with a model name; with a model it
            must match the model's input (default: the model's).
        dropout: dropout before the new classifier (default 0.2).
        labels: class names for the contract (default ``"0".."N-1"``).
        weights: only with a model name: ``None`` or a local weights file of the backbone.
        **options: only with a model name: builder options (e.g. ``alpha``).

    Returns:
        A flat functional tf_keras model with ``model.kvision_contract`` (scale and offset taken
        from the backbone's contract, labels from ``labels``).

    Example:
        >>> m = build_transfer_model("runs/mnist/checkpoints/best.keras", 10)  # doctest: +SKIP
        >>> m.output_shape  # doctest: +SKIP
        (None, 10)
    """
    from kvision.models.contract import InputContract, attach_contract
    from kvision.models.registry import build_model, list_models

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputValueError(
            f"`num_classes` should be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    if not 0 <= dropout < 1:
        raise InputValueError(f"`dropout` should be in [0, 1). Received: dropout={dropout}")
    labels = list(labels) if labels is not None else [str(i) for i in range(num_classes)]
    if len(labels) != num_classes:
        raise InputValueError(
            f"`labels` should have {num_classes} names (num_classes). "
            f"Received {len(labels)}: {labels}"
        )
    if isinstance(backbone, str) and backbone in list_models():
        if input_shape is None:
            raise InputValueError(
                f"`input_shape` is required to build the registered model "
                f"`{backbone}`. Received: input_shape=None"
            )
        if weights is not None:
            options["weights"] = weights
        model = build_model(
            backbone, input_shape, num_classes, labels=labels, dropout=dropout, **options
        )
        set_trainable_blocks(model, 0)
        return model

    if weights is not None or options:
        given = (["weights"] if weights is not None else []) + sorted(options)
        raise InputTypeError(
            f"{given} only apply when `backbone` is a registered model name. "
            f"Received: backbone={_describe(backbone)}"
        )
    source, contract = _load_classifier(backbone)
    model_shape = tuple(int(v) for v in source.input_shape[1:])
    if input_shape is not None and tuple(int(v) for v in input_shape) != model_shape:
        raise InputValueError(
            f"`input_shape` should match the backbone's input {model_shape} (resize "
            f"the images instead). Received: input_shape={tuple(input_shape)}"
        )
    features = classifier_head(source)[-1].input
    x = layers.Dropout(dropout, name="dropout")(features) if dropout else features
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(source.inputs, outputs, name=source.name)
    new_contract = InputContract(
        *model_shape,
        scale=contract.scale,
        offset=contract.offset,
        labels=labels,
        task=contract.task,
        input_domain=contract.input_domain,
    )
    set_trainable_blocks(model, 0)
    return attach_contract(model, new_contract)


def _load_classifier(backbone):
    """``(independent copy of the classifier, its contract)`` from a model or a model file."""
    from kvision.models.contract import InputContract

    if isinstance(backbone, (str, Path)):
        path = Path(backbone)
        if not path.exists():
            from kvision.models.registry import list_models

            raise FileNotFoundError(
                f"`backbone` should be a registered model name "
                f"({', '.join(list_models())}) or an existing model file. "
                f"Not found: {path}"
            )
        model = load_model(path)
        return model, InputContract.for_model_file(path, model)
    require_tf_keras_model(backbone, "backbone")
    copy = keras.models.clone_model(backbone)
    copy.set_weights(backbone.get_weights())
    return copy, InputContract.from_model(backbone)


def _family(model, family: str | None) -> BlockFamily:
    if family is None:
        return detect_family(model)
    known = {f.name: f for f in [*block_families(), GENERIC]}
    if family not in known:
        raise InputValueError(f"Unknown block family `{family}`. Available: {', '.join(known)}.")
    return known[family]


def _previous(layer):
    """The layer feeding single-input ``layer`` (``None`` for an input layer)."""
    nodes = layer.inbound_nodes
    if not nodes:
        return None
    inbound = nodes[0].inbound_layers
    if isinstance(inbound, (list, tuple)):
        return inbound[0] if len(inbound) == 1 else None
    return inbound


def _describe(obj) -> str:
    return repr(obj) if isinstance(obj, (str, Path)) else type(obj).__name__
