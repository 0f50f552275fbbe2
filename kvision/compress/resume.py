"""Per-technique state of a compress run, so a killed run resumes at the technique it was in.

After each technique finishes, :meth:`TechniqueStore.save` writes ``<run_dir>/state/<name>.json``
atomically: what the technique added to the result (artifact rows, per-layer reports, weight
statistics, schedule, distillation numbers, wall time) and the size and SHA-256 of every file it
wrote. The state is keyed by a fingerprint of the float model (layer names, classes and weights),
the shape of the training data, and by that technique's settings (:func:`technique_settings`): a
changed setting redoes that technique only. :meth:`TechniqueStore.load` returns a state only
when the key matches *and* every recorded file is still there with the same bytes; anything else
(a missing, truncated or edited file, another model, a new setting) redoes the technique.

Example::

    store = TechniqueStore(run_dir, {"model": model_fingerprint(model)})
    state = store.load("qat", settings)         # None: run it, then store.save("qat", ...)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from kvision.io import json_default

STATE_DIR = "state"
SCHEMA = 1


def model_fingerprint(model) -> str:
    """SHA-256 of ``model``'s layer names, classes and weights (float model identity).

    Two loads of the same checkpoint give the same fingerprint; any changed weight changes it.
    """
    digest = hashlib.sha256()

    def walk(layers):
        for layer in layers:
            digest.update(f"{layer.name}:{type(layer).__name__};".encode())
            walk(getattr(layer, "layers", []))  # nested models

    walk(model.layers)
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{weight.name}{value.shape}{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# CompressConfig sections (and which techniques of cfg.techniques) each runner depends on
_RUNNER_SECTIONS = {
    "ptq": (("ptq",), ()),
    "qat": (("qat",), ()),
    "prune": (("prune", "qat"), ("prune", "pqat")),
    "cluster": (("cluster", "qat"), ("cluster", "cqat")),
    "distill": (("distill",), ()),
}
_COMMON = (
    "verify_samples",
    "min_top1_agreement",
    "steps_per_epoch",
    "self_distill",
    "model_name",
    "seed",
)


def technique_settings(cfg, runner: str) -> dict:
    """The settings of ``cfg`` (a ``CompressConfig``) that the ``runner`` technique depends on.

    ``runner`` is ``ptq``, ``qat``, ``prune`` (pruning and PQAT), ``cluster`` (clustering and
    CQAT) or ``distill``. Fine-tuning techniques also depend on the self-distillation
    temperature and weight; every technique on the calibration count (``max`` of the PTQ and QAT
    ``calibration_samples``) and on the shared settings (verification, seed, file names).

    Raises:
        ValueError: unknown ``runner`` (the known ones are listed).
    """
    if runner not in _RUNNER_SECTIONS:
        raise ValueError(
            f"`runner` should be one of {sorted(_RUNNER_SECTIONS)}. Received: runner={runner!r}"
        )
    sections, members = _RUNNER_SECTIONS[runner]
    out = {name: getattr(cfg, name) for name in _COMMON}
    out["calibration_samples"] = max(cfg.ptq.calibration_samples, cfg.qat.calibration_samples)
    out.update({name: getattr(cfg, name).to_dict() for name in sections})
    if runner != "ptq":
        out["self_distill_temperature"] = cfg.distill.temperature
        out["self_distill_alpha"] = cfg.distill.alpha
    if members:
        out["techniques"] = [t for t in members if t in cfg.techniques]
    return json.loads(json.dumps(out))  # plain JSON types, as read back


class TechniqueStore:
    """Reads and writes the per-technique states of one compress run directory.

    Args:
        run_dir: the compress output folder (states go to ``run_dir/state``).
        key: what every state must match besides the technique's settings (model and data
            fingerprints, versions), JSON-serializable.
    """

    def __init__(self, run_dir, key: dict):
        self.run_dir = Path(run_dir)
        self.key = json.loads(json.dumps(key))
        self.last_reason = ""

    def path(self, name: str) -> Path:
        return self.run_dir / STATE_DIR / f"{name}.json"

    def load(self, name: str, settings: dict) -> dict | None:
        """The state of technique ``name`` if it matches and its files check out, else None.

        ``last_reason`` says why a state that exists was not used.
        """
        self.last_reason = ""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            self.last_reason = f"unreadable state file {path}"
            return None
        if state.get("schema") != SCHEMA or state.get("key") != self.key:
            self.last_reason = "another model, data set or library version"
            return None
        if state.get("settings") != settings:
            self.last_reason = "its settings changed"
            return None
        for rel, want in state.get("files", {}).items():
            file = self.run_dir / rel
            if not file.is_file():
                self.last_reason = f"{file} is missing"
                return None
            if file.stat().st_size != want["bytes"] or file_sha256(file) != want["sha256"]:
                self.last_reason = f"{file} changed since it was verified"
                return None
        for artifact in state["payload"]["artifacts"]:
            artifact["path"] = str(self.run_dir / artifact["path"])
        return state

    def save(self, name: str, settings: dict, payload: dict) -> Path:
        """Write technique ``name``'s state atomically: ``payload`` holds what it added to the
        result (``artifacts`` as dicts, ``reports``, ``weights``, ``extra``, ``wall_time_s``);
        the artifacts' files (``.tflite`` and contract) are hashed now."""
        from kvision.io import atomic_write_json
        from kvision.models.contract import contract_path

        files = {}
        payload = json.loads(json.dumps(payload, default=json_default))
        for artifact in payload["artifacts"]:
            path = Path(artifact["path"])
            artifact["path"] = self._relative(path)
            for file in (path, contract_path(path)):
                if file.is_file():
                    files[self._relative(file)] = {
                        "bytes": file.stat().st_size,
                        "sha256": file_sha256(file),
                    }
        state = {
            "schema": SCHEMA,
            "technique": name,
            "key": self.key,
            "settings": settings,
            "files": files,
            "payload": payload,
        }
        return atomic_write_json(self.path(name), state)

    def _relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.run_dir.resolve()))
        except ValueError as exc:
            raise ValueError(
                f"Artifact {path} is outside the compress folder {self.run_dir}; it cannot be "
                "recorded for resuming."
            ) from exc


