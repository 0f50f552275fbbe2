"""kvision: from images to compressed, verified TFLite and TF Serving models, every step measured.

Stages (one subpackage each): ``kvision.data`` -> ``kvision.augment`` -> ``kvision.models`` ->
``kvision.train`` -> ``kvision.evaluate`` -> ``kvision.export``; ``kvision.workflow`` chains them
from a config, and the ``kvision`` command mirrors it.

Importing kvision does nothing else: no TensorFlow import, no environment change. TensorFlow's
oneDNN ops stay on (they train the default model 2-3x faster here); the one layer kind whose
oneDNN gradient corrupts the heap is refused before training, and the ``kvision`` command
restarts itself with oneDNN off when it meets one (see ``kvision._env``).
"""

__version__ = "0.1.0"
