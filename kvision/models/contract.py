"""The input contract a model carries: size, channels, scaling, input domain and labels.

Data pipelines, exporters and runtimes ask the contract instead of repeating numbers. A model
built by kvision has it attached (``model.kvision_contract``); it is saved beside every model
and artifact as ``contract.json`` so it survives reloading::

    contract = InputContract.from_model(model)
    x = contract.normalize(uint8_images)   # float32, what the model expects

The input domain rule (one rule, used by serve, benchmark, convert verification and predict):

* a float input tensor, or an integer tensor WITH quantization parameters (kvision's int8
  artifacts), takes model-scale floats; the runtime quantizes them with the tensor's own
  scale / zero point. Domain ``"float"``.
* an integer input tensor WITHOUT quantization parameters takes raw pixel values (a ``uint8``
  SavedModel or ``.tflite`` that divides by 255 inside). Domain = that dtype (``"uint8"``):
  the contract keeps pixels as they are (``scale=1``, ``offset=0``) and every value fed to the
  model must be a whole number in the dtype's range (:func:`to_input_tensor` refuses anything
  else instead of rounding ``[0, 1]`` floats to 0 or 1).

:func:`input_domain` states the rule, :meth:`InputContract.for_tensor` derives a contract from
an artifact's input tensor with it, and :meth:`InputContract.check_tensor` refuses a saved
contract that contradicts the tensor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.io import atomic_write_json

FLOAT_DOMAIN = "float"
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


def input_domain(dtype, quantized: bool = False) -> str:
    """The value domain of an input tensor: ``"float"`` or a raw integer dtype name.

    Float tensors and quantized integer tensors take model-scale floats (``"float"``); an
    integer tensor without quantization parameters takes raw integer pixel values (its dtype
    name, e.g. ``"uint8"``).

    Args:
        dtype: the tensor's dtype (NumPy / TensorFlow dtype or its name, e.g. ``"uint8"``).
        quantized: the tensor has quantization parameters (a non-zero scale).

    Raises:
        ValueError: a dtype that cannot hold image values (bool, string, complex).

    Example:
        >>> input_domain("uint8"), input_domain("int8", quantized=True), input_domain("float32")
        ('uint8', 'float', 'float')
    """
    kind, name = _dtype_kind(dtype)
    if kind == "f":
        return FLOAT_DOMAIN
    if kind in "iu":
        return FLOAT_DOMAIN if quantized else name
    raise InputValueError(
        f"An image input should be a float or integer tensor. Received: dtype={name!r}"
    )


def to_input_tensor(x, dtype, scale: float = 0.0, zero_point: int = 0, where: str = "input"):
    """Model-domain values ``x`` -> the array an input tensor of ``dtype`` is given.

    * float tensor: ``x`` cast to it;
    * integer tensor with quantization (``scale > 0``): ``round(x / scale) + zero_point``,
      clipped to the dtype's range;
    * integer tensor without quantization: ``x`` must already be whole numbers inside the dtype's
      range (raw pixel values); they are cast exactly. Anything else raises instead of being
      rounded (``[0, 1]``-scaled pixels would become 0 or 1).

    Args:
        x: NumPy array of model inputs (float32 from :meth:`InputContract.normalize`).
        dtype: the input tensor's dtype.
        scale: its quantization scale (``0.0`` when not quantized).
        zero_point: its quantization zero point.
        where: what to name in errors (e.g. the artifact's file name).

    Raises:
        ValueError: raw integer input given fractional, non-finite or out-of-range values.

    Example:
        >>> to_input_tensor(np.array([0.0, 255.0]), "uint8").tolist()
        [0, 255]
    """
    kind, name = _dtype_kind(dtype)
    x = np.asarray(x)
    if kind == "f":
        return x.astype(name if name != "bfloat16" else np.float32, copy=False)
    if kind not in "iu":
        input_domain(name)  # raises: not an image dtype
    target = np.dtype(name)
    info = np.iinfo(target)
    if scale:
        q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
        return np.clip(q, info.min, info.max).astype(target)
    finite = x.dtype.kind in "iu" or bool(np.isfinite(x).all())
    lo, hi = (x.min(), x.max()) if x.size and finite else (0, 0)
    fractional = x.dtype.kind not in "iu" and finite and bool(np.any(x != np.round(x)))
    if not finite or fractional or lo < info.min or hi > info.max:
        got = "non-finite values (NaN or Infinity)"
        if finite:
            got = f"values in [{lo:g}, {hi:g}]" + (" with fractions" if fractional else "")
        raise InputValueError(
            f"{where} takes raw {name} pixel values (an integer input without quantization "
            f"parameters): whole numbers in [{info.min}, {info.max}]. Received: {got}. Feed "
            "pixels as they are (0..255), not scaled to [0, 1]."
        )
    return x.astype(target)


def _dtype_kind(dtype) -> tuple[str, str]:
    """``(numpy kind, dtype name)``; TensorFlow dtypes and names such as ``"bfloat16"`` too."""
    name = getattr(dtype, "name", None) or str(dtype)
    name = {"float": "float32", "double": "float64", "half": "float16"}.get(name, name)
    if name == "bfloat16":
        return "f", name
    try:
        d = np.dtype(name)
    except TypeError:
        return "?", name
    return d.kind, d.name


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
        task: the :mod:`kvision.tasks` task that owns the outputs (``classification``,
            ``detection``); it selects the decoding, metric and parity when an artifact is
            loaded.
        input_domain: the values the model takes (see the module docstring): ``"float"``
            (default; model-scale floats, quantized by the runtime for int8 artifacts) or a raw
            integer dtype such as ``"uint8"`` for a model whose integer input has no
            quantization parameters. A raw domain keeps pixels as they are: ``scale`` must be 1
            and ``offset`` a whole number keeping 0..255 inside the dtype (0 for ``uint8``).
        postprocess: the task's decoding parameters outside the graph, JSON-ready (detection:
            anchors, box variances, score / IoU thresholds, max detections); empty for
            classification.
        resize: how an image of another size becomes ``height`` x ``width``: ``"stretch"``
            (default; each axis scaled) or ``"letterbox"`` (aspect ratio kept, gray borders);
            see :mod:`kvision.preprocess`, the one implementation of both.
    """

    height: int
    width: int
    channels: int
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    labels: list[str] = field(default_factory=list)
    task: str = "classification"
    input_domain: str = FLOAT_DOMAIN
    postprocess: dict = field(default_factory=dict)
    resize: str = "stretch"

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputValueError(
                    f"`{name}` should be a positive integer. Received: {name}={value!r}"
                )
        if self.channels not in (1, 3):
            raise InputValueError(
                f"`channels` should be 1 or 3. Received: channels={self.channels!r}"
            )
        from kvision.preprocess import check_resize

        check_resize(self.resize)
        if self.input_domain != FLOAT_DOMAIN:
            self._check_raw_domain()

    def _check_raw_domain(self) -> None:
        kind, name = _dtype_kind(self.input_domain)
        if kind not in "iu" or name != self.input_domain:
            raise InputValueError(
                "`input_domain` should be 'float' or an integer dtype name such as 'uint8'. "
                f"Received: input_domain={self.input_domain!r}"
            )
        info = np.iinfo(name)
        offset_ok = float(self.offset).is_integer() and (
            info.min <= self.offset and 255 + self.offset <= info.max
        )
        if self.scale != 1.0 or not offset_ok:
            raise InputValueError(
                f"A contract with input_domain={name!r} feeds raw pixel values: `scale` should "
                f"be 1 and `offset` a whole number keeping 0..255 inside {name} "
                f"[{info.min}, {info.max}]. Received: scale={self.scale!r}, offset={self.offset!r}"
            )

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

    @property
    def raw_input(self) -> bool:
        """True when the model takes raw integer pixel values (``input_domain`` not float)."""
        return self.input_domain != FLOAT_DOMAIN

    def check_values(self, x, where: str = "inputs") -> None:
        """Raise ``ValueError`` unless ``x`` (model inputs) fits the contract's input domain.

        Float domains take any finite values; a raw integer domain (``"uint8"``) needs whole
        numbers in the dtype's range (see :func:`to_input_tensor`). ``where`` names the field.
        """
        if self.raw_input:
            to_input_tensor(x, self.input_domain, where=where)
        elif np.size(x) and not np.all(np.isfinite(x)):
            raise InputValueError(f"{where} contains NaN or Infinity.")

    def check_tensor(self, dtype, quantized: bool = False, where: str = "the artifact") -> None:
        """Raise ``ValueError`` when this contract contradicts the artifact's input tensor.

        An integer input without quantization parameters takes raw pixel values, so its
        contract must say so (``input_domain`` equal to its dtype): a contract that scales
        pixels to [0, 1] for it would feed 0s and 1s. Float and quantized tensors accept any
        contract (a ``"uint8"`` domain on a float tensor is a model that casts inside).

        Args:
            dtype: the input tensor's dtype.
            quantized: whether it has quantization parameters.
            where: the artifact, named in the message.
        """
        domain = input_domain(dtype, quantized)
        if domain != FLOAT_DOMAIN and self.input_domain != domain:
            raise InputValueError(
                f"The input contract of {where} contradicts its input tensor: the tensor is "
                f"{domain} without quantization parameters, so it takes raw pixel values "
                f"0..255, but the contract says input_domain={self.input_domain!r} "
                f"(scale={self.scale:g}, offset={self.offset:g}). Fix the contract "
                f"(input_domain={domain!r}, scale=1, offset=0) or delete it to derive one."
            )

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
        """The contract attached to ``model``; else one derived from its input tensor with
        :meth:`for_tensor` (a ``uint8`` Keras input gets the raw ``"uint8"`` domain)."""
        attached = getattr(model, "kvision_contract", None)
        if isinstance(attached, InputContract):
            return attached
        shape = model.input_shape
        if isinstance(shape, list):
            shape = shape[0]
        out = model.output_shape
        # one output [N, K]: K classes; several outputs (a detector's): no labels to derive
        n = int(out[-1]) if isinstance(out, tuple) and out and isinstance(out[-1], int) else 0
        return cls.for_tensor(
            shape,
            model_input_dtype(model),
            labels=labels or [str(i) for i in range(n)],
            where=f"model {getattr(model, 'name', '')!r}",
        )

    @classmethod
    def for_tensor(
        cls,
        shape,
        dtype,
        scale: float = 0.0,
        zero_point: int = 0,
        labels: list[str] | None = None,
        where: str = "the artifact",
    ) -> InputContract:
        """The contract of an artifact that has none, derived once from its input tensor.

        Size and channels come from ``shape`` ``[N, H, W, C]``. Then, by :func:`input_domain`:

        * float tensor: pixels scaled to [0, 1] (``scale=1/255``);
        * quantized ``uint8`` / ``int8`` tensor: pixel ``p`` maps onto the tensor's own
          calibration: ``(p - zero_point) * scale`` (``int8``: ``(p - 128 - zero_point) *
          scale``), so the quantized values are the pixels;
        * integer tensor without quantization: raw pixels, ``input_domain=dtype``, ``scale=1``,
          ``offset=0``. An ``int8`` one cannot hold 0..255, so it needs a contract file.

        Args:
            shape: the input shape, ``None`` for free dimensions.
            dtype: its dtype (NumPy / TensorFlow dtype or name).
            scale: its quantization scale (``0.0``: not quantized).
            zero_point: its quantization zero point.
            labels: class names (default none).
            where: the artifact, named in errors.

        Raises:
            ValueError: not an image input ``[N, H, W, 1 or 3]`` with fixed H, W, C, a dtype
                that cannot hold pixels, or a raw integer dtype that cannot hold 0..255.

        Example:
            >>> InputContract.for_tensor((None, 8, 8, 1), "uint8").input_domain
            'uint8'
        """
        shape = tuple(shape)
        if len(shape) != 4 or None in shape[1:] or shape[3] not in (1, 3):
            raise InputValueError(
                f"{where} has input shape {list(shape)}; an image model needs [N, H, W, 1 or 3] "
                "with fixed H, W and C (or a contract.json beside it)."
            )
        h, w, c = (int(v) for v in shape[1:])
        labels = list(labels or [])
        domain = input_domain(dtype, bool(scale))
        name = _dtype_kind(dtype)[1]
        if domain != FLOAT_DOMAIN:
            info = np.iinfo(domain)
            if info.min > 0 or info.max < 255:
                raise InputValueError(
                    f"{where} takes raw {domain} values without quantization parameters, which "
                    f"cannot hold pixels 0..255; write a contract.json beside it that says how "
                    f"pixels map (e.g. input_domain={domain!r}, scale=1, offset=-128)."
                )
            return cls(h, w, c, 1.0, 0.0, labels, input_domain=domain)
        if scale and name == "uint8":
            return cls(h, w, c, float(scale), -zero_point * float(scale), labels)
        if scale and name == "int8":
            return cls(h, w, c, float(scale), -(zero_point + 128) * float(scale), labels)
        return cls(h, w, c, labels=labels)

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
        """The contract saved with a model file (see :meth:`find`), checked against ``model``'s
        input tensor (:meth:`check_tensor`), else derived from ``model``."""
        try:
            contract = cls.find(model_path)
        except FileNotFoundError:
            if model is None:
                raise
            return cls.from_model(model)
        if model is not None:
            contract.check_tensor(model_input_dtype(model), where=str(model_path))
        return contract


def model_input_dtype(model) -> str:
    """The dtype name of a tf_keras model's (first) input; ``"float32"`` when unknown."""
    inputs = getattr(model, "inputs", None) or []
    dtype = getattr(inputs[0], "dtype", None) if inputs else None
    return _dtype_kind(dtype)[1] if dtype is not None else "float32"


def attach_contract(model, contract: InputContract):
    """Attach ``contract`` to ``model`` (as ``model.kvision_contract``) and return the model."""
    model.kvision_contract = contract
    return model


def with_resize(model, resize: str):
    """``model`` with its contract's resize mode set to ``resize`` (``model.resize``)."""
    contract = InputContract.from_model(model)
    if contract.resize == resize:
        return model
    return attach_contract(model, replace(contract, resize=resize))
