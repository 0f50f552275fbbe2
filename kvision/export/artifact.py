"""``Artifact``: one exported model file (or SavedModel folder) and what is known about it.

An artifact is a row of the export/benchmark table: its format, where it is, how big it is raw and
gzipped, whether it passed verification (``status`` ``"ok"`` or ``"failed"`` with a ``reason``),
the verification numbers (``checks``), and slots that later stages fill (``metrics``, ``latency``).

Contract convention: a ``.tflite`` file's input contract is written beside it as
``<stem>.contract.json`` (``tflite/classifier_float32.tflite`` ->
``tflite/classifier_float32.contract.json``), so several variants and models can share a folder; a
SavedModel version folder keeps it in ``<version>/assets.extra/contract.json`` (the place TF
Serving reserves for extra files). :func:`contract_path` returns that path and
:func:`load_contract` reads it back.
"""

from __future__ import annotations

import gzip
import tarfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from kvision.errors import InputValueError
from kvision.models.contract import (  # noqa: F401  (re-exported: the export conventions)
    CONTRACT_SUFFIX,
    SAVED_MODEL_CONTRACT,
    InputContract,
    contract_path,
)

STATUSES = ("ok", "failed")
FORMATS = ("saved_model", "tflite")


@dataclass
class Artifact:
    """One exported model and its verification result.

    Args:
        name: short name, e.g. ``"saved_model"`` or ``"float32"``.
        format: ``"saved_model"`` or ``"tflite"``.
        path: file (``.tflite``) or SavedModel version folder.
        size_bytes: size on disk (a folder: total of its files); 0 when missing.
        gzip_bytes: size after ``gzip -9`` (a folder: of a deterministic tar of it); 0 when missing.
        status: ``"ok"`` or ``"failed"``.
        reason: why it failed (``""`` when ok).
        checks: verification numbers: ``max_abs_diff``, ``mean_abs_diff``, ``top1_agreement``,
            ``n_samples``, ``ops``, ``flex_ops``, ``custom_ops``, ``input_dtype``,
            ``output_dtype``, ``input_shape``, ``signature`` (see ``kvision.export.verify``).
        metrics: filled by evaluation (accuracy ...).
        latency: filled by the benchmark.
        compression: how a compressed artifact was made and what was measured in it
            (``technique``, ``gzip_ratio`` vs the float32 TFLite, weight sparsity or unique values
            per channel); empty for float exports.

    Example:
        >>> a = Artifact("float32", "tflite", "m.tflite", 10, 8, "ok")
        >>> Artifact.from_dict(a.to_dict()) == a
        True
    """

    name: str
    format: str
    path: str
    size_bytes: int
    gzip_bytes: int
    status: str
    reason: str = ""
    checks: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)
    compression: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(
                f"`format` should be one of {FORMATS}. Received: format={self.format!r}"
            )
        if self.status not in STATUSES:
            raise ValueError(
                f"`status` should be one of {STATUSES}. Received: status={self.status!r}"
            )
        self.path = str(self.path)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (the schema is the field list above)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Artifact:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputValueError(f"Unknown Artifact field(s) {unknown}. Allowed: {sorted(names)}.")
        return cls(**data)

    @classmethod
    def failed(cls, name: str, format: str, path, reason: str, checks: dict | None = None):
        """A failed artifact; sizes are measured if something exists at ``path``."""
        return cls(
            name,
            format,
            str(path),
            path_size(path),
            gzip_size(path),
            "failed",
            reason=reason,
            checks=dict(checks or {}),
        )


def short_reason(exc: BaseException, limit: int = 500) -> str:
    """``"ErrorType: message"`` of an exception, cut to ``limit`` characters for a report row."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_size(path) -> int:
    """Bytes on disk of a file, or the total of a folder's files; 0 when ``path`` is missing."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return 0


def gzip_size(path, level: int = 9) -> int:
    """Size of ``path`` after gzip (``level`` 9 = ``gzip -9``); a folder is tarred first.

    The tar is deterministic (sorted entries, zeroed times, owners and modes), so the number only
    changes when the content does. Returns 0 when ``path`` is missing.
    """
    p = Path(path)
    if not p.exists():
        return 0
    sink = _CountingSink()
    with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level, mtime=0) as gz:
        if p.is_file():
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    gz.write(chunk)
        else:
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for f in sorted(q for q in p.rglob("*") if q.is_file()):
                    info = tarfile.TarInfo(f.relative_to(p).as_posix())
                    info.size = f.stat().st_size
                    info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
                    with open(f, "rb") as fh:
                        tar.addfile(info, fh)
    return sink.size


def load_contract(artifact_path):
    """Read the ``InputContract`` saved with an artifact (``InputContract.find``)."""
    return InputContract.find(artifact_path)


class _CountingSink:
    """A write-only file object that only counts bytes."""

    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        n = len(data)
        self.size += n
        return n

    def flush(self):
        pass

    def tell(self) -> int:
        return self.size
