"""``CompressionResult``: the artifacts, per-layer reports and measurements of one compress run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kvision.compress.layer_report import LayerReport
from kvision.export.artifact import Artifact

REPORT_FILE = "compress_report.json"


@dataclass
class CompressionResult:
    """What :func:`kvision.compress.compress` produced.

    Args:
        artifacts: one :class:`~kvision.export.Artifact` per TFLite file (float32 baseline first),
            each verified, evaluated on the test set and gated by the accuracy floor.
        reports: :class:`LayerReport` per technique (what happened to every layer, and why).
        float_accuracy: the float Keras model's test accuracy.
        weights: per artifact name, measured weight statistics: ``target_sparsity``,
            ``keras_sparsity``, ``tflite_sparsity`` (zero fraction over the pruned layers),
            ``clusters`` and ``max_unique_per_channel`` (clustered layers), and per-layer rows.
        distill: teacher / student / scratch-student accuracies when distillation ran.
        errors: technique -> message for techniques that could not run.
        schedule: the resolved pruning schedule (steps), when pruning ran.
        wall_time_s: seconds per technique (fine-tuning, conversion, verification), plus
            ``evaluate`` (test accuracy of every artifact). A resumed technique keeps the time
            it took in the run that made it.
        resumed: techniques whose verified results were reused from an earlier, interrupted
            or finished run in the same folder (see :mod:`kvision.compress.resume`).
    """

    artifacts: list = field(default_factory=list)
    reports: list = field(default_factory=list)
    float_accuracy: float | None = None
    weights: dict = field(default_factory=dict)
    distill: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)
    wall_time_s: dict = field(default_factory=dict)
    resumed: list = field(default_factory=list)

    def artifact(self, name: str) -> Artifact:
        """The artifact called ``name``; ``KeyError`` listing the names otherwise."""
        for a in self.artifacts:
            if a.name == name:
                return a
        raise KeyError(f"No artifact {name!r}. Artifacts: {[a.name for a in self.artifacts]}")

    def report(self, technique: str) -> LayerReport:
        for r in self.reports:
            if r.technique == technique:
                return r
        raise KeyError(f"No {technique!r} report. Reports: {[r.technique for r in self.reports]}")

    def to_dict(self) -> dict:
        return {
            "float_accuracy": self.float_accuracy,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "layer_reports": [r.to_dict() for r in self.reports],
            "weights": self.weights,
            "distill": self.distill,
            "errors": self.errors,
            "schedule": self.schedule,
            "wall_time_s": self.wall_time_s,
            "resumed": self.resumed,
        }

    @classmethod
    def from_dict(cls, data: dict) -> CompressionResult:
        return cls(
            artifacts=[Artifact.from_dict(a) for a in data.get("artifacts", [])],
            reports=[LayerReport.from_dict(r) for r in data.get("layer_reports", [])],
            float_accuracy=data.get("float_accuracy"),
            weights=data.get("weights", {}),
            distill=data.get("distill", {}),
            errors=data.get("errors", {}),
            schedule=data.get("schedule", {}),
            wall_time_s=data.get("wall_time_s", {}),
            resumed=data.get("resumed", []),
        )

    @classmethod
    def load_finished(cls, out_dir, cfg, checkpoint) -> CompressionResult | None:
        """The result saved in ``out_dir`` if it was made from ``checkpoint`` with ``cfg``
        (a ``CompressConfig``) and its files are all there; ``None`` otherwise."""
        path, ckpt = Path(out_dir) / REPORT_FILE, Path(checkpoint)
        if not (path.is_file() and ckpt.is_file()) or path.stat().st_mtime < ckpt.stat().st_mtime:
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("config") != json.loads(json.dumps(cfg.to_dict())):
            return None
        result = cls.from_dict(data)
        if any(a.status == "ok" and not Path(a.path).exists() for a in result.artifacts):
            return None
        return result

    def report_section(self, report_md) -> dict:
        """The run report's ``compression`` section: measured weight statistics (without the
        per-layer rows), the distillation comparison, per-technique layer counts, and
        ``report_md`` (the path of the full per-layer reports, relative to the run)."""
        weights = {
            name: {k: v for k, v in entry.items() if k != "layers"}
            for name, entry in self.weights.items()
        }
        return {
            "float_accuracy": self.float_accuracy,
            "weights": weights,
            "distill": self.distill or None,
            "errors": self.errors,
            "schedule": self.schedule or None,
            "wall_time_s": self.wall_time_s,
            "resumed": self.resumed,
            "layer_reports": [
                {"technique": r.technique, "message": r.message, "summary": r.summary()}
                for r in self.reports
            ],
            "report_md": str(report_md),
        }

    def table(self) -> list[dict]:
        """One row per artifact: name, status, size, gzip size, ratio vs float32, accuracy, drop."""
        base = next((a for a in self.artifacts if a.name == "float32" and a.gzip_bytes), None)
        rows = []
        for a in self.artifacts:
            w = self.weights.get(a.name, {})
            rows.append(
                {
                    "name": a.name,
                    "status": a.status,
                    "size_kb": round(a.size_bytes / 1024, 1),
                    "gzip_kb": round(a.gzip_bytes / 1024, 1),
                    "gzip_ratio": round(base.gzip_bytes / a.gzip_bytes, 2)
                    if base and a.gzip_bytes
                    else None,
                    "accuracy": a.metrics.get("accuracy"),
                    "drop_points": a.metrics.get("accuracy_drop_points"),
                    "io": f"{a.checks.get('input_dtype')}/{a.checks.get('output_dtype')}",
                    "tflite_sparsity": w.get("tflite_sparsity"),
                    "max_unique_per_channel": w.get("max_unique_per_channel"),
                    "reason": a.reason,
                }
            )
        return rows

    def to_markdown(self) -> str:
        """The artifact table as Markdown, then the per-layer reports."""
        head = "| artifact | status | size KB | gzip KB | x smaller (gzip) | accuracy | drop (pts) "
        head += "| I/O | int8 sparsity | reason |"
        lines = [head, "|" + "---|" * 10]

        def fmt(v, pattern):
            return "" if v is None else pattern.format(v)

        for r in self.table():
            lines.append(
                f"| {r['name']} | {r['status']} | {r['size_kb']} | {r['gzip_kb']} | "
                f"{fmt(r['gzip_ratio'], '{:.1f}')} | {fmt(r['accuracy'], '{:.2%}')} | "
                f"{fmt(r['drop_points'], '{:.2f}')} | {r['io']} | "
                f"{fmt(r['tflite_sparsity'], '{:.1%}')} | {r['reason'].replace('|', '/')} |"
            )
        parts = ["\n".join(lines) + "\n"]
        if self.wall_time_s:
            times = ", ".join(
                f"{k} {v:.0f} s" + (" (resumed)" if k in self.resumed else "")
                for k, v in self.wall_time_s.items()
            )
            parts.append(f"Wall time: {times}.\n")
        parts += [r.to_markdown() for r in self.reports]
        return "\n".join(parts)
