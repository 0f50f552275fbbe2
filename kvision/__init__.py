"""kvision: from images to compressed, verified TFLite and TF Serving models, every step measured.

Stages (one subpackage each): ``kvision.data`` -> ``kvision.augment`` -> ``kvision.models`` ->
``kvision.train`` -> ``kvision.evaluate`` -> ``kvision.export``; ``kvision.workflow`` chains them
from a config, and the ``kvision`` command mirrors it. Importing kvision does nothing else: no
TensorFlow import, no environment change.
"""

__version__ = "0.1.0"
