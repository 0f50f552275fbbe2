"""Classification models: a registry of tf_keras functional models and their input contracts."""

from kvision.models.contract import InputContract, attach_contract
from kvision.models.registry import build_model, get_builder, list_models, register_model

__all__ = [
    "InputContract",
    "attach_contract",
    "build_model",
    "get_builder",
    "list_models",
    "register_model",
]
