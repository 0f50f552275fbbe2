"""TF Serving: package SavedModels (versions, models.config, batching, warm-up), read their
signatures as the server does, and talk to a server (REST and gRPC).

Example:
    >>> from deploy.serving import ServedModel, package_for_serving, ServingClient
    >>> package_for_serving("runs/x/serving", [ServedModel("classifier", {1: "export/sm/1"})])
"""

from deploy.serving.client import ServingClient, ServingError
from deploy.serving.package import (
    DEFAULT_IMAGE,
    BatchingParameters,
    ServedModel,
    compose_text,
    models_config_text,
    package_for_serving,
    write_warmup_requests,
)
from deploy.serving.signature import read_serving_signature, read_signature_defs

__all__ = [
    "DEFAULT_IMAGE",
    "BatchingParameters",
    "ServedModel",
    "ServingClient",
    "ServingError",
    "compose_text",
    "models_config_text",
    "package_for_serving",
    "read_serving_signature",
    "read_signature_defs",
    "write_warmup_requests",
]
