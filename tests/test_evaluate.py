"""kvision.evaluate: metrics (hand cases + sklearn), PNG plots, latency measurement."""

import time

import numpy as np
import pytest

from kvision.evaluate import (
    accuracy_latency_figure,
    artifact_sizes_figure,
    classification_metrics,
    latency_figure,
    latency_stats,
    load_history,
    measure_latency,
    plot_confusion_matrix,
    plot_training_curves,
    training_curves_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


# ---------------------------------------------------------------------------------- metrics
def test_metrics_hand_checked_case():
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    a, b, c = m["per_class"]
    assert a == {"label": "a", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == 1.0
    assert b["f1"] == pytest.approx(0.8) and b["support"] == 2
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 * 2 + 0.8 * 2 + 0) / 5)
    assert m["n"] == 5 and m["labels"] == ["a", "b", "c"]


def test_probabilities_and_one_hot_give_the_same_result_as_ids():
    y_true = np.array([2, 0, 1, 1])
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.3, 0.4, 0.3], [0.5, 0.1, 0.4]])
    by_ids = classification_metrics(y_true, probs.argmax(1), ["x", "y", "z"])
    assert classification_metrics(y_true, probs, ["x", "y", "z"]) == by_ids
    one_hot = np.eye(3)[y_true]
    assert classification_metrics(one_hot, probs, ["x", "y", "z"]) == by_ids
    assert by_ids["accuracy"] == 0.75


def test_integer_labels_and_float_class_ids():
    m = classification_metrics(np.array([0.0, 1.0]), np.array([0, 1], dtype=np.uint8), 2)
    assert m["labels"] == ["0", "1"] and m["accuracy"] == 1.0


