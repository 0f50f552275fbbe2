"""The model registry: ``@register_model`` builders, ``build_model`` and ``list_models``.

Every builder takes ``input_shape`` (H, W, C) and ``num_classes`` plus its own keyword options and
returns a ``tf_keras`` functional model built only from builtin layers (so tfmot and the TFLite
converter accept it)::

    model = build_model("compact_mobilenet", input_shape=(28, 28, 1), num_classes=10)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from kvision.errors import InputTypeError, InputValueError

_REGISTRY: dict[str, Callable] = {}


def register_model(name: str | None = None):
    """Decorator that registers a model builder under ``name`` (default: the function's name).

    Raises ``ValueError`` if the name is already taken.
    """

    def decorator(fn):
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"Model `{key}` is already registered by {_REGISTRY[key].__module__}.")
        _REGISTRY[key] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _import_builtin_models()
    return sorted(_REGISTRY)


def get_builder(name: str) -> Callable:
    """The builder registered as ``name``; raises ``ValueError`` with a suggestion otherwise."""
    _import_builtin_models()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise InputValueError(
            f"Unknown model `{name}`.{hint} Available: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def build_model(name: str, input_shape, num_classes: int, labels=None, **options):
    """Build registered model ``name`` and attach its input contract.

    Args:
        name: registered model name (see :func:`list_models`).
        input_shape: ``(height, width, channels)``.
        num_classes: number of output classes (softmax probabilities).
        labels: class names for the contract (default ``"0".."N-1"``).
        **options: builder-specific options; unknown ones raise ``TypeError`` naming them.

    Returns:
        A ``tf_keras.Model`` with ``model.kvision_contract`` set.
    """
    from kvision.models.contract import InputContract, attach_contract

    builder = get_builder(name)
    if len(tuple(input_shape)) != 3:
        raise InputValueError(
            f"`input_shape` should be (height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    if int(num_classes) < 2:
        raise InputValueError(f"`num_classes` should be >= 2. Received: num_classes={num_classes}")
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in options if k not in params]
        if unknown:
            allowed = [k for k in params if k not in ("input_shape", "num_classes")]
            raise InputTypeError(
                f"Model `{name}` got unknown option(s) {unknown}. Allowed: {allowed}."
            )
    h, w, c = (int(v) for v in input_shape)
    model = builder(input_shape=(h, w, c), num_classes=int(num_classes), **options)
    labels = list(labels) if labels is not None else [str(i) for i in range(int(num_classes))]
    # Builders whose (local) weights expect another input range say so on the model.
    scale = float(getattr(model, "kvision_input_scale", 1.0 / 255.0))
    offset = float(getattr(model, "kvision_input_offset", 0.0))
    contract = InputContract(h, w, c, scale=scale, offset=offset, labels=labels)
    return attach_contract(model, contract)


def _import_builtin_models() -> None:
    # Importing the modules runs their @register_model decorators.
    from kvision.models import applications, compact_mobilenet, lenet, resnet  # noqa: F401
