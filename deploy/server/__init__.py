"""``kvision serve``: TF Serving's REST API for hosts without TF Serving (starlette + uvicorn).

Example:
    >>> from deploy.server import ModelStore, create_app
    >>> store = ModelStore(); store.add("fashion", "tflite_models/classifier_float32.tflite")
    >>> app = create_app(store)          # run with uvicorn, or `kvision serve`
"""

from deploy.server.app import create_app
from deploy.server.codec import BadRequest, decode_predict
from deploy.server.main import load_store, main
from deploy.server.store import ModelStore, NotFound, RuntimePool

__all__ = [
    "BadRequest",
    "ModelStore",
    "NotFound",
    "RuntimePool",
    "create_app",
    "decode_predict",
    "load_store",
    "main",
]
