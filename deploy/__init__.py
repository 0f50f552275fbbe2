"""Deployment: run, benchmark and serve the artifacts kvision (or anyone) produced.

``deploy`` depends on ``kvision``; ``kvision`` never imports ``deploy``. Importing this package
imports neither TensorFlow nor LiteRT.

Subpackages, one purpose each::

    deploy.runtimes    one ``Runtime`` interface over LiteRT, TF SavedModel, Keras, ONNX Runtime
    deploy.benchmark   every artifact x runtime x threads -> benchmark.json / CSV / Markdown / HTML
    deploy.serving     TF Serving packaging (versions, models.config, batching, warm-up) + client
    deploy.server      ``kvision serve``: TF Serving's REST API on starlette + uvicorn

Example:
    >>> from deploy.runtimes import open_runtime
    >>> rt = open_runtime("tflite_models/classifier_float32.tflite", "litert", threads=2)
    >>> rt.predict(x).shape
    (1, 10)
"""

__all__: list[str] = []
