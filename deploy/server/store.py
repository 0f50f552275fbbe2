"""The models ``kvision serve`` holds: names -> versions -> loaded runtimes (pooled, locked).

Each served version owns a :class:`RuntimePool` of ``instances`` loaded runtimes; a request
checks one out, runs it and puts it back, so an interpreter is never invoked by two threads at
once (``instances=1`` is a plain lock), while ``instances=N`` lets N requests run in parallel.
A version has any number of named inputs and outputs (``ServedVersion.inputs`` / ``outputs``;
``run(feeds)`` returns every output by name); an input contract only when it has one image
input (``contract`` is ``None`` otherwise: numbers only, each in its tensor's domain).

Example:
    >>> store = ModelStore()
    >>> store.add("fashion", "tflite_models/classifier_int8.tflite")
    >>> store.resolve("fashion").predict(x).shape
    (4, 10)
    >>> store.add("faces", "face_detector.tflite")
    >>> sorted(store.resolve("faces").run({"image": x}))
    ['boxes', 'scores']
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.runtime import (
    TensorInfo,
    detect_format,
    find_contract,
    open_runtime,
    primary_output,
)

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
        """``predict(x)`` on a free runtime (one input, the primary output)."""
        return self.call(lambda rt: rt.predict(x))

    def call(self, fn):
        """``fn(runtime)`` on a free runtime, which no other thread uses meanwhile."""
        rt = self._free.get()
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return fn(rt)
        finally:
            with self._count_lock:
                self.active -= 1
            self._free.put(rt)

    def close(self) -> None:
        for rt in self.runtimes:
            rt.close()


@dataclass
class ServedVersion:
    """One loaded version of a served model.

    ``input_spec`` / ``output_spec`` are the first input and the primary output (the only ones
    of a one-input, one-output model); ``inputs`` / ``outputs`` list every tensor (default:
    those two). ``contract`` is ``None`` for a model without one image input.
    """

    model: str
    version: int
    path: Path
    format: str
    pool: RuntimePool
    contract: object
    contract_source: str | None
    input_spec: TensorInfo
    output_spec: TensorInfo
    signature: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def __post_init__(self):
        self.inputs = list(self.inputs) or [self.input_spec]
        self.outputs = list(self.outputs) or [self.output_spec]

    @property
    def runtime(self):
        return self.pool.runtimes[0]

    @property
    def labels(self) -> list[str]:
        if self.contract is not None and self.contract.labels:
            return list(self.contract.labels)
        if len(self.outputs) != 1:
            return []
        n = self.output_spec.shape[-1] if self.output_spec.shape else None
        return [str(i) for i in range(n)] if isinstance(n, int) else []

    def run(self, feeds) -> dict[str, np.ndarray]:
        """Every output by name for ``feeds`` (``{input name: array}``, or one array)."""
        return self.pool.call(lambda rt: _run(rt, feeds, self))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The primary output for the one input ``x``."""
        return self.run(x)[self.output_spec.name]


def _run(rt, feeds, served) -> dict:
    """``rt.run(feeds)``; a runtime object with only ``predict`` (one input, one output) too."""
    if hasattr(rt, "run"):
        return rt.run(feeds)
    if isinstance(feeds, dict):
        feeds = feeds[served.input_spec.name]
    return {served.output_spec.name: rt.predict(feeds)}


class ModelStore:
    """Named models with numeric versions and optional version labels."""

    def __init__(self):
        self.models: dict[str, dict[int, ServedVersion]] = {}
        self.labels: dict[str, dict[str, int]] = {}
        #: vector indexes searched by ``:search``, by model name (:meth:`add_index`)
        self.indexes: dict[str, object] = {}

    def add_index(self, name: str, directory) -> object:
        """Attach the vector index at ``directory`` (``kvision index build``) to model ``name``
        for ``:search``; every served version must embed as the index's model.

        Raises:
            NotFound: no model ``name``; FileNotFoundError: no index; InputValueError: a version
            that is not an embedding model, or whose contract differs from the index's.
        """
        from kvision.index import load_index
        from kvision.index.images import check_compatible

        if name not in self.models:
            raise NotFound(f"--index names model {name!r}, which is not served")
        index = load_index(directory)
        for served in self.models[name].values():
            if served.contract is None or served.contract.task != "embedding":
                raise InputValueError(
                    f"{served.path} is not an embedding model: it cannot search {directory}"
                )
            check_compatible(dict(index.contract or {}), served.contract, served.path)
        self.indexes[name] = index
        return index

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
            path: ``.tflite``, ``.keras`` / ``.h5`` / ``.hdf5``, a SavedModel version folder,
                or a SavedModel model folder with numeric versions (every version is served;
                the highest is the default, as in TF Serving).
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
        try:
            rt = pool.runtimes[0]
            inputs, outputs = rt.inputs, rt.outputs
            contract, source = find_contract(path, inputs)
            signature = {}
            if fmt == "saved_model":
                from deploy.serving.signature import read_signature_defs
                from kvision.runtime import saved_model_version_dir

                signature = read_signature_defs(saved_model_version_dir(path))
        except BaseException:
            pool.close()
            raise
        return ServedVersion(
            name,
            version,
            Path(path),
            fmt,
            pool,
            contract,
            source,
            inputs[0],
            primary_output(outputs) or outputs[0],
            signature,
            inputs,
            outputs,
        )
