"""PNG plots made from report data: confusion matrix, training curves, artifact comparisons.

Every plot has a ``*_figure`` function that returns a matplotlib ``Figure`` (no pyplot, no global
state, Agg rendering) and the file-writing ones save it atomically::

    plot_confusion_matrix(metrics["confusion_matrix"], labels, run_dir / "confusion_matrix.png")
    plot_training_curves(run_dir / "history.csv", run_dir / "curves.png")
    png = figure_to_png(latency_figure(report["artifacts"]))     # bytes, e.g. for HTML

matplotlib is imported when a plot is made, never at import time.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kvision.io import atomic_write_bytes

__all__ = [
    "plot_confusion_matrix",
    "plot_training_curves",
    "load_history",
    "figure_to_png",
    "confusion_matrix_figure",
    "training_curves_figure",
    "artifact_sizes_figure",
    "latency_figure",
    "accuracy_latency_figure",
    "accuracy_size_figure",
]

TRAIN_COLOR = "#2563eb"
VAL_COLOR = "#ea580c"
MUTED_COLOR = "#94a3b8"
LIGHT_COLOR = "#93c5fd"
TEXT_COLOR = "#1e293b"
FORMAT_COLORS = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#ca8a04"]
_LR_KEYS = ("learning_rate", "lr")


def plot_confusion_matrix(cm, labels, path, normalize: bool = True) -> Path:
    """Write the confusion matrix as a PNG heat map with the values in the cells.

    Args:
        cm: square matrix of counts, rows = true class, columns = predicted class.
        labels: class names, one per row.
        path: output ``.png`` path (written atomically, parent folders created).
        normalize: colour and annotate each row as fractions of its true class (default ``True``).

    Example:
        >>> plot_confusion_matrix([[5, 1], [0, 4]], ["cat", "dog"], "/tmp/cm.png")
        PosixPath('/tmp/cm.png')
    """
    return _save(confusion_matrix_figure(cm, labels, normalize=normalize), path)


def plot_training_curves(history, path) -> Path:
    """Write loss and accuracy curves (train vs validation) and the learning rate as a PNG.

    Args:
        history: a dict of per-epoch lists (``keras.callbacks.History.history``) or the path of a
            Keras ``CSVLogger`` file (``epoch,accuracy,loss,val_accuracy,val_loss,...``).
        path: output ``.png`` path (written atomically).

    Example:
        >>> plot_training_curves({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, "/tmp/curves.png")
        PosixPath('/tmp/curves.png')
    """
    return _save(training_curves_figure(history), path)


def figure_to_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        dpi: resolution (default 110).
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def load_history(history) -> dict[str, list[float]]:
    """Read a training history into ``{column: [float per epoch]}`` (``epoch`` 0-based).

    Args:
        history: dict of equal-length lists, or a Keras ``CSVLogger`` CSV path. Missing
            values (``NA``, empty) become ``nan``.

    Example:
        >>> load_history({"loss": [0.5, 0.25]})["epoch"]
        [0.0, 1.0]
    """
    if isinstance(history, (str, Path)):
        data = _read_history_csv(Path(history))
    elif isinstance(history, Mapping):
        data = {str(k): [_to_float(v) for v in _as_list(vals, k)] for k, vals in history.items()}
    else:
        raise TypeError(
            "`history` should be a dict of per-epoch lists or a CSVLogger .csv path. "
            f"Received: {type(history).__name__}"
        )
    lengths = {k: len(v) for k, v in data.items()}
    if not data or max(lengths.values()) == 0:
        raise ValueError(f"`history` should hold at least one epoch. Received columns: {lengths}")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"`history` columns should have the same length. Received: {lengths}")
    n = next(iter(lengths.values()))
    data.setdefault("epoch", [float(i) for i in range(n)])
    return data


def confusion_matrix_figure(cm, labels, normalize: bool = True):
    """The confusion matrix heat map as a ``Figure``; see :func:`plot_confusion_matrix`."""
    counts = _check_cm(cm, labels)
    k = len(counts)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    else:
        values = counts.astype(np.float64)

    side = min(max(4.2, 0.42 * k + 2.2), 14)
    fig = _figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(values.max(), 1)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    names = [str(n) for n in labels]
    rotate = max(map(len, names)) > 3
    ax.set_xticks(range(k), names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "Confusion matrix" + (" (each row sums to 1)" if normalize else " (counts)")
    ax.set_title(title, color=TEXT_COLOR, loc="left", fontsize=11)
    if k <= 25:
        size = 9 if k <= 12 else 7
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else f"{int(counts[i, j])}"
                if normalize and v == 0:
                    text = "0"
                color = "white" if v > 0.55 * vmax else TEXT_COLOR
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=size)
    fig.tight_layout()
    return fig


def training_curves_figure(history):
    """Loss/accuracy/learning-rate panels as a ``Figure``; see :func:`plot_training_curves`."""
    data = load_history(history)
    epochs = np.asarray(data["epoch"], dtype=np.float64) + 1
    lr_key = next((k for k in _LR_KEYS if k in data), None)
    bases = []
    for key in data:
        base = key[4:] if key.startswith("val_") else key
        if key != "epoch" and key not in _LR_KEYS and base not in bases:
            bases.append(base)
    bases.sort(key=lambda b: (b != "loss", "acc" not in b, b))
    panels = bases[:4] + ([lr_key] if lr_key else [])
    if not panels:
        raise ValueError(f"`history` has no metric to plot. Received columns: {sorted(data)}")

    fig = _figure(figsize=(4.3 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    marker = "o" if len(epochs) <= 40 else None
    for ax, name in zip(axes, panels, strict=True):
        if name == lr_key:
            ax.plot(epochs, data[name], color=MUTED_COLOR, marker=marker, ms=3)
            values = np.asarray(data[name], dtype=np.float64)
            positive = values[np.isfinite(values) & (values > 0)]
            if len(positive) and positive.max() / positive.min() > 20:
                ax.set_yscale("log")
            ax.set_title("learning rate", loc="left", fontsize=11, color=TEXT_COLOR)
        else:
            if name in data:
                ax.plot(epochs, data[name], color=TRAIN_COLOR, marker=marker, ms=3, label="train")
            if f"val_{name}" in data:
                val = data[f"val_{name}"]
                ax.plot(epochs, val, color=VAL_COLOR, marker=marker, ms=3, label="validation")
                _mark_best(ax, epochs, val, maximize=name != "loss" and "loss" not in name)
            ax.set_title(name.replace("_", " "), loc="left", fontsize=11, color=TEXT_COLOR)
            ax.legend(frameon=False, fontsize=9)
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        _style(ax)
    fig.tight_layout()
    return fig


def artifact_sizes_figure(artifacts: Sequence[Mapping]):
    """Horizontal bars of each artifact's file size vs gzip size (KB); ``None`` if no sizes.

    Artifacts without a size (or size 0: nothing was written) are left out.
    """
    rows = [a for a in artifacts if (_num(a.get("size_bytes")) or 0) > 0]
    if not rows:
        return None
    names = [str(a.get("name")) for a in rows]
    size = np.array([a["size_bytes"] / 1024 for a in rows])
    gz = np.array([(_num(a.get("gzip_bytes")) or 0) / 1024 for a in rows])
    fig = _figure(figsize=(6.0, 0.5 * len(rows) + 1.5))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y - 0.2, size, height=0.38, color=MUTED_COLOR, label="file")
    ax.barh(y + 0.2, gz, height=0.38, color=TRAIN_COLOR, label="gzip")
    _bar_labels(ax, y - 0.2, size, "{:,.0f}")
    _bar_labels(ax, y + 0.2, gz, "{:,.0f}")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("KB")
    ax.set_xlim(0, max(size.max(), gz.max(), 1e-9) * 1.18)
    ax.set_title("Artifact size: file vs gzip", loc="left", fontsize=11, color=TEXT_COLOR)
    ax.legend(
        frameon=False,
        fontsize=9,
        ncol=2,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        borderaxespad=0.1,
    )
    _style(ax, grid_axis="x")
    fig.tight_layout()
    return fig


def latency_figure(artifacts: Sequence[Mapping]):
    """Horizontal bars of each artifact's p50 and p90 latency (ms); ``None`` if none timed."""
    rows = [a for a in artifacts if _num((a.get("latency") or {}).get("p50_ms")) is not None]
    if not rows:
        return None
    names = [str(a.get("name")) for a in rows]
    p50 = np.array([a["latency"]["p50_ms"] for a in rows])
    p90 = np.array([_num(a["latency"].get("p90_ms")) or np.nan for a in rows])
    fig = _figure(figsize=(6.0, 0.5 * len(rows) + 1.5))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y - 0.2, p50, height=0.38, color=TRAIN_COLOR, label="p50")
    ax.barh(y + 0.2, p90, height=0.38, color=LIGHT_COLOR, label="p90")
    _bar_labels(ax, y - 0.2, p50, "{:.3g}")
    _bar_labels(ax, y + 0.2, p90, "{:.3g}")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call (batch as benchmarked)")
    ax.set_xlim(0, np.nanmax(np.concatenate([p50, p90])) * 1.18)
    ax.set_title("Latency", loc="left", fontsize=11, color=TEXT_COLOR)
    ax.legend(
        frameon=False,
        fontsize=9,
        ncol=2,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        borderaxespad=0.1,
    )
    _style(ax, grid_axis="x")
    fig.tight_layout()
    return fig