def test_metrics_match_sklearn_on_random_data():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    k, n = 7, 600
    y_true = rng.integers(0, k - 1, n)  # the last class never occurs in y_true
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(1, k, n))  # 0 rarely predicted
    y_pred[y_pred == 0] = 1  # class 0 is never predicted
    m = classification_metrics(y_true, y_pred, [f"c{i}" for i in range(k)])
    labels = list(range(k))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose([c["precision"] for c in m["per_class"]], p)
    np.testing.assert_allclose([c["recall"] for c in m["per_class"]], r)
    np.testing.assert_allclose([c["f1"] for c in m["per_class"]], f)
    assert [c["support"] for c in m["per_class"]] == s.tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    )
    assert m["weighted_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    )
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()


@pytest.mark.parametrize(
    "y_true, y_pred, labels, error, match",
    [
        ([0, 1], [0], ["a", "b"], ValueError, r"same number of samples.*len\(y_true\)=2"),
        ([0, 3], [0, 1], ["a", "b"], ValueError, r"`y_true` class ids should be between 0 and 1"),
        ([0, 1], [0, -1], ["a", "b"], ValueError, r"`y_pred` class ids .*Received: \[-1\]"),
        ([0, 1], [[0.2, 0.3, 0.5]] * 2, ["a", "b"], ValueError, r"K=2 columns.*\(2, 3\)"),
        ([[[0]]], [0], ["a"], ValueError, r"`y_true` should have shape"),
        ([], [], ["a"], ValueError, "at least one sample"),
        ([0.5, 1], [0, 1], ["a", "b"], ValueError, r"non-integer values: \[0.5\]"),
        ([0, 1], [0, 1], ["a", "a"], ValueError, "should be unique"),
        ([0, 1], [0, 1], "ab", TypeError, "list of class names"),
        ([0, 1], [0, 1], [], ValueError, "at least one class"),
        ([True, False], [0, 1], ["a", "b"], TypeError, "integer class ids"),
    ],
)
def test_metrics_errors_name_the_argument(y_true, y_pred, labels, error, match):
    with pytest.raises(error, match=match):
        classification_metrics(y_true, y_pred, labels)


# ------------------------------------------------------------------------------------ plots
def test_plot_confusion_matrix_writes_a_png(tmp_path):
    out = plot_confusion_matrix(
        [[5, 1, 0], [0, 4, 2], [1, 0, 0]], ["cat", "dog", "bird"], tmp_path / "sub" / "cm.png"
    )
    assert out == tmp_path / "sub" / "cm.png"
    width, height = _png_size(out)
    assert width > 200 and height > 200
    counts = plot_confusion_matrix(
        np.eye(2, dtype=int), ["a", "b"], tmp_path / "raw.png", normalize=False
    )
    _png_size(counts)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["cm.png"]  # no temp files


@pytest.mark.parametrize(
    "cm, labels, match",
    [
        ([[1, 2, 3]], ["a"], "square"),
        ([[1, 0], [0, 1]], ["a"], "one name per row"),
        ([[1, -1], [0, 1]], ["a", "b"], "non-negative"),
    ],
)
def test_plot_confusion_matrix_rejects_bad_input(tmp_path, cm, labels, match):
    with pytest.raises(ValueError, match=match):
        plot_confusion_matrix(cm, labels, tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()


def _history_csv(path, epochs=4, lr=True):
    cols = "epoch,accuracy,loss,val_accuracy,val_loss" + (",learning_rate" if lr else "")
    rows = [cols]
    for e in range(epochs):
        row = f"{e},{0.5 + 0.1 * e},{1.0 / (e + 1)},{0.45 + 0.1 * e},{1.1 / (e + 1)}"
        rows.append(row + (f",{1e-3 * 0.5**e}" if lr else ""))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_plot_training_curves_from_csvlogger_file(tmp_path):
    csv = _history_csv(tmp_path / "history.csv")
    out = plot_training_curves(csv, tmp_path / "curves.png")
    width, height = _png_size(out)
    assert width > 2 * height  # panels side by side
    fig = training_curves_figure(csv)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["loss", "accuracy", "learning rate"]
    train, val = fig.axes[0].get_lines()[:2]
    np.testing.assert_allclose(train.get_xdata(), [1, 2, 3, 4])  # epochs shown 1-based
    np.testing.assert_allclose(val.get_ydata(), [1.1 / (e + 1) for e in range(4)])


def test_training_curves_from_history_dict_without_lr(tmp_path):
    history = {
        "loss": [1.0, 0.6, 0.4],
        "accuracy": [0.5, 0.7, 0.8],
        "val_loss": [1.1, 0.8, 0.7],
        "val_accuracy": [0.45, 0.6, 0.75],
    }
    fig = training_curves_figure(history)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["loss", "accuracy"]
    _png_size(plot_training_curves(history, tmp_path / "c.png"))


def test_load_history_handles_missing_values_and_errors(tmp_path):
    csv = tmp_path / "h.csv"
    csv.write_text("epoch,loss,val_loss\n0,1.0,NA\n1,0.5,0.7\n")
    h = load_history(csv)
    assert h["epoch"] == [0.0, 1.0] and np.isnan(h["val_loss"][0]) and h["val_loss"][1] == 0.7
    with pytest.raises(ValueError, match="same length"):
        load_history({"loss": [1, 2], "val_loss": [1]})
    with pytest.raises(ValueError, match="at least one epoch"):
        load_history({"loss": []})
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_history(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="dict of per-epoch lists"):
        load_history([1, 2, 3])


def _artifact(name, fmt="tflite", status="ok", size=1000, p50=0.5, acc=0.9):
    return {
        "name": name,
        "format": fmt,
        "status": status,
        "size_bytes": size,
        "gzip_bytes": None if size is None else size // 2,
        "metrics": {"accuracy": acc},
        "latency": {} if p50 is None else {"p50_ms": p50, "p90_ms": p50 * 1.5},
    }


def test_artifact_comparison_figures_use_only_rows_with_data():
    rows = [
        _artifact("a"),
        _artifact("b", fmt="saved_model", p50=1.0),
        _artifact("broken", status="failed", size=None, p50=None, acc=None),
        _artifact("missing", status="failed", size=0, p50=None, acc=None),
    ]
    sizes = artifact_sizes_figure(rows)
    assert [t.get_text() for t in sizes.axes[0].get_yticklabels()] == ["a", "b"]
    lat = latency_figure(rows)
    assert [t.get_text() for t in lat.axes[0].get_yticklabels()] == ["a", "b"]
    scatter = accuracy_latency_figure(rows, reference_accuracy=0.91)
    assert len(scatter.axes[0].collections) == 2  # one point group per format
    empty = [_artifact("x", size=None, p50=None, acc=None)]
    assert artifact_sizes_figure(empty) is None
    assert latency_figure(empty) is None
    assert accuracy_latency_figure(empty) is None


# ---------------------------------------------------------------------------------- latency
def test_measure_latency_counts_calls_and_orders_percentiles():
    calls = []
    stats = measure_latency(lambda x: calls.append(x), "sample", warmup=3, runs=17)
    assert len(calls) == 20 and set(calls) == {"sample"}
    assert stats["runs"] == 17 and stats["warmup"] == 3
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["p99_ms"] <= stats["max_ms"]
    assert stats["min_ms"] <= stats["mean_ms"] <= stats["max_ms"]


def test_measure_latency_measures_a_known_sleep():
    stats = measure_latency(lambda x: time.sleep(x), 0.004, warmup=0, runs=5)
    assert stats["min_ms"] >= 4.0  # sleep never returns early
    assert stats["p50_ms"] < 200  # and the number is in milliseconds, not ns or s


def test_latency_stats_hand_checked():
    s = latency_stats([1_000_000, 2_000_000, 3_000_000, 4_000_000], warmup=2)
    assert s["p50_ms"] == pytest.approx(2.5) and s["mean_ms"] == pytest.approx(2.5)
    assert s["p90_ms"] == pytest.approx(3.7) and s["p99_ms"] == pytest.approx(3.97)
    assert (s["min_ms"], s["max_ms"], s["runs"], s["warmup"]) == (1.0, 4.0, 4, 2)


def test_measure_latency_over_batch_sizes_slices_the_pool():
    shapes = []
    pool = np.zeros((4, 2, 2), np.float32)
    stats = measure_latency(
        lambda x: shapes.append(x.shape), pool, warmup=1, runs=2, batch_sizes=[1, 3, 6]
    )
    assert shapes == [(1, 2, 2)] * 3 + [(3, 2, 2)] * 3 + [(6, 2, 2)] * 3
    assert [b["batch_size"] for b in stats["by_batch_size"]] == [1, 3, 6]
    assert stats["batch_size"] == 1 and stats["runs"] == 2
    six = stats["by_batch_size"][2]
    assert six["per_image_ms"] == pytest.approx(six["p50_ms"] / 6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"runs": 0}, ValueError, r"`runs` should be an integer >= 1. Received: runs=0"),
        ({"runs": 2.5}, ValueError, "`runs` should be an integer"),
        ({"warmup": -1}, ValueError, r"`warmup` should be an integer >= 0. Received: warmup=-1"),
        ({"warmup": True}, ValueError, "`warmup`"),
        ({"batch_sizes": []}, ValueError, "`batch_sizes` should not be empty"),
        ({"batch_sizes": [1, 0]}, ValueError, r"`batch_sizes\[1\]` should be an integer >= 1"),
        ({"batch_sizes": 8}, TypeError, "`batch_sizes` should be a list"),
    ],
)
def test_measure_latency_validates_arguments(kwargs, error, match):
    calls = []
    with pytest.raises(error, match=match):
        measure_latency(lambda x: calls.append(1), np.zeros((2, 1)), **kwargs)
    assert calls == []  # nothing ran before validation


def test_measure_latency_rejects_non_callable():
    with pytest.raises(TypeError, match="`fn` should be callable"):
        measure_latency("not a function", 1)
