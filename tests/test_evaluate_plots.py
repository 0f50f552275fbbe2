"""The accuracy-vs-latency chart: log latency axis, readable ticks, points and labels in place."""

import itertools

import numpy as np
import pytest

from kvision.evaluate.plots import _cross, accuracy_latency_figure

# Values like the README's result table: (name, format, p50 ms, accuracy).
README_ROWS = [
    ("keras", "keras", 1.11, 0.9269),
    ("saved_model", "saved_model", 1.01, 0.9269),
    ("float32", "tflite", 0.191, 0.9269),
    ("ptq_float16", "tflite", 0.145, 0.9270),
    ("ptq_dynamic", "tflite", 0.222, 0.9267),
    ("ptq_int8", "tflite", 0.190, 0.9277),
    ("ptq_int16x8", "tflite", 3.33, 0.9267),
    ("qat_int8", "tflite", 0.189, 0.9262),
    ("qat_int8_float_io", "tflite", 0.148, 0.9262),
    ("pqat_int8", "tflite", 0.193, 0.9236),
    ("cluster_int8", "tflite", 0.193, 0.9269),
    ("distill_int8", "tflite", 0.149, 0.8928),
]


def _artifacts(rows=README_ROWS):
    return [
        {"name": n, "format": f, "latency": {"p50_ms": ms}, "metrics": {"accuracy": acc}}
        for n, f, ms, acc in rows
    ]


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _text_box(note, renderer):
    """The label's own box (an Annotation's window extent also covers its line)."""
    from matplotlib.text import Text

    return Text.get_window_extent(note, renderer)


def _points(ax) -> np.ndarray:
    return np.concatenate([c.get_offsets() for c in ax.collections])


def test_latency_axis_is_log_with_plain_ms_ticks():
    fig = accuracy_latency_figure(_artifacts(), reference_accuracy=0.9269)
    ax = fig.axes[0]
    _drawn(fig)
    assert ax.get_xscale() == "log"
    assert "ms" in ax.get_xlabel()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0.1", "0.2", "0.5", "1", "2", "5"]
    assert [float(s) for s in labels] == pytest.approx(list(ax.get_xticks()))
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))


def test_every_point_is_inside_the_axes_limits():
    fig = accuracy_latency_figure(_artifacts(), reference_accuracy=0.9269)
    ax = fig.axes[0]
    pts = _points(ax)
    assert len(pts) == len(README_ROWS)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert np.all((pts[:, 0] > x0) & (pts[:, 0] < x1))
    assert np.all((pts[:, 1] > y0) & (pts[:, 1] < y1))


def test_fast_tflite_points_are_spread_apart():
    # On the old linear axis (0 to 4.3 ms) 0.145 ms and 0.222 ms were about 10 px apart.
    fig = accuracy_latency_figure(_artifacts())
    ax = fig.axes[0]
    _drawn(fig)
    x = ax.transData.transform([(0.145, 0.92), (0.222, 0.92), (3.33, 0.92)])[:, 0]
    assert x[1] - x[0] > 40
    assert x[2] - x[1] > 100


def test_labels_do_not_collide_with_each_other_the_points_or_the_edges():
    fig = accuracy_latency_figure(_artifacts(), reference_accuracy=0.9269)
    ax = fig.axes[0]
    renderer = _drawn(fig)
    notes = ax.texts
    assert sorted(t.get_text() for t in notes) == sorted(r[0] for r in README_ROWS)
    boxes = [_text_box(t, renderer) for t in notes]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    frame = ax.get_window_extent(renderer)
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1
    centers = ax.transData.transform(_points(ax))
    for box in boxes:
        for x, y in centers:
            assert not (box.x0 < x < box.x1 and box.y0 < y < box.y1)


def test_label_lines_do_not_cross():
    fig = accuracy_latency_figure(_artifacts())
    ax = fig.axes[0]
    renderer = _drawn(fig)
    lines = []
    for t in ax.texts:
        if t.arrow_patch is None:
            continue
        point = ax.transData.transform(t.xy)
        box = _text_box(t, renderer)
        near = box.x0 if box.x0 > point[0] else box.x1
        lines.append((tuple(point), (near, (box.y0 + box.y1) / 2)))
    assert lines, "the crowded README points need lines to their labels"
    for (p1, p2), (q1, q2) in itertools.combinations(lines, 2):
        assert not _cross(p1, p2, q1, q2)


@pytest.mark.parametrize(
    "latencies",
    [(0.14, 0.16, 0.18), (0.001, 0.05, 2.0, 400.0), (0.02, 0.05, 2.0, 40.0), (1.0, 1.0)],
    ids=["narrow", "six-decades", "three-decades", "one-value"],
)
def test_any_latency_range_gets_readable_ticks_and_keeps_points_inside(latencies):
    rows = [(f"m{i}", "tflite", ms, 0.9 + i / 100) for i, ms in enumerate(latencies)]
    fig = accuracy_latency_figure(_artifacts(rows))
    ax = fig.axes[0]
    renderer = _drawn(fig)
    ticks = ax.get_xticklabels()
    assert 3 <= len(ticks) <= 7
    assert [float(t.get_text()) for t in ticks] == pytest.approx(list(ax.get_xticks()))
    for a, b in itertools.combinations(ticks, 2):
        assert not a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer))
    pts = _points(ax)
    x0, x1 = ax.get_xlim()
    assert np.all((pts[:, 0] > x0) & (pts[:, 0] < x1))


def test_single_point_and_non_positive_latencies():
    one = accuracy_latency_figure(_artifacts([("only", "tflite", 0.2, 0.9)]))
    assert one.axes[0].get_xscale() == "log"
    rows = _artifacts([("ok", "tflite", 0.2, 0.9), ("zero", "tflite", 0.0, 0.9)])
    fig = accuracy_latency_figure(rows)
    assert len(_points(fig.axes[0])) == 1  # a log axis cannot show 0 ms
    assert accuracy_latency_figure(_artifacts([("zero", "tflite", 0.0, 0.9)])) is None
