"""Per-layer report: what each compression technique did to every layer, and why.

A :class:`LayerReport` is a table (one :class:`LayerRow` per layer) plus a message. The ``action``
vocabulary is small and fixed: ``pruned``, ``clustered``, ``quantized``, ``float`` (left in float by
quantization), ``unchanged`` (not pruned / not clustered). Reports are data first
(:meth:`LayerReport.to_dict`) and render as Markdown (:meth:`LayerReport.to_markdown`).

Example::

    report = quantize_report(model)          # see kvision.compress.qat
    print(report.to_markdown())
    | layer | type | action | reason |
    | stem_conv | Conv2D | quantized | int8 weights (per channel) and activations |
    | double | Lambda | float | tfmot has no quantize config for Lambda ... |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ACTIONS = ("pruned", "clustered", "quantized", "float", "unchanged")


@dataclass
class LayerRow:
    """One layer of a report.

    Args:
        layer: layer name.
        type: layer class name.
        action: one of :data:`ACTIONS`.
        reason: why (always filled, also for the expected case).
        detail: measured numbers (sparsity, unique values ...), optional.
    """

    layer: str
    type: str
    action: str
    reason: str
    detail: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(
                f"`action` should be one of {ACTIONS}. Received: action={self.action!r}"
            )


@dataclass
class LayerReport:
    """What one technique did to each layer of one model.

    Args:
        technique: e.g. ``"prune"``, ``"qat"``, ``"cluster"``, ``"pqat"``.
        rows: one :class:`LayerRow` per layer, in model order.
        message: a summary for the user (e.g. which layers stay in float and what to do).
    """

    technique: str
    rows: list = field(default_factory=list)
    message: str = ""

    def add(self, layer, action: str, reason: str, **detail) -> LayerRow:
        """Append a row for Keras ``layer`` (or a ``(name, type)`` pair)."""
        if isinstance(layer, tuple):
            name, kind = layer
        else:
            name, kind = layer.name, type(layer).__name__
        row = LayerRow(name, kind, action, reason, dict(detail))
        self.rows.append(row)
        return row

    def count(self, action: str) -> int:
        return sum(1 for r in self.rows if r.action == action)

    def names(self, action: str) -> list[str]:
        return [r.layer for r in self.rows if r.action == action]

    def row(self, name: str) -> LayerRow:
        """The row of layer ``name``; ``KeyError`` naming the known layers otherwise."""
        for r in self.rows:
            if r.layer == name:
                return r
        raise KeyError(
            f"No layer {name!r} in the {self.technique} report. Layers: {self.names_all()}"
        )

    def names_all(self) -> list[str]:
        return [r.layer for r in self.rows]

    def summary(self) -> dict:
        """``{action: count}`` for the actions present."""
        out: dict = {}
        for r in self.rows:
            out[r.action] = out.get(r.action, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {
            "technique": self.technique,
            "message": self.message,
            "summary": self.summary(),
            "rows": [asdict(r) for r in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict) -> LayerReport:
        rows = [LayerRow(**r) for r in data.get("rows", [])]
        return cls(data["technique"], rows, data.get("message", ""))

    def to_markdown(self) -> str:
        """The table as Markdown, with the message above it."""
        lines = [f"### {self.technique}: per-layer report", ""]
        if self.message:
            lines += [self.message, ""]
        lines += ["| layer | type | action | reason |", "|---|---|---|---|"]
        for r in self.rows:
            reason = r.reason.replace("|", "\\|")
            lines.append(f"| {r.layer} | {r.type} | {r.action} | {reason} |")
        return "\n".join(lines) + "\n"