def accuracy_latency_figure(artifacts: Sequence[Mapping], reference_accuracy=None):
    """Scatter of accuracy vs p50 latency on a log latency axis, one point per artifact; ``None``
    if nothing to plot.

    The latency axis is logarithmic, with tick labels in plain milliseconds (0.1, 0.2, 0.5, 1 ...),
    so that a 0.15 ms TFLite file and a 3 ms one are both readable. Artifacts without a positive
    latency or without an accuracy are left out.

    Args:
        artifacts: report artifact dicts (``metrics.accuracy``, ``latency.p50_ms``, ``format``).
        reference_accuracy: drawn as a dashed line, e.g. the Keras test accuracy (optional).

    Example:
        >>> rows = [{"name": "a", "format": "tflite", "metrics": {"accuracy": 0.9},
        ...          "latency": {"p50_ms": 0.15}}]
        >>> accuracy_latency_figure(rows).axes[0].get_xscale()
        'log'
    """
    rows = [
        a
        for a in artifacts
        if _num((a.get("metrics") or {}).get("accuracy")) is not None
        and (_num((a.get("latency") or {}).get("p50_ms")) or 0) > 0
    ]
    if not rows:
        return None
    formats = list(dict.fromkeys(str(a.get("format")) for a in rows))
    colors = {f: FORMAT_COLORS[i % len(FORMAT_COLORS)] for i, f in enumerate(formats)}
    fig = _figure(figsize=(6.8, 4.2))
    ax = fig.add_subplot()
    for fmt in formats:
        group = [a for a in rows if str(a.get("format")) == fmt]
        x = [a["latency"]["p50_ms"] for a in group]
        y = [a["metrics"]["accuracy"] for a in group]
        ax.scatter(x, y, s=55, color=colors[fmt], label=fmt, zorder=3, edgecolor="white")
    ref = _num(reference_accuracy)
    if ref is not None:
        ax.axhline(ref, color=MUTED_COLOR, ls="--", lw=1, label=f"Keras {ref:.4f}", zorder=1)
    ax.set_xlabel("p50 latency (ms, log scale)")
    ax.set_ylabel("accuracy")
    latencies = [a["latency"]["p50_ms"] for a in rows]
    _log_ms_axis(ax, min(latencies) / 1.25, max(latencies) * 1.25)  # room for labels
    ax.set_title(
        "Accuracy vs latency (up-left is better)", loc="left", fontsize=11, color=TEXT_COLOR
    )
    ax.legend(frameon=False, fontsize=9, loc="best")
    _style(ax)
    fig.tight_layout()
    label_points(  # last: it places labels in display pixels
        ax,
        [(a["latency"]["p50_ms"], a["metrics"]["accuracy"]) for a in rows],
        [str(a.get("name")) for a in rows],
    )
    return fig