def set_digest(x, y) -> str:
    """SHA-256 (16 hex digits) of a labelled set ``(x, y)``, whatever its order: the sorted
    digests of its ``(image, label)`` rows, with the dtypes and shapes."""
    x, y = np.ascontiguousarray(x), np.asarray(y)
    rows = sorted(hashlib.sha256(x[i].tobytes() + y[i].tobytes()).digest() for i in range(len(x)))
    h = hashlib.sha256(f"{x.dtype}{x.shape}{y.dtype}".encode())
    for row in rows:
        h.update(row)
    return h.hexdigest()[:16]


def data_key(x_test, y_test, contract) -> dict:
    """The data part of a technique's key: the test set's digest (in any order: a shuffled test
    pipeline is the same set) and the input contract. The verification samples and calibration
    images are drawn from pipelines that may be shuffled or augmented, so they cannot be keyed
    bit for bit; the training data enters the key through its batch spec and count."""
    return {
        "test": set_digest(x_test, y_test),
        "contract": contract.to_dict() if contract is not None else None,
    }


def technique_store(model, run_dir, train_ds=None, data: dict | None = None):
    """The :class:`TechniqueStore` of ``run_dir``, keyed by the float ``model``'s fingerprint,
    the training data's shape (batch spec and number of batches, when known), ``data`` (digests
    of the verification samples, calibration images and test set, and the input contract) and
    the library versions: a resumed technique must have been made from the same model and data.
    """
    import tensorflow as tf

    import kvision

    key = {
        "model": model_fingerprint(model),
        "kvision": kvision.__version__,
        "tensorflow": tf.__version__,
    }
    if isinstance(train_ds, tf.data.Dataset):
        key["train_batches"] = int(train_ds.cardinality())
        key["train_spec"] = str(train_ds.element_spec)
    key.update(data or {})
    return TechniqueStore(run_dir, key)


def restore(result, payload: dict) -> None:
    """Add a saved technique's ``payload`` (see :meth:`TechniqueStore.save`) to ``result`` (a
    ``CompressionResult``), as if the technique had just run."""
    from kvision.compress.layer_report import LayerReport
    from kvision.export.artifact import Artifact

    result.artifacts.extend(Artifact.from_dict(a) for a in payload["artifacts"])
    result.reports.extend(LayerReport.from_dict(r) for r in payload["reports"])
    result.weights.update(payload["weights"])
    if payload.get("schedule"):
        result.schedule = payload["schedule"]
    if payload.get("distill"):
        result.distill = payload["distill"]
