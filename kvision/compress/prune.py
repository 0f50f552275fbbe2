"""Magnitude pruning with a schedule that really reaches its target, M:N structure, strip.

tfmot prunes on steps where ``(step - begin) % frequency == 0`` inside ``[begin, end]``, and the
polynomial schedule only reaches its final sparsity on the ``end`` step itself. Its default
``frequency=100`` therefore gives 0 % sparsity to a run shorter than 100 steps, and any ``end`` that
is not ``begin + k * frequency`` stops short of the target. :func:`resolve_schedule` derives the
steps from the real length of the run so that ``end`` is always a pruning step.

Layers are wrapped one by one (not with tfmot's whole-model call), so a layer tfmot cannot prune
(a ``Lambda`` or custom layer) is left dense with a reason in the :class:`LayerReport` instead of
failing the run.

Example::

    pruned, report, schedule = prune_model(model, PruneConfig(target_sparsity=0.8), total_steps=400)
    finetune(pruned, train_ds, epochs=2, callbacks=pruning_callbacks())
    dense_shape = strip(pruned)             # plain tf_keras model with zeros in its kernels
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kvision.compress import _tfmot
from kvision.compress._models import clone_with, copy_model, flat_layers, nested_model_reason
from kvision.compress.config import PruneConfig
from kvision.compress.layer_report import LayerReport
from kvision.errors import InputValueError

_UPDATES = 10  # pruning updates spread over [begin, end] when the frequency is derived


@dataclass
class PruneSchedule:
    """The resolved schedule in steps (what tfmot gets)."""

    kind: str
    initial_sparsity: float
    target_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    total_steps: int

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_schedule(cfg: PruneConfig, total_steps: int) -> PruneSchedule:
    """Turn ``cfg``'s begin/end (steps or fractions) into steps that reach the target.

    Args:
        cfg: pruning settings.
        total_steps: fine-tuning steps of the whole run (epochs * steps per epoch).

    Raises:
        ValueError: the run is too short for the requested window (names the numbers).

    Example:
        >>> s = resolve_schedule(PruneConfig(begin=0.0, end=0.5), total_steps=40)
        >>> (s.begin_step, s.end_step, s.frequency)
        (0, 20, 2)
    """
    total_steps = int(total_steps)
    if total_steps < 2:
        raise InputValueError(
            f"Pruning needs at least 2 fine-tuning steps. Received: total_steps={total_steps}"
        )
    last = total_steps - 1  # steps are numbered 0 .. total_steps - 1

    def to_step(value) -> int:
        # A float <= 1 is a fraction of the run; anything else is a step number.
        if isinstance(value, float) and value <= 1.0:
            return int(round(value * total_steps))
        return int(value)

    begin = min(to_step(cfg.begin), last - 1)
    end = min(max(to_step(cfg.end), begin + 1), last)
    if cfg.frequency is None:
        frequency = max(1, (end - begin) // _UPDATES)
    else:
        frequency = int(cfg.frequency)
        if frequency > end - begin:
            raise InputValueError(
                f"`frequency`={frequency} is longer than the pruning window "
                f"[{begin}, {end}] of a {total_steps}-step run: no update would reach the "
                "target. Use frequency=None (derived) or a smaller value."
            )
    end = begin + (end - begin) // frequency * frequency  # `end` must be a pruning step
    return PruneSchedule(
        cfg.schedule,
        cfg.initial_sparsity if cfg.schedule == "polynomial" else cfg.target_sparsity,
        cfg.target_sparsity,
        begin,
        end,
        frequency,
        total_steps,
    )


def _tfmot_schedule(s: PruneSchedule, target: float | None = None):
    """tfmot's schedule for ``s``, ending at ``target`` (a layer's own sparsity) if given."""
    target = s.target_sparsity if target is None else target
    if s.kind == "polynomial":
        initial = min(s.initial_sparsity, target)
        return _tfmot.polynomial_decay(initial, target, s.begin_step, s.end_step, s.frequency)
    return _tfmot.constant_sparsity(target, s.begin_step, s.end_step, s.frequency)


_MAX_LAYER_SPARSITY = 0.98  # a layer keeps at least 2 % of its weights


def lamp_sparsities(kernels: dict, target: float) -> dict[str, float]:
    """Per-layer sparsities that remove ``target`` of all the weights, chosen by LAMP scores.

    LAMP (Lee et al., "Layer-adaptive sparsity for the magnitude-based pruning", ICLR 2021)
    scores a weight ``u`` of a layer by ``w_u^2 / sum(w_v^2 for v at least as large as u)``. The
    score is invariant to rescaling a layer, so one global threshold compares layers fairly: a
    layer with many small, redundant weights is pruned harder than a small layer whose weights
    all matter. Within a layer the order is plain magnitude, which is what tfmot prunes by.

    Args:
        kernels: layer name -> weight array (the weights tfmot will prune).
        target: overall fraction of weights to remove, in (0, 1).

    Returns:
        layer name -> sparsity in [0, 0.98]; the weighted mean is ``target`` (up to the cap).

    Example:
        >>> s = lamp_sparsities({"big": np.random.randn(4096), "small": np.random.randn(64)}, 0.8)
        >>> s["big"] > 0.8 > s["small"]
        True
    """
    scores = {}
    for name, w in kernels.items():
        sq = np.sort(np.square(np.asarray(w, np.float64).ravel()))
        tail = np.cumsum(sq[::-1])[::-1]  # sum of the squares of this weight and larger ones
        scores[name] = sq / np.maximum(tail, np.finfo(np.float64).tiny)
    every = np.sort(np.concatenate(list(scores.values())))
    k = min(int(round(target * every.size)), every.size - 1)
    threshold = every[k]
    return {
        name: min(float(np.mean(s < threshold)), _MAX_LAYER_SPARSITY) for name, s in scores.items()
    }


def _kernels(layer) -> list:
    """The weight arrays tfmot prunes in ``layer``."""
    if hasattr(layer, "get_prunable_weights"):
        return [w.numpy() for w in layer.get_prunable_weights()]
    names = _tfmot.prunable_weights(layer) or []
    return [getattr(layer, n).numpy() for n in names if hasattr(layer, n)]


def prune_model(model, cfg: PruneConfig, total_steps: int):
    """Wrap ``model``'s prunable layers for magnitude pruning (the input model is not changed).

    Args:
        model: trained tf_keras functional/Sequential model (no augmentation layers inside).
        cfg: pruning settings.
        total_steps: fine-tuning steps the wrapped model will be trained for.

    Returns:
        ``(pruned_model, report, schedule)``: the wrapped model (fit it with
        :func:`pruning_callbacks`), a :class:`LayerReport` and the resolved
        :class:`PruneSchedule`.

    Raises:
        ValueError: ``xnnpack_policy`` is set and the model does not fit tfmot's XNNPACK policy
            (the message says what the policy needs), or nothing in the model can be pruned.

    Example:
        >>> pruned, report, s = prune_model(model, PruneConfig(m_by_n=[2, 4]), total_steps=50)
        >>> report.count("pruned") > 0
        True
    """
    _tfmot.check_model(model)
    schedule = resolve_schedule(cfg, total_steps)
    base = copy_model(model)
    policy = None
    if cfg.xnnpack_policy:
        policy = _tfmot.xnnpack_policy()
        try:
            policy.ensure_model_supports_pruning(base)
        except ValueError as exc:
            raise InputValueError(
                "prune.xnnpack_policy=True needs a model XNNPACK's sparse inference can use: "
                f"{exc}. Set prune.xnnpack_policy=False to prune without the policy."
            ) from exc
    report = LayerReport("prune")
    structure = tuple(cfg.m_by_n) if cfg.m_by_n else None
    sparsity_text = (
        f"{structure[0]}:{structure[1]} structured"
        if structure
        else f"{cfg.target_sparsity:.0%} ({schedule.kind})"
    )
    layers = flat_layers(base)
    decisions = {layer.name: _decide(layer, cfg, structure, policy) for layer in layers}
    targets = {}  # layer -> its own final sparsity (LAMP allocation)
    if cfg.allocation == "lamp" and not structure:
        pruned_kernels = {
            layer.name: _kernels(layer) for layer in layers if decisions[layer.name][0] == "pruned"
        }
        kernels = {
            name: np.concatenate([k.ravel() for k in ks])
            for name, ks in pruned_kernels.items()
            if ks
        }
        if kernels:
            targets = lamp_sparsities(kernels, cfg.target_sparsity)
            sparsity_text = f"{cfg.target_sparsity:.0%} overall (LAMP allocation, {schedule.kind})"
    for layer in layers:
        action, reason = decisions[layer.name]
        detail = {}
        if action == "pruned":
            if layer.name in targets:
                detail["target_sparsity"] = round(targets[layer.name], 4)
                reason = f"{', '.join(reason)} pruned to {targets[layer.name]:.0%} (LAMP)"
            else:
                reason = f"{', '.join(reason)} pruned to {sparsity_text}"
        report.add(layer, action, reason, **detail)

    def wrap(layer):
        if decisions.get(layer.name, ("unchanged",))[0] != "pruned":
            return layer
        kwargs = {"pruning_schedule": _tfmot_schedule(schedule, targets.get(layer.name))}
        if structure:
            kwargs["sparsity_m_by_n"] = structure
        return _tfmot.prune_low_magnitude(layer, **kwargs)

    if not report.count("pruned"):
        raise InputValueError(
            "No layer of the model can be pruned (tfmot prunes Conv/Dense-type kernels). "
            f"Layers: {[(r.layer, r.type, r.reason) for r in report.rows][:10]}"
        )
    pruned = clone_with(base, wrap)
    skipped = [
        r.layer for r in report.rows if r.action == "unchanged" and "not supported" in r.reason
    ]
    if targets:
        sparsity_text += f": per layer {min(targets.values()):.0%}..{max(targets.values()):.0%}"
    report.message = (
        f"{report.count('pruned')} layer(s) pruned to {sparsity_text}; schedule steps "
        f"{schedule.begin_step}..{schedule.end_step} every {schedule.frequency} of "
        f"{schedule.total_steps}."
    )
    if skipped:
        report.message += f" Left dense because tfmot cannot prune them: {skipped}."
    return pruned, report, schedule


def _decide(layer, cfg: PruneConfig, structure, policy) -> tuple[str, object]:
    if layer.name in cfg.skip_layers:
        return "unchanged", "in prune.skip_layers"
    nested = nested_model_reason(layer, "pruned")
    if nested:
        return "unchanged", nested
    weights = _tfmot.prunable_weights(layer)
    if weights is None:
        return "unchanged", (
            f"not supported by tfmot pruning ({type(layer).__name__} is not a built-in prunable "
            "layer and does not implement tfmot's PrunableLayer)"
        )
    if not weights:
        return "unchanged", "no prunable weights"
    if policy is not None and not policy.allow_pruning(layer):
        return "unchanged", "excluded by the XNNPACK pruning policy (only 1x1 convs are sparse)"
    if structure:
        kind = type(layer).__name__
        kernel = getattr(layer, "kernel", None)
        n = structure[1]
        if kind not in ("Conv2D", "Dense") or kernel is None:
            return "unchanged", f"{structure[0]}:{n} sparsity applies to Conv2D/Dense kernels only"
        c_in = int(kernel.shape[-2])
        if c_in % n:
            return "unchanged", f"{c_in} input channels are not a multiple of {n}"
    return "pruned", weights


def pruning_callbacks() -> list:
    """Callbacks that must be passed to ``fit`` when training a pruned model."""
    return _tfmot.pruning_callbacks()


def strip(pruned_model):
    """Remove the pruning wrappers, with the final masks applied to the kernels.

    tfmot's ``strip_pruning`` keeps the kernels as they are after the last optimizer update, which
    can move masked weights off zero; the masks are applied first so the zeros are exact.

    Returns:
        A plain tf_keras model (same layers and names as the original), contract attached.
    """
    from kvision.compress._models import contract_of, with_contract

    contract = contract_of(pruned_model)
    for layer in flat_layers(pruned_model):
        if _tfmot.is_pruning_wrapper(layer):
            for weight, mask, _ in layer.pruning_vars:
                weight.assign(weight * mask)
    stripped = _tfmot.strip_pruning(pruned_model)
    return with_contract(stripped, contract)


def keep_zeros(model, pruned_model, layers) -> int:
    """Zero again, in ``model``, every weight that is zero in ``pruned_model``; returns how many
    had moved.

    tfmot's prune-preserving QAT masks the weights it fake-quantizes, but a layer whose weights it
    leaves to the converter (a ``Dense`` followed by ``BatchNormalization``, folded at conversion)
    is fine-tuned unmasked and its pruned weights drift off zero. Calling this after the QAT
    fine-tuning makes the sparsity exact in every pruned layer. A layer tfmot did mask is not
    changed.

    Args:
        model: the fine-tuned model (QAT-wrapped or plain); layers are matched by name, also
            inside tfmot wrappers.
        pruned_model: the stripped pruned model the fine-tuning started from.
        layers: names of the pruned layers.
    """
    moved = 0
    # a tfmot wrapper swaps its layer's `kernel` attribute for a fake-quantized tensor, so the
    # variables are found by name among the (wrapper's) weights
    by_layer = {getattr(layer, "layer", layer).name: layer for layer in flat_layers(model)}
    for name in layers:
        reference, target = pruned_model.get_layer(name), by_layer.get(name)
        if target is None:
            continue
        attrs = _tfmot.prunable_weights(reference) or []
        variables = {w.name: w for w in target.weights}
        for ref, attr in zip(_kernels(reference), attrs, strict=False):
            weight = variables.get(f"{name}/{attr}:0")
            if weight is None:
                continue
            value = weight.numpy()
            keep = ref != 0
            moved += int(np.count_nonzero(value[~keep]))
            weight.assign(np.where(keep, value, 0.0).astype(value.dtype))
    return moved


def is_pruned_model(model) -> bool:
    """True when ``model`` still holds pruning wrappers."""
    return any(_tfmot.is_pruning_wrapper(layer) for layer in flat_layers(model))


__all__ = [
    "PruneSchedule",
    "is_pruned_model",
    "keep_zeros",
    "prune_model",
    "pruning_callbacks",
    "resolve_schedule",
    "strip",
]