def _log_ms_axis(ax, lo: float, hi: float, max_ticks: int = 7) -> None:
    """A log x axis over ``lo``..``hi`` widened to the 1-2-5 values around them, with plain-number
    ticks (``0.1``, ``0.2``, ``0.5``, ``1`` ...): the 1-2-5 series; 1-1.5-2-3-5-7 when that gives
    fewer than three ticks; powers of ten (every n-th) when it gives more than ``max_ticks``. No
    minor tick labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    first, last = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1

    def series(mantissas, every: int = 1):
        return [m * 10.0**e for e in range(first, last + 1, every) for m in mantissas]

    lo = max(v for v in series((1, 2, 5)) if v <= lo * (1 + 1e-9))
    hi = min(v for v in series((1, 2, 5)) if v >= hi * (1 - 1e-9))
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)

    def within(values):
        return [v for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]

    ticks = within(series((1, 2, 5)))
    if len(ticks) < 3:
        ticks = within(series((1, 1.5, 2, 3, 5, 7)))
    every = 1
    while len(ticks) > max_ticks:
        ticks = within(series((1,), every))
        every += 1
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def accuracy_size_figure(artifacts: Sequence[Mapping], reference_accuracy=None, floor_points=None):
    """Accuracy vs gzip size (log scale), one point per TFLite/Keras artifact: the compression
    trade-off. Failed artifacts are hollow. ``None`` if fewer than two points.

    Args:
        artifacts: report artifact dicts (``metrics.accuracy``, ``gzip_bytes``, ``status``).
        reference_accuracy: the float model's accuracy, drawn as a dashed line (optional).
        floor_points: the accuracy floor in points below the reference, drawn dotted (optional).
    """
    rows = [
        a
        for a in artifacts
        if _num((a.get("metrics") or {}).get("accuracy")) is not None
        and (_num(a.get("gzip_bytes")) or 0) > 0
    ]
    if len(rows) < 2:
        return None
    fig = _figure(figsize=(6.8, 4.2))
    ax = fig.add_subplot()
    for a in rows:
        x, y = a["gzip_bytes"] / 1024, a["metrics"]["accuracy"]
        failed = a.get("status") != "ok"
        color = FORMAT_COLORS[1] if a.get("compression") else FORMAT_COLORS[0]
        ax.scatter(x, y, s=55, zorder=3, color="white" if failed else color, edgecolor=color,
                   linewidth=1.5)  # fmt: skip
    ref = _num(reference_accuracy)
    if ref is not None:
        ax.axhline(ref, color=MUTED_COLOR, ls="--", lw=1, label=f"float {ref:.4f}", zorder=1)
        if _num(floor_points) is not None:
            floor = ref - floor_points / 100
            ax.axhline(floor, color=MUTED_COLOR, ls=":", lw=1, zorder=1,
                       label=f"floor -{floor_points:g} pt")  # fmt: skip
    for color, name in ((FORMAT_COLORS[0], "float"), (FORMAT_COLORS[1], "compressed")):
        ax.scatter([], [], s=40, color=color, label=name)
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("gzip size (KB, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        "Accuracy vs size (up-left is better; hollow = failed)",
        loc="left",
        fontsize=11,
        color=TEXT_COLOR,
    )
    _style(ax)
    fig.tight_layout()
    label_points(  # last: it places labels in display pixels
        ax,
        [(a["gzip_bytes"] / 1024, a["metrics"]["accuracy"]) for a in rows],
        [str(a.get("name")) for a in rows],
    )
    return fig


def label_points(ax, points, labels, fontsize: float = 8) -> None:
    """Name each scatter point without labels overlapping one another or the points.

    A label goes right of its point, else left, above or below, where no other point is as near
    to it as its own (so it cannot be read as another point's name). Where a point finds no such
    place, its crowd (the points within 40 pt of one another) is labelled as a whole: the labels
    stacked in one column beside it, joined to their points by thin lines that do not cross.
    Call it after the axes' layout, scales and limits are final (``tight_layout`` included):
    placement works in display pixels.

    Args:
        ax: the Matplotlib axes holding the points.
        points: ``(x, y)`` in data coordinates.
        labels: one string per point.
        fontsize: label size in points (default 8).
    """
    if not points:
        return
    from matplotlib.textpath import TextPath

    ax.autoscale_view()
    pt = ax.figure.dpi / 72.0  # pixels per typographic point
    xy = ax.transData.transform(np.asarray(points, dtype=np.float64))
    bounds = ax.bbox.extents  # labels stay inside the axes
    marker = 4.0 * pt
    taken = [(x - marker, y - marker, x + marker, y + marker) for x, y in xy]
    h = fontsize * 1.25 * pt  # label height and widths, pixels
    widths = [TextPath((0, 0), str(s), size=fontsize).get_extents().width * pt for s in labels]
    order = sorted(range(len(points)), key=lambda i: (-xy[i][1], xy[i][0]))
    boxes: dict[int, tuple] = {}
    for i in order:  # beside the point, no line
        x, y = xy[i]
        w, gap = widths[i], 6.0 * pt
        for x0, y0 in ((x + gap, y - h / 2), (x - gap - w, y - h / 2), (x - w / 2, y + gap),
                       (x - w / 2, y - gap - h)):  # fmt: skip
            box = (x0, y0, x0 + w, y0 + h)
            own = _distance(box, x, y)
            if _free(box, bounds, taken) and not any(
                _distance(box, *p) <= own + pt for j, p in enumerate(xy) if j != i
            ):
                boxes[i] = box
                taken.append(box)
                break
    # a crowd with a point that found no room is labelled as a whole, in one column
    leaders = []
    for crowd in _crowds(order, xy, radius=40.0 * pt):
        if all(i in boxes for i in crowd):
            continue
        for i in crowd:
            if i in boxes:
                taken.remove(boxes.pop(i))
        leaders += crowd
        _stack_column(crowd, xy, widths, h, bounds, taken, boxes, gap=10.0 * pt, marker=marker)
    for i, box in boxes.items():
        ax.annotate(
            labels[i],
            points[i],
            xytext=((box[0] - xy[i][0]) / pt, (box[1] - xy[i][1]) / pt),
            textcoords="offset points",
            fontsize=fontsize,
            color=TEXT_COLOR,
            va="bottom",
            arrowprops=None if i not in leaders else {
                "arrowstyle": "-", "color": MUTED_COLOR, "lw": 0.6, "shrinkA": 1, "shrinkB": 3,
                "relpos": (0.0 if box[0] > xy[i][0] else 1.0, 0.5),  # from the label's near side
            },
        )  # fmt: skip


def _crowds(indices, xy, radius: float) -> list[list[int]]:
    """``indices`` grouped by single linkage: points nearer than ``radius`` pixels share a crowd."""
    crowds: list[list[int]] = []
    for i in indices:
        near = [c for c in crowds if any(math.dist(xy[i], xy[j]) < radius for j in c)]
        merged = [i] + [j for c in near for j in c]
        crowds = [c for c in crowds if c not in near] + [merged]
    return [sorted(c, key=lambda i: (-xy[i][1], xy[i][0])) for c in crowds]


def _stack_column(crowd, xy, widths, h, bounds, taken, boxes, gap, marker) -> None:
    """Labels of one crowd in a column right of it (left when there is no room): free rows from
    the crowd's top down, then points matched to rows so that no two lines cross."""
    right = bounds[2]
    xs = [xy[i][0] for i in crowd]
    width = max(widths[i] for i in crowd)
    lo_y, hi_y = min(xy[i][1] for i in crowd) - h, max(xy[i][1] for i in crowd) + h
    # every marker in the crowd's band counts, so the column clears the whole cluster
    band = [x for x, y in xy if lo_y <= y <= hi_y and min(xs) - marker <= x <= max(xs) + width]
    x0 = max(band + xs) + marker + gap
    on_right = x0 + width <= right
    if not on_right:
        x0 = min(xs) - marker - gap - width
    rows, top_y = [], max(xy[i][1] for i in crowd) + h / 2
    for _ in crowd:
        for y1 in [top_y - k * h for k in range(200)] + [top_y + k * h for k in range(1, 200)]:
            if _free((x0, y1 - h, x0 + width, y1), bounds, taken):
                break
        else:  # no free row anywhere: overlap rather than leave the axes
            y1 = top_y
        rows.append(y1 - h)
        taken.append((x0, y1 - h, x0 + width, y1))
        top_y = min(top_y, y1 - h)
    rows.sort(reverse=True)
    ends = [(x0 if on_right else x0 + width, y + h / 2) for y in rows]
    # start from each point's height where a line falling 1 px per 2 px would meet the column
    # (of two points level with each other, the nearer one gets the upper row), then uncross
    match = sorted(crowd, key=lambda i: 0.5 * abs(ends[0][0] - xy[i][0]) - xy[i][1])
    for _ in range(len(crowd) ** 2):  # each swap shortens the lines in total: it ends
        pair = next(
            ((a, b) for a in range(len(match)) for b in range(a + 1, len(match))
             if _cross(xy[match[a]], ends[a], xy[match[b]], ends[b])),
            None,
        )  # fmt: skip
        if pair is None:
            break
        a, b = pair
        match[a], match[b] = match[b], match[a]
    for i, y in zip(match, rows, strict=True):
        x = x0 if on_right else x0 + width - widths[i]
        boxes[i] = (x, y, x + widths[i], y + h)


def _cross(p1, p2, q1, q2) -> bool:
    """Whether the segments p1-p2 and q1-q2 cross (touching ends do not count)."""

    def side(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = side(q1, q2, p1), side(q1, q2, p2)
    d3, d4 = side(p1, p2, q1), side(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def _free(box, bounds, taken) -> bool:
    left, bottom, right, top = bounds
    inside = left <= box[0] and box[2] <= right and bottom <= box[1] and box[3] <= top
    return inside and not any(_overlap(box, other) for other in taken)


def _distance(box, x: float, y: float) -> float:
    """Distance from the point ``(x, y)`` to the rectangle ``box`` (0 inside it)."""
    dx = max(box[0] - x, 0.0, x - box[2])
    dy = max(box[1] - y, 0.0, y - box[3])
    return math.hypot(dx, dy)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# ----------------------------------------------------------------------------------------------
def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig, path) -> Path:
    return atomic_write_bytes(Path(path), figure_to_png(fig))


def _style(ax, grid_axis: str = "both") -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#cbd5e1")
    ax.tick_params(colors="#475569", labelsize=9)
    ax.grid(True, axis=grid_axis, color="#e2e8f0", lw=0.8)
    ax.set_axisbelow(True)


def _mark_best(ax, epochs, values, maximize: bool) -> None:
    arr = np.asarray(values, dtype=np.float64)
    if not np.any(np.isfinite(arr)):
        return
    i = int(np.nanargmax(arr) if maximize else np.nanargmin(arr))
    ax.axvline(epochs[i], color=VAL_COLOR, ls=":", lw=1, alpha=0.7)
    right_half = i >= len(arr) / 2
    ax.annotate(
        f"best {arr[i]:.4g} @ {int(epochs[i])}",
        (epochs[i], arr[i]),
        xytext=(-4 if right_half else 4, -12 if maximize else 8),
        textcoords="offset points",
        ha="right" if right_half else "left",
        fontsize=8,
        color=VAL_COLOR,
    )


def _bar_labels(ax, y, values, fmt: str) -> None:
    for yi, v in zip(y, values, strict=True):
        if np.isfinite(v):
            ax.text(v, yi, " " + fmt.format(v), va="center", fontsize=9, color="#475569")


def _check_cm(cm, labels) -> np.ndarray:
    arr = np.asarray(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"`cm` should be a non-empty square matrix. Received shape: {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError("`cm` should hold non-negative counts. Received negative or non-numbers")
    if isinstance(labels, str) or len(labels) != arr.shape[0]:
        raise ValueError(
            f"`labels` should have one name per row of `cm` ({arr.shape[0]}). "
            f"Received: labels={labels!r}"
        )
    return arr


def _read_history_csv(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        raise FileNotFoundError(f"`history` CSV file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ValueError(f"`history` CSV {path} has no header row")
        data: dict[str, list[float]] = {name: [] for name in reader.fieldnames}
        for row in reader:
            for name in reader.fieldnames:
                data[name].append(_to_float(row.get(name)))
    return data


def _as_list(values, key) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(
            f"`history[{key!r}]` should be a list of per-epoch values. Received: {values!r}"
        )
    return list(values)


def _to_float(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _num(value):
    """``value`` as a finite float, or ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
