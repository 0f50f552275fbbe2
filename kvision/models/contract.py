"""The input contract a model carries: size, channels, scaling and labels.

Data pipelines, exporters and runtimes ask the contract instead of repeating numbers. A model
built by kvision has it attached (``model.kvision_contract``); it is saved beside every model
and artifact as ``contract.json`` so it survives reloading::

    contract = InputContract.from_model(model)
    x = contract.normalize(uint8_images)   # float32, what the model expects
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kvision.io import atomic_write_json

CONTRACT_FILE = "contract.json"
CONTRACT_SUFFIX = ".contract.json"  # beside a .tflite: <stem>.contract.json
SAVED_MODEL_CONTRACT = Path("assets.extra") / CONTRACT_FILE  # inside a SavedModel version dir


def contract_path(artifact_path) -> Path:
    """Where the input contract of an exported artifact lives.

    Example:
        >>> contract_path("out/tflite/classifier_int8.tflite").name
        'classifier_int8.contract.json'
    """
    p = Path(artifact_path)
    if p.suffix == ".tflite":
        return p.with_name(p.stem + CONTRACT_SUFFIX)
    return p / SAVED_MODEL_CONTRACT


@dataclass
class InputContract:
    """What a model expects as input and what its outputs mean.

    Args:
        height: input height in pixels.
        width: input width in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        scale: multiply raw uint8 pixels by this ... (default ``1/255``)
        offset: ... then add this (default ``0``): ``x = pixels * scale + offset``.
        labels: class names, index = class id.
        task: ``classification`` for now.
    """

    height: int
    width: int
    channels: int
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    labels: list[str] = field(default_factory=list)
    task: str = "classification"

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` should be a positive integer. Received: {name}={value!r}"
                )
        if self.channels not in (1, 3):
            raise ValueError(f"`channels` should be 1 or 3. Received: channels={self.channels!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def normalize(self, pixels):
        """Raw pixels (uint8 or float in 0..255) -> float32 model input. Works on NumPy and TF."""
        if isinstance(pixels, np.ndarray):
            return pixels.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        import tensorflow as tf

        return tf.cast(pixels, tf.float32) * self.scale + self.offset

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputContract:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def save(self, directory_or_file: str | Path) -> Path:
        """Write ``contract.json`` into a folder (or to the given ``.json`` path)."""
        p = Path(directory_or_file)
        if p.suffix != ".json":
            p = p / CONTRACT_FILE
        return atomic_write_json(p, self.to_dict())

    @classmethod
    def load(cls, directory_or_file: str | Path) -> InputContract:
        p = Path(directory_or_file)
        if p.suffix != ".json":
            p = p / CONTRACT_FILE
        if not p.is_file():
            raise FileNotFoundError(f"Input contract not found: {p}")
        return cls.from_dict(json.loads(p.read_text()))

    @classmethod
    def from_model(cls, model, labels: list[str] | None = None) -> InputContract:
        """The contract attached to ``model``; else one derived from its input shape."""
        attached = getattr(model, "kvision_contract", None)
        if isinstance(attached, InputContract):
            return attached
        shape = model.input_shape
        if isinstance(shape, list):
            shape = shape[0]
        _, h, w, c = shape
        n = int(model.output_shape[-1])
        return cls(int(h), int(w), int(c), labels=labels or [str(i) for i in range(n)])

    @classmethod
    def find(cls, model_path: str | Path) -> InputContract:
        """The contract saved with a model file or artifact: :func:`contract_path` first, then
        ``contract.json`` beside the file or inside the folder. ``FileNotFoundError`` names the
        places looked at."""
        p = Path(model_path)
        candidates = [contract_path(p), p.parent / CONTRACT_FILE, p / CONTRACT_FILE]
        for candidate in candidates:
            if candidate.is_file():
                return cls.load(candidate)
        raise FileNotFoundError(
            f"No input contract for {p}. Looked at: {', '.join(str(c) for c in candidates)}."
        )

    @classmethod
    def for_model_file(cls, model_path: str | Path, model=None) -> InputContract:
        """The contract saved with a model file (see :meth:`find`), else derived from ``model``."""
        try:
            return cls.find(model_path)
        except FileNotFoundError:
            if model is None:
                raise
        return cls.from_model(model)


def attach_contract(model, contract: InputContract):
    """Attach ``contract`` to ``model`` (as ``model.kvision_contract``) and return the model."""
    model.kvision_contract = contract
    return model
