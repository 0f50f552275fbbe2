"""The models ``kvision serve`` holds: names -> versions -> loaded runtimes (pooled, locked).

Each served version owns a :class:`RuntimePool` of ``instances`` loaded runtimes; a request
checks one out, runs it and puts it back, so an interpreter is never invoked by two threads at
once (``instances=1`` is a plain lock), while ``instances=N`` lets N requests run in parallel.

Example:
    >>> store = ModelStore()
    >>> store.add("fashion", "tflite_models/classifier_int8.tflite")
    >>> store.resolve("fashion").predict(x).shape
    (4, 10)
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploy.runtimes import (
    TensorInfo,
    artifact_contract,
    detect_format,
    open_runtime,
)
from kvision.errors import InputValueError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class NotFound(LookupError):
    """Unknown model, version or label; the message says what exists."""


class RuntimePool:
    """``size`` loaded runtimes; :meth:`run` uses one exclusively.

    Args:
        factory: zero-argument callable returning an unloaded runtime.
        size: number of runtimes (default 1: requests on this model run one at a time).
    """

    def __init__(self, factory, size: int = 1):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputValueError(f"`instances` should be a positive integer. Received: {size!r}")
        self._free: queue.Queue = queue.Queue()
        self.runtimes = []
        for _ in range(size):
            rt = factory()
            rt.load()
            self.runtimes.append(rt)
            self._free.put(rt)
        self.active = 0
        self.max_active = 0  # the most runtimes ever busy at once (<= size)
        self._count_lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        rt = self._free.get()
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return rt.predict(x)
        finally:
            with self._count_lock:
                self.active -= 1
            self._free.put(rt)

    def close(self) -> None:
        for rt in self.runtimes:
            rt.close()


@dataclass
class ServedVersion:
    """One loaded version of a served model."""

    model: str
    version: int
    path: Path
    format: str
    pool: RuntimePool
    contract: object
    contract_source: str
    input_spec: TensorInfo
    output_spec: TensorInfo
    signature: dict = field(default_factory=dict)

    @property
    def runtime(self):
        return self.pool.runtimes[0]

    @property
    def labels(self) -> list[str]:
        n = self.output_spec.shape[-1] if self.output_spec.shape else None
        if self.contract.labels:
            return list(self.contract.labels)
        return [str(i) for i in range(n)] if isinstance(n, int) else []

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.pool.run(x)


class ModelStore:
    """Named models with numeric versions and optional version labels."""

    def __init__(self):
        self.models: dict[str, dict[int, ServedVersion]] = {}
        self.labels: dict[str, dict[str, int]] = {}

    def add(
        self,
        name: str,
        path,
        version: int | None = None,
        runtime: str = "auto",
        threads: int | None = None,
        instances: int = 1,
    ) -> list[ServedVersion]:
        """Load ``path`` under ``name``.

        Args:
            name: model name in URLs.
            path: ``.tflite``, ``.keras`` / ``.h5``, a SavedModel version folder, or a SavedModel
                model folder with numeric versions (every version is served; the highest is
                the default, as in TF Serving).
            version: version number for a single artifact (default: the folder's number, else 1).
            runtime: runtime name (default ``"auto"``: the format's first runtime).
            threads: threads per runtime (runtimes that take one).
            instances: runtimes per version (default 1).
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputValueError(
                f"Model name should be letters, digits, '_', '.' or '-'. Received: {name!r}"
            )
        p = Path(path)
        fmt = detect_format(p)
        targets = []
        if fmt == "saved_model" and not (p / "saved_model.pb").is_file():
            if version is not None:
                raise InputValueError(
                    f"{p} holds several versions; `version` applies to one artifact."
                )
            targets = [
                (int(d.name), d)
                for d in sorted(p.iterdir())
                if d.name.isdigit() and (d / "saved_model.pb").is_file()
            ]
        else:
            v = version if version is not None else (int(p.name) if p.name.isdigit() else 1)
            targets = [(v, p)]
        loaded = []
        for v, target in targets:
            if v in self.models.get(name, {}):
                raise InputValueError(f"Model {name!r} already has version {v}.")
            loaded.append(self._load(name, v, target, fmt, runtime, threads, instances))
        for served in loaded:
            self.models.setdefault(name, {})[served.version] = served
        return loaded

    def set_label(self, name: str, label: str, version: int) -> None:
        """Point ``/v1/models/<name>/labels/<label>`` at ``version``."""
        if version not in self.models.get(name, {}):
            raise InputValueError(f"Label {label!r}: model {name!r} has no version {version}.")
        self.labels.setdefault(name, {})[label] = version

    def resolve(self, name: str, version: int | None = None, label: str | None = None):
        """The served version for a request; raises :class:`NotFound` saying what exists."""
        versions = self.models.get(name)
        if not versions:
            raise NotFound(
                f"Servable not found for request: model {name!r} is not served "
                f"(served: {sorted(self.models)})"
            )
        if label is not None:
            labels = self.labels.get(name, {})
            if label not in labels:
                raise NotFound(
                    f"Unrecognized servable version label {label!r} for model {name!r} "
                    f"(labels: {sorted(labels)})"
                )
            version = labels[label]
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(
                f"Servable not found for request: model {name!r} has no version {version} "
                f"(versions: {sorted(versions)})"
            )
        return versions[version]

    def close(self) -> None:
        for versions in self.models.values():
            for served in versions.values():
                served.pool.close()

    def _load(self, name, version, path, fmt, runtime, threads, instances) -> ServedVersion:
        pool = RuntimePool(lambda: open_runtime(path, runtime, threads), instances)
        rt = pool.runtimes[0]
        contract, source = artifact_contract(path, rt.input_spec)
        signature = {}
        if fmt == "saved_model":
            from deploy.runtimes import saved_model_version_dir
            from deploy.serving.signature import read_signature_defs

            signature = read_signature_defs(saved_model_version_dir(path))
        return ServedVersion(
            name,
            version,
            Path(path),
            fmt,
            pool,
            contract,
            source,
            rt.input_spec,
            rt.output_spec,
            signature,
        )
