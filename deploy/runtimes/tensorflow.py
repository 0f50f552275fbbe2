"""Re-export of :mod:`kvision.runtime.tensorflow` (SavedModel and Keras runtimes)."""

from kvision.runtime.tensorflow import DEVICES, KerasRuntime, SavedModelRuntime

__all__ = ["DEVICES", "KerasRuntime", "SavedModelRuntime"]
