"""The backbone registry: ``@register_backbone``, ``build_backbone`` and ``list_backbones``."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable

from kvision.errors import InputTypeError, InputValueError

_REGISTRY: dict[str, Callable] = {}


def register_backbone(name: str):
    """Decorator registering a backbone function ``(inputs, **options) -> {"P{level}": tensor}``.

    Raises ``ValueError`` if the name is already taken.
    """

    def decorator(fn):
        if name in _REGISTRY:
            raise ValueError(
                f"Backbone `{name}` is already registered by {_REGISTRY[name].__module__}."
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def _import_builtin_backbones() -> None:
    # The model modules define the feature extractors and register them.
    from kvision.models import applications, compact_mobilenet, lenet, resnet, unet  # noqa: F401


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    _import_builtin_backbones()
    return sorted(_REGISTRY)


def _get(name: str) -> Callable:
    _import_builtin_backbones()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise InputValueError(
            f"Unknown backbone `{name}`.{hint} Available: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def backbone_options(name: str) -> list[str]:
    """The keyword options backbone ``name`` accepts."""
    params = inspect.signature(_get(name)).parameters
    return [k for k in params if k != "inputs"]


def build_backbone(name: str, inputs, **options) -> dict:
    """Run backbone ``name`` on the tf_keras tensor ``inputs``.

    Args:
        name: a registered backbone (see :func:`list_backbones`).
        inputs: the image input tensor ``[N, H, W, C]``.
        **options: the backbone's own options; unknown ones raise ``InputTypeError`` naming them.

    Returns:
        ``{"P{level}": tensor}`` ordered fine to coarse; level = log2(stride).

    Raises:
        InputValueError: unknown backbone name.
        InputTypeError: unknown option.
    """
    fn = _get(name)
    allowed = backbone_options(name)
    params = inspect.signature(fn).parameters.values()
    free = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)  # checked downstream
    unknown = [] if free else [k for k in options if k not in allowed]
    if unknown:
        raise InputTypeError(
            f"Backbone `{name}` got unknown option(s) {unknown}. Allowed: {allowed}."
        )
    return fn(inputs, **options)


def pyramid_level(input_size: int, feature_size: int) -> int:
    """The level ``log2(stride)`` of a feature map of ``feature_size`` px on ``input_size`` px
    ('same' padding rounds sizes up, so the stride is the nearest power of two)."""
    return max(0, round(math.log2(input_size / feature_size)))
