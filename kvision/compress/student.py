"""A thinner student initialized from its teacher: keep each layer's most important channels.

Distilling into a student trained from scratch needs as many epochs as the teacher took. A
student of the *same architecture at a smaller width* can instead start from the teacher's
weights: every channel group (the channels one convolution writes, together with the
BatchNormalization, activation, depthwise convolution and residual additions that share them)
keeps its ``k`` most important channels, ranked by the L1 norm of the filters that write them
(Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017), and the student is then
distilled from the teacher (Hinton et al., 2015) to recover what the cut channels carried. This is
the prune-then-distill recipe of Sreenivas et al., "LLM Pruning and Distillation in Practice: The
Minitron Approach" (2024), applied to a CNN's width.

``init_from_teacher(student, teacher)`` works on functional tf_keras models whose layers have the
same names and classes (e.g. ``compact_mobilenet`` at two widths). It returns ``None`` and leaves
the student untouched when the graphs differ or a layer kind whose channels it cannot follow is
met (Concatenate, Flatten, grouped convolutions): the caller then trains from scratch.

Example:
    >>> teacher = build_model("compact_mobilenet", (28, 28, 1), 10)
    >>> student = build_model("compact_mobilenet", (28, 28, 1), 10, width=0.6)
    >>> info = init_from_teacher(student, teacher)
    >>> info["groups"] > 0
    True
"""

from __future__ import annotations

import numpy as np

from kvision._keras import keras

layers = keras.layers

# Layers whose output channels are their input channels (channel i in -> channel i out).
_PASS_THROUGH = (
    layers.BatchNormalization,
    layers.ReLU,
    layers.Activation,
    layers.Dropout,
    layers.GlobalAveragePooling2D,
    layers.GlobalMaxPooling2D,
    layers.MaxPooling2D,
    layers.AveragePooling2D,
    layers.ZeroPadding2D,
    layers.LeakyReLU,
    layers.Softmax,
)
_MERGE = (layers.Add, layers.Multiply, layers.Maximum, layers.Minimum, layers.Average)


class _Unsupported(Exception):
    pass


