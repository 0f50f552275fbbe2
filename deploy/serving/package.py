"""Package SavedModels for TF Serving: numeric versions, ``models.config``, batching, warm-up.

Output layout of :func:`package_for_serving` (``out_dir`` is mounted at ``/models``)::

    out_dir/models.config                     model_config_list: names, base paths, version
                                              policy, version labels
    out_dir/batching_parameters.txt           BatchingParameters (text proto)
    out_dir/docker-compose.yml                tensorflow/serving bound to 127.0.0.1
    out_dir/<name>/<version>/saved_model.pb   copied SavedModel version folders
    out_dir/<name>/<version>/assets.extra/tf_serving_warmup_requests
                                              TFRecord of PredictionLog (<= 1000 records)

Example:
    >>> pkg = package_for_serving(
    ...     "runs/x/serving",
    ...     [ServedModel("classifier", {1: "runs/x/export/saved_model/classifier/1"},
    ...                  labels={"stable": 1})])
    >>> sorted(pkg)
    ['batching', 'compose', 'config', 'versions']
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError, MissingDependencyError
from kvision.io import atomic_write_text

DEFAULT_IMAGE = "tensorflow/serving:2.20.0"
CONTAINER_ROOT = "/models"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
POLICIES = ("latest", "all", "specific")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SERVING_HINT = "pip install tensorflow-serving-api==2.21.0"


@dataclass
class ServedModel:
    """One model in ``models.config``.

    Args:
        name: model name in URLs (``/v1/models/<name>``).
        versions: ``{version: SavedModel version folder}`` to copy in.
        labels: version labels, e.g. ``{"stable": 1, "canary": 2}`` (default none).
        policy: ``"latest"`` (default: serve the ``num_latest`` highest versions), ``"all"``, or
            ``"specific"`` (serve exactly ``versions``' keys).
        num_latest: how many versions ``"latest"`` serves (default 1).
    """

    name: str
    versions: dict
    labels: dict = field(default_factory=dict)
    policy: str = "latest"
    num_latest: int = 1

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                "`name` should be letters, digits, '_', '.' or '-' (no slashes). "
                f"Received: name={self.name!r}"
            )
        if not self.versions:
            raise ValueError(f"`versions` of model {self.name!r} should not be empty.")
        for v in self.versions:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(
                    f"Version numbers should be non-negative integers. Received: {v!r}"
                )
        if self.policy not in POLICIES:
            raise ValueError(f"`policy` should be one of {POLICIES}. Received: {self.policy!r}")
        for label, v in self.labels.items():
            if not _NAME.match(str(label)) or v not in self.versions:
                raise ValueError(
                    f"Label {label!r} should name one of the versions {sorted(self.versions)} "
                    f"(TF Serving refuses labels of unavailable versions). Received: {v!r}"
                )
            if self.policy == "latest" and v not in sorted(self.versions)[-self.num_latest :]:
                raise ValueError(
                    f"Label {label!r} points at version {v}, which policy 'latest' "
                    f"(num_latest={self.num_latest}) does not serve; use policy='specific' "
                    "or 'all'."
                )


@dataclass
class BatchingParameters:
    """TF Serving's server-side batching (``--enable_batching``).

    Args:
        max_batch_size: largest batch formed (default 32).
        batch_timeout_micros: longest wait for a batch to fill (default 2000).
        num_batch_threads: batches run in parallel (default: CPU count).
        max_enqueued_batches: queue bound; beyond it requests fail fast (default 100).
        allowed_batch_sizes: pad batches up to one of these (default none).
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 100
    allowed_batch_sizes: tuple = ()

    def to_text(self) -> str:
        """The text-format ``BatchingParameters`` proto TF Serving reads."""
        lines = [
            f"max_batch_size {{ value: {int(self.max_batch_size)} }}",
            f"batch_timeout_micros {{ value: {int(self.batch_timeout_micros)} }}",
            f"num_batch_threads {{ value: {int(self.num_batch_threads)} }}",
            f"max_enqueued_batches {{ value: {int(self.max_enqueued_batches)} }}",
        ]
        sizes = sorted(int(s) for s in self.allowed_batch_sizes)
        if sizes and sizes[-1] != self.max_batch_size:
            raise ValueError(
                "The largest of `allowed_batch_sizes` should equal `max_batch_size` "
                f"({self.max_batch_size}). Received: {sizes}"
            )
        lines += [f"allowed_batch_sizes: {s}" for s in sizes]
        return "\n".join(lines) + "\n"


def models_config_text(models: list[ServedModel], root: str = CONTAINER_ROOT) -> str:
    """``models.config`` (ModelServerConfig text proto) for ``models`` under ``root``.

    Example:
        >>> print(models_config_text([ServedModel("m", {1: "a"}, policy="all")]))  # doctest: +SKIP
        model_config_list {
          config {
            name: "m"
            base_path: "/models/m"
        ...
    """
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"Model names should be unique. Received: {names}")
    out = ["model_config_list {"]
    for m in models:
        out += [
            "  config {",
            f'    name: "{m.name}"',
            f'    base_path: "{root.rstrip("/")}/{m.name}"',
            '    model_platform: "tensorflow"',
        ]
        if m.policy == "all":
            out.append("    model_version_policy { all {} }")
        elif m.policy == "specific":
            versions = " ".join(f"versions: {v}" for v in sorted(m.versions))
            out.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        else:
            out.append(f"    model_version_policy {{ latest {{ num_versions: {m.num_latest} }} }}")
        for label, v in sorted(m.labels.items()):
            out.append(f'    version_labels {{ key: "{label}" value: {v} }}')
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def compose_text(
    image: str = DEFAULT_IMAGE,
    models_dir: str = ".",
    rest_port: int = 8501,
    grpc_port: int = 8500,
    batching: bool = True,
) -> str:
    """A docker-compose file running ``image`` with this package, bound to 127.0.0.1 only."""
    flags = [
        f"--model_config_file={CONTAINER_ROOT}/models.config",
        "--model_config_file_poll_wait_seconds=60",
        "--enable_model_warmup=true",
    ]
    if batching:
        flags += [
            "--enable_batching=true",
            f"--batching_parameters_file={CONTAINER_ROOT}/batching_parameters.txt",
        ]
    command = "\n".join(f"      - {f}" for f in flags)
    return f"""# Generated by deploy.serving.package_for_serving. Ports bind to 127.0.0.1 only.
services:
  tf-serving:
    image: {image}
    ports:
      - "127.0.0.1:{grpc_port}:8500"
      - "127.0.0.1:{rest_port}:8501"
    volumes:
      - {models_dir}:{CONTAINER_ROOT}:ro
    command:
{command}
    restart: unless-stopped
"""


