"""Self-contained HTML benchmark report: the table plus plots as inline PNGs.

Plots: accuracy vs p50 latency with the Pareto front (rows nothing beats on both), file vs gzip
size per artifact (``kvision.evaluate.artifact_sizes_figure``), and batch-1 latency
distributions (box plots of every timed call). matplotlib is imported when a plot is drawn.

Example:
    >>> html = render_html(json.load(open("runs/x/benchmark/benchmark.json")))
"""

from __future__ import annotations

import base64
import html as _html

import numpy as np

from deploy.benchmark.outputs import flat_row

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#1e293b;max-width:1400px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #e2e8f0;padding:3px 7px}
th{background:#f1f5f9}td.num{text-align:right}.ok{color:#16a34a}.unavailable{color:#64748b}
.failed_load,.failed_run,.failed_validation,.below_floor{color:#dc2626}
img{max-width:100%;margin:1em 0}
"""


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (lower latency, higher metric), by latency.

    Example:
        >>> pareto_front([(1.0, 0.8), (2.0, 0.9), (3.0, 0.85)])
        [0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def metric_latency_figure(rows: list[dict]):
    """Accuracy vs p50 latency, Pareto front drawn; ``None`` when no row has both."""
    pts = [
        (r["latency"]["p50_ms"], r["metric"]["value"], r)
        for r in rows
        if r["status"] in ("ok", "below_floor") and r.get("metric") and r.get("latency")
    ]
    if not pts:
        return None
    from kvision.evaluate.plots import FORMAT_COLORS, TEXT_COLOR, _figure, _style

    fig = _figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    runtimes = list(dict.fromkeys(p[2]["runtime"] for p in pts))
    for k, rt in enumerate(runtimes):
        group = [p for p in pts if p[2]["runtime"] == rt]
        ax.scatter(
            [p[0] for p in group],
            [p[1] for p in group],
            s=45,
            color=FORMAT_COLORS[k % len(FORMAT_COLORS)],
            label=rt,
            zorder=3,
            edgecolor="white",
        )
    front = pareto_front([(p[0], p[1]) for p in pts])
    ax.plot(
        [pts[i][0] for i in front],
        [pts[i][1] for i in front],
        color="#dc2626",
        lw=1,
        ls="--",
        zorder=2,
        label="Pareto front",
    )
    for i in front:
        r = pts[i][2]
        ax.annotate(
            f"{r['artifact']}" + (f" x{r['threads']}" if r.get("threads") else ""),
            (pts[i][0], pts[i][1]),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize=7,
            color=TEXT_COLOR,
        )
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs latency (up-left is better)", loc="left", fontsize=11)
    ax.legend(frameon=False, fontsize=8, loc="best")
    _style(ax)
    fig.tight_layout()
    return fig


def sizes_figure(rows: list[dict]):
    """File vs gzip size per artifact (one bar pair per artifact, not per runtime)."""
    from kvision.evaluate.plots import artifact_sizes_figure

    seen = {}
    for r in rows:
        seen.setdefault(
            r["artifact"],
            {
                "name": r["artifact"],
                "size_bytes": (r.get("size_mb") or 0) * 1e6,
                "gzip_bytes": (r.get("gzip_mb") or 0) * 1e6,
            },
        )
    return artifact_sizes_figure(list(seen.values()))


def latency_distribution_figure(rows: list[dict]):
    """Box plots of every timed batch-1 call per row; ``None`` when nothing was timed."""
    timed = [r for r in rows if r.get("latency_samples_ms")]
    if not timed:
        return None
    from kvision.evaluate.plots import LIGHT_COLOR, _figure, _style

    fig = _figure(figsize=(7.5, 0.32 * len(timed) + 1.6))
    ax = fig.add_subplot()
    labels = [
        f"{r['artifact']} / {r['runtime']}" + (f" x{r['threads']}" if r.get("threads") else "")
        for r in timed
    ]
    box = ax.boxplot(
        [r["latency_samples_ms"] for r in timed],
        vert=False,
        patch_artist=True,
        showfliers=True,
        flierprops={"markersize": 2},
    )
    for patch in box["boxes"]:
        patch.set_facecolor(LIGHT_COLOR)
    ax.set_yticks(range(1, len(timed) + 1), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency per call (ms, log scale)")
    ax.set_title("Latency distributions", loc="left", fontsize=11)
    _style(ax, grid_axis="x")
    fig.tight_layout()
    return fig


def render_html(doc: dict) -> str:
    """The whole report as one HTML string (images inlined as base64 PNG)."""
    from deploy.benchmark.outputs import render_markdown

    rows = doc["rows"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>kvision benchmark</title>",
        f"<style>{_CSS}</style></head><body><h1>Benchmark</h1>",
    ]
    header = render_markdown(doc).split("\n\n")[1]  # the settings bullet list
    parts.append(
        "<ul>"
        + "".join(f"<li>{_html.escape(x[2:])}</li>" for x in header.splitlines() if x)
        + "</ul>"
    )
    parts.append(_table(rows))
    for title, make in (
        ("Accuracy vs latency", metric_latency_figure),
        ("Sizes", sizes_figure),
        ("Latency distributions", latency_distribution_figure),
    ):
        fig = make(rows)
        if fig is not None:
            from kvision.evaluate.plots import figure_to_png

            png = base64.b64encode(figure_to_png(fig)).decode("ascii")
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{png}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(rows: list[dict]) -> str:
    cols = [
        ("artifact", None),
        ("runtime", None),
        ("threads", "{}"),
        ("status", None),
        ("size_mb", "{:.3f}"),
        ("gzip_mb", "{:.3f}"),
        ("input_dtype", None),
        ("accuracy", "{:.4f}"),
        ("delta_vs_baseline", "{:+.4f}"),
        ("agreement", "{:.3f}"),
        ("p50_ms", "{:.3f}"),
        ("p90_ms", "{:.3f}"),
        ("p99_ms", "{:.3f}"),
        ("images_per_s", "{:,.0f}"),
        ("load_s", "{:.2f}"),
        ("peak_rss_mb", "{:.0f}"),
        ("not_done", None),
        ("reason", None),
    ]
    out = ["<table><tr>" + "".join(f"<th>{c}</th>" for c, _ in cols) + "</tr>"]
    for row in rows:
        f = flat_row(row)
        cells = []
        for c, spec in cols:
            v = f[c]
            text = (
                "-"
                if v is None
                else (spec.format(v) if spec and not isinstance(v, str) else str(v))
            )
            cls = "num" if spec else (f["status"] if c == "status" else "")
            cells.append(f"<td class='{cls}'>{_html.escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"
