"""The task registry, variant kinds and the shared Task helpers."""

import pytest

from kvision.errors import InputValueError
from kvision.tasks import Task, get_task, list_tasks, register_task, variant_kind


def test_classification_is_registered_and_selected_by_name():
    assert "classification" in list_tasks()
    task = get_task("classification")
    assert task.name == "classification"
    assert task.primary_metric == "accuracy" and task.higher_is_better


def test_unknown_task_names_the_value_and_suggests():
    with pytest.raises(InputValueError, match=r"Unknown task `clasification`.*`classification`"):
        get_task("clasification")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_task("classification")(type("Again", (Task,), {}))


@pytest.mark.parametrize(
    "variant, kind",
    [
        ("saved_model", "float"),
        ("float32", "float"),
        ("ptq_float16", "float16"),
        ("ptq_dynamic", "dynamic"),
        ("ptq_int8", "int8"),
        ("qat_int8_float_io", "int8"),
        ("pqat_int8", "int8"),
        ("ptq_int16x8", "int16x8"),
    ],
)
def test_variant_kind(variant, kind):
    assert variant_kind(variant) == kind


def test_every_task_has_a_tolerance_row_per_variant_kind():
    for name in list_tasks():
        task = get_task(name)
        for kind in ("float", "float16", "dynamic", "int8", "int16x8"):
            assert task.tolerance(f"x_{kind}" if kind != "float" else "saved_model") is not None


def test_direction_helpers():
    up = get_task("classification")
    assert up.better(0.9, 0.8) and not up.better(0.8, 0.9)
    assert up.drop(0.9, 0.85) == pytest.approx(0.05)

    class Lower(Task):
        higher_is_better = False

    down = Lower()
    assert down.better(0.1, 0.2) and down.drop(0.1, 0.15) == pytest.approx(0.05)