def write_warmup_requests(
    version_dir, model_name: str, samples, signature: str = "serving_default"
) -> Path:
    """Write ``assets.extra/tf_serving_warmup_requests``: one batch-1 Predict per sample.

    Input names and dtypes come from the SavedModel's own serving signature.

    Args:
        version_dir: SavedModel version folder.
        model_name: the served name (goes into each request's ``model_spec``).
        samples: model inputs ``[N, ...]`` (N <= 1000) for a one-input signature, e.g. a few
            validation images, or ``{input name: array [N, ...]}`` naming every input.
        signature: signature key (default ``"serving_default"``).

    Raises:
        InputValueError: samples that do not name the signature's inputs, or N out of range.
        MissingDependencyError: tensorflow-serving-api is not installed.
    """
    import tensorflow as tf

    from deploy.serving.signature import read_serving_signature

    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            f"Warm-up records need tensorflow-serving-api: {_SERVING_HINT}"
        ) from exc
    sig = read_serving_signature(version_dir, signature)
    names = sorted(sig["inputs"])
    if not isinstance(samples, dict):
        if len(names) != 1:
            raise InputValueError(
                f"{version_dir}: the signature has inputs {names}; pass `samples` as "
                "{name: array}."
            )
        samples = {names[0]: samples}
    if sorted(samples) != names:
        raise InputValueError(
            f"`samples` should name the signature's inputs {names}. Received: {sorted(samples)}"
        )
    arrays = {k: np.asarray(v) for k, v in samples.items()}
    counts = {len(v) if v.ndim else 0 for v in arrays.values()}
    n = counts.pop() if len(counts) == 1 else -1
    if not 0 < n <= MAX_WARMUP_RECORDS:
        raise InputValueError(
            f"`samples` should hold 1 to {MAX_WARMUP_RECORDS} rows per input, the same for "
            f"every input. Received: shapes { ({k: v.shape for k, v in arrays.items()}) }"
        )
    dtypes = {
        k: tf.dtypes.as_dtype(_DT[spec["dtype"]]) if spec["dtype"] in _DT else tf.float32
        for k, spec in sig["inputs"].items()
    }
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for i in range(n):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for k, x in arrays.items():
                request.inputs[k].CopyFrom(
                    tf.make_tensor_proto(x[i : i + 1].astype(dtypes[k].as_numpy_dtype))
                )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    os.replace(tmp, path)
    return path


