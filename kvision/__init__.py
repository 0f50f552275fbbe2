"""kvision: from images to compressed, verified TFLite and TF Serving models, every step measured.

Stages (one subpackage each): ``kvision.data`` -> ``kvision.augment`` -> ``kvision.models`` ->
``kvision.train`` -> ``kvision.evaluate`` -> ``kvision.export``; ``kvision.workflow`` chains them
from a config, and the ``kvision`` command mirrors it.

Importing kvision does not import TensorFlow. It makes one environment change, the documented
exception to "nothing happens at import time": ``TF_ENABLE_ONEDNN_OPTS=0`` unless that variable
is already set, because TensorFlow's oneDNN gradient of 1x1 strided convolutions corrupts the
heap and the variable only works before TensorFlow is imported (see ``kvision._env``).
"""

from kvision import _env

_env.disable_onednn_by_default()

__version__ = "0.1.0"