class _Groups:
    """Union-find over channel groups: tensors whose channels must be selected together."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def add(self, key: str) -> str:
        self.parent.setdefault(key, key)
        return key

    def find(self, key: str) -> str:
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        self.parent[key] = root
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _inbound(layer) -> list[str]:
    """Names of the layers feeding ``layer`` (first call site)."""
    node = layer.inbound_nodes[0]
    inbound = node.inbound_layers
    inbound = inbound if isinstance(inbound, list | tuple) else [inbound]
    return [lyr.name for lyr in inbound]


def _channel_graph(model):
    """``(groups, out_group, in_group)``: the channel group each layer writes, and reads."""
    groups = _Groups()
    out_group: dict[str, str] = {}
    in_group: dict[str, str] = {}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            out_group[layer.name] = groups.add(f"input:{layer.name}")
            continue
        parents = _inbound(layer)
        if isinstance(layer, layers.DepthwiseConv2D):
            if layer.depth_multiplier != 1:
                raise _Unsupported(f"{layer.name}: depth_multiplier {layer.depth_multiplier}")
            in_group[layer.name] = out_group[parents[0]]
            out_group[layer.name] = out_group[parents[0]]
        elif isinstance(layer, layers.Conv2DTranspose):
            raise _Unsupported(f"{layer.name}: Conv2DTranspose (kernel laid out out, in)")
        elif isinstance(layer, layers.Conv2D | layers.Dense):
            if getattr(layer, "groups", 1) != 1:
                raise _Unsupported(f"{layer.name}: grouped convolution")
            in_group[layer.name] = out_group[parents[0]]
            out_group[layer.name] = groups.add(f"out:{layer.name}")
        elif isinstance(layer, _PASS_THROUGH):
            out_group[layer.name] = out_group[parents[0]]
        elif isinstance(layer, _MERGE):
            first = out_group[parents[0]]
            for other in parents[1:]:
                groups.union(first, out_group[other])
            out_group[layer.name] = first
        else:
            raise _Unsupported(f"{layer.name}: {type(layer).__name__} layers")
    return groups, out_group, in_group


def _sizes(model, groups, out_group) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for layer in model.layers:
        shape = layer.output_shape
        shape = shape[0] if isinstance(shape, list) else shape
        root = groups.find(out_group[layer.name])
        channels = int(shape[-1])
        if sizes.setdefault(root, channels) != channels:
            raise _Unsupported(f"{layer.name}: channels differ inside one group")
    return sizes


def init_from_teacher(student, teacher) -> dict | None:
    """Set ``student``'s weights to the teacher's most important channels.

    Args:
        student: functional tf_keras model, the teacher's architecture at a smaller width
            (same layer names and classes, each channel group as wide or narrower).
        teacher: the trained functional tf_keras model.

    Returns:
        ``{"groups": int, "kept_fraction": float, "layers": int}`` (channel groups cut, the
        fraction of teacher channels kept over all groups, layers copied), or ``None`` when the
        student cannot be mapped onto the teacher (it is then left as it was).
    """
    t_names = [(lyr.name, type(lyr)) for lyr in teacher.layers]
    s_names = [(lyr.name, type(lyr)) for lyr in student.layers]
    if t_names != s_names:
        return None
    try:
        t_groups, t_out, t_in = _channel_graph(teacher)
        s_groups, s_out, _ = _channel_graph(student)
        t_sizes = _sizes(teacher, t_groups, t_out)
        s_sizes = _sizes(student, s_groups, s_out)
    except (_Unsupported, IndexError, KeyError):
        return None

    # the student group of each teacher group (same producing layer, same structure)
    target: dict[str, int] = {}
    for name, _ in t_names:
        t_root, s_root = t_groups.find(t_out[name]), s_groups.find(s_out[name])
        size = s_sizes[s_root]
        if target.setdefault(t_root, size) != size or size > t_sizes[t_root]:
            return None
    fixed = {t_groups.find(t_out[lyr.name]) for lyr in teacher.layers if not lyr.outbound_nodes}
    fixed |= {t_groups.find(t_out[lyr.name]) for lyr in teacher.layers
              if isinstance(lyr, layers.InputLayer)}  # fmt: skip
    if any(target[g] != t_sizes[g] for g in fixed):
        return None  # classes or input channels differ

    selection = _select(teacher, t_groups, t_out, target, t_sizes)
    planned = []  # every slice is made and checked before any student weight is set
    for t_layer in teacher.layers:
        weights = t_layer.get_weights()
        if not weights:
            continue
        s_layer = student.get_layer(t_layer.name)
        out_idx = selection[t_groups.find(t_out[t_layer.name])]
        in_idx = selection[t_groups.find(t_in[t_layer.name])] if t_layer.name in t_in else None
        new = [_slice(t_layer, w, in_idx, out_idx) for w in weights]
        if [w.shape for w in new] != [w.shape for w in s_layer.get_weights()]:
            return None
        planned.append((s_layer, new))
    for s_layer, new in planned:
        s_layer.set_weights(new)
    copied = len(planned)
    cut = [g for g in target if target[g] < t_sizes[g]]
    kept = sum(target.values()) / max(1, sum(t_sizes.values()))
    return {"groups": len(cut), "kept_fraction": round(kept, 4), "layers": copied}


def _select(teacher, groups, out_group, target, sizes) -> dict[str, np.ndarray]:
    """The kept channel indices of every group: top-k by the L1 norm of the filters writing
    them, each producing layer's norms divided by their mean so no layer dominates."""
    score = {g: np.zeros(n) for g, n in sizes.items()}
    for layer in teacher.layers:
        if isinstance(layer, layers.Conv2D | layers.Dense) and not isinstance(
            layer, layers.DepthwiseConv2D
        ):
            kernel = layer.get_weights()[0]
            norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)
            score[groups.find(out_group[layer.name])] += norms / (norms.mean() + 1e-12)
    selection = {}
    for g, k in target.items():
        order = np.argsort(-score[g], kind="stable")[:k]
        selection[g] = np.sort(order)
    return selection


def _slice(layer, weight: np.ndarray, in_idx, out_idx) -> np.ndarray:
    """``weight`` of ``layer`` restricted to the kept input/output channels."""
    if isinstance(layer, layers.DepthwiseConv2D):
        return weight[:, :, out_idx, :] if weight.ndim == 4 else weight[out_idx]
    if isinstance(layer, layers.Conv2D | layers.Dense):
        if weight.ndim >= 2:  # kernel: (..., in, out)
            return weight[..., in_idx, :][..., out_idx]
        return weight[out_idx]  # bias
    return weight[out_idx]  # BatchNormalization gamma/beta/mean/variance