def _input_infos(version_dir) -> list:
    """The signature's inputs as ``TensorInfo``, read from ``saved_model.pb`` (no TF graph)."""
    from deploy.serving.signature import read_serving_signature
    from kvision.runtime import TensorInfo

    infos = []
    for name, spec in sorted(read_serving_signature(version_dir)["inputs"].items()):
        shape = tuple(None if d < 0 else d for d in (spec["shape"] or []))
        infos.append(TensorInfo(name, shape, _DT.get(spec["dtype"], "float32")))
    return infos


_DT = {"DT_FLOAT": "float32", "DT_UINT8": "uint8", "DT_INT8": "int8", "DT_HALF": "float16"}


def _warmup_samples(version_dir, records: int, seed: int):
    """Seeded warm-up inputs: pixel noise normalized by the contract for an image model, else
    noise in each input's own domain (``kvision.runtime.probe_feeds``)."""
    from kvision.runtime import find_contract, probe_feeds

    inputs = _input_infos(version_dir)
    contract, _ = find_contract(version_dir, inputs)
    return probe_feeds(inputs, records, contract, seed=seed)


def package_for_serving(
    out_dir,
    models: list[ServedModel],
    batching: BatchingParameters | None = None,
    warmup_samples=None,
    warmup_records: int = 8,
    image: str = DEFAULT_IMAGE,
    rest_port: int = 8501,
    grpc_port: int = 8500,
    overwrite: bool = False,
    config_root: str = CONTAINER_ROOT,
) -> dict:
    """Copy SavedModel versions into a TF Serving model base folder and write its config.

    Args:
        out_dir: the folder to build (mounted at ``/models`` by the compose file).
        models: :class:`ServedModel` entries.
        batching: :class:`BatchingParameters` (default: the defaults; ``None`` still writes
            the file; pass ``False`` to disable batching).
        warmup_samples: ``{model name: inputs [N, H, W, C]}`` (or ``{model name: {input name:
            array}}`` for a model with several inputs) for warm-up records (default:
            ``warmup_records`` deterministic pixel-noise images normalized by the contract).
        warmup_records: records per version when no samples are given (default 8; 0 = none).
        image: TF Serving image for the compose file (default ``tensorflow/serving:2.20.0``).
        rest_port, grpc_port: host ports, bound to 127.0.0.1 (defaults 8501, 8500).
        overwrite: replace existing version folders (default False: raise).
        config_root: the base path ``models.config`` names (default ``/models``, where the
            compose file mounts ``out_dir``; pass ``str(out_dir)`` for a local binary).

    Returns:
        ``{"config", "batching", "compose": Path, "versions": {name: {version: Path}}}``.
    """
    from kvision.export.saved_model import _replace_dir
    from kvision.runtime import saved_model_version_dir

    out = Path(out_dir)
    models = list(models)
    if not models:
        raise ValueError("`models` should hold at least one ServedModel. Received: []")
    config = models_config_text(models, config_root)  # validates names before anything is copied
    batch_params = None if batching is False else (batching or BatchingParameters())
    copied: dict = {}
    for m in models:
        copied[m.name] = {}
        for version, src in sorted(m.versions.items()):
            src = saved_model_version_dir(src)
            dst = out / m.name / str(version)
            if dst.exists() and not overwrite:
                raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it.")
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{version}.", suffix=".tmp"))
            try:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
                samples = (warmup_samples or {}).get(m.name)
                if samples is None and warmup_records:
                    samples = _warmup_samples(tmp, warmup_records, seed=version)
                if samples is not None:
                    write_warmup_requests(tmp, m.name, samples)
                _replace_dir(tmp, dst)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            copied[m.name][version] = dst
    paths = {"config": atomic_write_text(out / "models.config", config)}
    if batch_params is not None:
        paths["batching"] = atomic_write_text(
            out / "batching_parameters.txt", batch_params.to_text()
        )
    else:
        paths["batching"] = None
    paths["compose"] = atomic_write_text(
        out / "docker-compose.yml",
        compose_text(image, ".", rest_port, grpc_port, batching=batch_params is not None),
    )
    paths["versions"] = copied
    return paths
