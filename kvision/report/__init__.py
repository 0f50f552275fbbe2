"""The run report: ``report.json`` (data, documented schema) first, then Markdown and HTML from it.

paths = write_report(report, run_dir)   # {"json": ..., "markdown": ..., "html": ...}
"""

from __future__ import annotations

import json
from pathlib import Path

from kvision.io import atomic_write_json, atomic_write_text
from kvision.report.html import render_html
from kvision.report.markdown import render_markdown, summarize
from kvision.report.schema import REPORT_SCHEMA_VERSION, ReportSchemaError, validate_report

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "ReportSchemaError",
    "validate_report",
    "write_report",
    "render_markdown",
    "render_html",
    "summarize",
]

REPORT_FILES = {"json": "report.json", "markdown": "report.md", "html": "report.html"}


def write_report(report: dict, run_dir) -> dict[str, Path]:
    """Validate ``report`` and write ``report.json``, ``report.md`` and ``report.html`` atomically.

    The JSON is written first; Markdown and HTML are rendered from the JSON as written, so all
    three show the same data (NumPy numbers and ``Path`` values become plain JSON).

    Args:
        report: the report dict (schema: ``kvision.report.schema``, ``docs/report_schema.md``).
        run_dir: the run directory; report paths are relative to it. Created if missing.

    Returns:
        ``{"json": Path, "markdown": Path, "html": Path}``.

    Example:
        >>> paths = write_report(report, "runs/demo")
        >>> sorted(paths)
        ['html', 'json', 'markdown']
    """
    validate_report(report)
    run_dir = Path(run_dir)
    json_path = atomic_write_json(run_dir / REPORT_FILES["json"], report)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    md_path = atomic_write_text(run_dir / REPORT_FILES["markdown"], render_markdown(data))
    html_path = atomic_write_text(run_dir / REPORT_FILES["html"], render_html(data, run_dir))
    return {"json": json_path, "markdown": md_path, "html": html_path}
