"""``benchmark.json``: one row per artifact x runtime x thread count, and the file around them.

Schema (``BENCHMARK_SCHEMA_VERSION`` 1)::

    schema_version   int (1)
    created          ISO-8601 UTC time
    host             {platform, machine, python, cpu_count, tensorflow, ai_edge_litert,
                      onnxruntime (null when not installed)}
    settings         {warmup, runs, batch_size, throughput_runs, threads: [int],
                      floor: number | null, min_agreement: number | null, metric: "accuracy",
                      memory_method: str}
    data             {source, n, labels} | null   (no dataset: no metric)
    baseline         {artifact, runtime, metric, n} | null   (n: images the metric is on)
    rows             [row, ...]

    row:
      artifact       str   artifact name (file stem, or the name given)
      path           str   artifact path
      format         "tflite" | "saved_model" | "keras" | "onnx"
      runtime        str   runtime name (deploy.runtimes.registry), e.g. "litert_no_xnnpack"
      threads        int | null   (null: the runtime's default / no thread setting)
      status         "ok" | "below_floor" | "failed_validation" | "failed_load" |
                     "failed_run" | "unavailable"
      reason         str   why, when status != "ok" ("" otherwise)
      size_mb        float  on-disk size (a SavedModel: the version folder)
      gzip_mb        float  gzip -9 size (a folder: of a deterministic tar)
      input          {name, shape, dtype, scale, zero_point} | null   the first input
      output         same, for the primary output (the only one, else "probabilities") | null
      inputs         [{name, shape, dtype, scale, zero_point}]   every input (read from the
                     artifact; names are what the runtime is fed by)
      outputs        same, every output
      ops            [str] | null   op names of a .tflite (null for other formats)
      task           str | null   "classification", a contract's task, or null (unknown)
      contract_source  "file" (contract.json beside the artifact) | "derived" | null (none:
                     several inputs, or an input that is not an image)
      metric         {name: "accuracy", value, delta_vs_baseline, n} | null
                     (delta_vs_baseline: null unless the baseline scored the same n images)
      agreement      float | null   top-1 agreement with the baseline row's outputs
      not_done       {check: reason}   checks not done and why ("metric", "agreement"), e.g.
                     {"metric": "no task known: ..."}; a check listed here has no number
      latency        batch-1 stats from kvision.evaluate.latency_stats: {p50_ms, p90_ms,
                     p99_ms, mean_ms, min_ms, max_ms, std_ms, runs, warmup} | null
      latency_samples_ms  [float]  every timed batch-1 call (for distributions)
      throughput     {batch_size, p50_ms, images_per_s} | null
      load_s         float | null   seconds to load (incl. any conversion, e.g. tf2onnx)
      memory         {peak_rss_mb, rss_before_mb, peak_delta_mb, method} | null
      options        the runtime's describe() (xnnpack, delegate, device ...)

Example:
    >>> row = BenchmarkRow("classifier_int8", "m.tflite", "tflite", "litert", 1, "ok")
    >>> BenchmarkRow.from_dict(row.to_dict()) == row
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from kvision.errors import InputValueError

BENCHMARK_SCHEMA_VERSION = 1
STATUSES = (
    "ok",
    "below_floor",
    "failed_validation",
    "failed_load",
    "failed_run",
    "unavailable",
)
FAILED = ("below_floor", "failed_validation", "failed_load", "failed_run")
# A broken artifact: it could not be loaded, run, or its outputs are not valid.
BROKEN = ("failed_validation", "failed_load", "failed_run")


@dataclass
class BenchmarkRow:
    """One artifact run by one runtime at one thread count (see the module docstring)."""

    artifact: str
    path: str
    format: str
    runtime: str
    threads: int | None
    status: str
    reason: str = ""
    size_mb: float = 0.0
    gzip_mb: float = 0.0
    input: dict | None = None
    output: dict | None = None
    contract_source: str | None = None
    metric: dict | None = None
    agreement: float | None = None
    latency: dict | None = None
    latency_samples_ms: list = field(default_factory=list)
    throughput: dict | None = None
    load_s: float | None = None
    memory: dict | None = None
    options: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    ops: list | None = None
    task: str | None = None
    not_done: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(
                f"`status` should be one of {STATUSES}. Received: status={self.status!r}"
            )
        self.path = str(self.path)

    @property
    def label(self) -> str:
        """``artifact / runtime [xN threads]``, the row's name in tables and plots."""
        t = f" x{self.threads}" if self.threads else ""
        return f"{self.artifact} / {self.runtime}{t}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchmarkRow:
        """Inverse of :meth:`to_dict`; unknown keys raise ``InputValueError`` (a ``ValueError``)
        naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputValueError(
                f"Unknown BenchmarkRow field(s) {unknown}. Allowed: {sorted(names)}."
            )
        return cls(**data)


def validate_benchmark(doc: dict) -> None:
    """Check a ``benchmark.json`` dict; raise ``kvision.errors.InputValueError`` (a
    ``ValueError``) naming the first bad field."""
    if not isinstance(doc, dict):
        raise InputValueError(f"benchmark should be a JSON object. Received: {type(doc).__name__}")
    if doc.get("schema_version") != BENCHMARK_SCHEMA_VERSION:
        raise InputValueError(
            f"schema_version should be {BENCHMARK_SCHEMA_VERSION}. "
            f"Received: {doc.get('schema_version')!r}"
        )
    for key in ("created", "host", "settings", "rows"):
        if key not in doc:
            raise InputValueError(f"benchmark is missing `{key}`")
    if not isinstance(doc["rows"], list):
        raise InputValueError("`rows` should be a list")
    for i, row in enumerate(doc["rows"]):
        try:
            BenchmarkRow.from_dict(row)
        except (TypeError, ValueError) as exc:
            raise InputValueError(f"rows[{i}]: {exc}") from exc
