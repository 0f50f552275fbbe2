"""Score one artifact's outputs: the only step of the benchmark that depends on the task.

:func:`score_outputs` is the seam: it gets the task name, every output by name, the labelled
data (or none) and the baseline, and returns a :class:`Score` (a validation problem, the metric,
the agreement with the baseline, and every check it could not do with the reason). Everything
else in a benchmark row (status, load, ops, size, latency, throughput, memory) is
task-agnostic. Classification is the one scorer today (accuracy, top-1 agreement, exactly as
before); a task without a scorer, or an artifact whose task is unknown, still gets its
task-agnostic rows, with the metric and agreement ``not done`` and why, never a number.

The task of an artifact: its ``contract.json``'s ``task``; an artifact without one (a foreign
model) is a classifier when its contract can be derived (one image input) and it has one
output ``[N, classes]``, else unknown.

Example:
    >>> score = score_outputs("classification", {"probabilities": y}, data, baseline=None)
    >>> score.metric["value"], score.not_done
    (0.91, {})
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOT_DONE = "not done"


@dataclass
class Score:
    """What scoring found for one row.

    Args:
        problem: why the outputs are invalid (the row fails validation); ``""`` when valid.
        metric: ``{name, value, delta_vs_baseline, n}`` or ``None`` when not scored.
        agreement: agreement with the baseline's outputs, or ``None`` when not compared.
        not_done: ``{check: reason}`` for every check that could not be done
            (``"metric"``, ``"agreement"``).
        reference: what later rows compare with when this row is the baseline.
    """

    problem: str = ""
    metric: dict | None = None
    agreement: float | None = None
    not_done: dict = field(default_factory=dict)
    reference: object = None


def task_of(contract, contract_source, outputs) -> tuple[str | None, str]:
    """``(task or None, why)`` for an artifact (see the module docstring).

    Args:
        contract: its ``InputContract`` or ``None``.
        contract_source: ``"file"``, ``"derived"`` or ``None``.
        outputs: its output ``TensorInfo`` list.
    """
    if contract_source == "file":
        return contract.task, f"contract.json says task {contract.task!r}"
    if contract_source == "derived" and len(outputs) == 1 and len(outputs[0].shape) == 2:
        return "classification", "one image input and one [N, classes] output"
    names = [o.name for o in outputs]
    if contract is None:
        return None, (
            "no task known: no contract.json beside the artifact and no single image input to "
            "derive one"
        )
    return None, (
        f"no task known: no contract.json beside the artifact and its outputs {names} are not "
        "one [N, classes] tensor"
    )


class ClassificationScorer:
    """Accuracy against labels and top-1 agreement with the baseline, on the class output."""

    task = "classification"
    metric = "accuracy"

    def output(self, outputs: dict) -> tuple[np.ndarray | None, str]:
        """``(class scores [N, K], "")`` or ``(None, problem)``."""
        if len(outputs) == 1:
            return next(iter(outputs.values())), ""
        if "probabilities" in outputs:
            return outputs["probabilities"], ""
        return None, (
            f"outputs {sorted(outputs)}: a classifier needs one output, or one named "
            "'probabilities'"
        )

    def check(self, y: np.ndarray, n: int, reference) -> str:
        if y.ndim != 2 or len(y) != n:
            return f"output shape {list(y.shape)}; expected [{n}, num_classes]"
        if not np.all(np.isfinite(y)):
            return "outputs contain NaN or Inf"
        if reference is not None and reference.shape[1:] != y.shape[1:]:
            return f"{y.shape[1]} outputs per image; the baseline has {reference.shape[1]}"
        return ""

    def score(self, y: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(y.argmax(-1) == labels))

    def agreement(self, y: np.ndarray, reference: np.ndarray) -> float | None:
        if reference is None or reference.shape != y.shape:
            return None
        return float(np.mean(y.argmax(-1) == reference.argmax(-1)))


SCORERS = {"classification": ClassificationScorer()}


def score_outputs(
    task, outputs: dict, n: int, data=None, baseline: dict | None = None, why: str = ""
) -> Score:
    """Validate and score one row's outputs (the seam a ``Task`` object will take over).

    Args:
        task: the artifact's task (``"classification"``) or ``None`` when unknown.
        outputs: every output by name, float32 ``[n, ...]`` (``Runtime.run``).
        n: the rows that were fed.
        data: ``EvalData`` whose labels the outputs are scored on (default ``None``: no metric).
        baseline: ``{"task", "reference", "metric", "n"}`` of the baseline's first row, or
            ``None`` (this row may be the baseline).
        why: how the task was found (:func:`task_of`), the reason given when not scored.

    Returns:
        A :class:`Score`; ``problem`` makes the row ``failed_validation``.
    """
    scorer = SCORERS.get(task)
    if scorer is None:
        return _unscored(task, outputs, why)
    y, problem = scorer.output(outputs)
    if problem:
        return Score(problem=problem)
    same_task = baseline is not None and baseline.get("task") == task
    reference = baseline["reference"] if same_task else None
    problem = scorer.check(y, n, reference)
    if problem:
        return Score(problem=problem)
    score = Score(reference=y)
    score.agreement = scorer.agreement(y, reference)
    if score.agreement is None and baseline is not None and not same_task:
        score.not_done["agreement"] = (
            f"the baseline's task is {baseline.get('task')!r}, this row's is {task!r}"
        )
    if data is None:
        score.not_done["metric"] = "no dataset given (--dataset)"
        return score
    value = scorer.score(y, data.labels)
    base = baseline.get("metric") if same_task else None
    same_images = same_task and baseline.get("n") == n
    score.metric = {
        "name": scorer.metric,
        "value": value,
        "delta_vs_baseline": value - base if base is not None and same_images else None,
        "n": int(n),
    }
    return score


def _unscored(task, outputs: dict, why: str) -> Score:
    """Outputs of a task without a scorer: checked for finite values only."""
    for name, y in outputs.items():
        y = np.asarray(y)
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            return Score(problem=f"output {name!r} contains NaN or Inf")
    if task is not None:
        why = f"no scorer for task {task!r} in the benchmark yet ({why})"
    reason = why or "no task known"
    return Score(not_done={"metric": reason, "agreement": reason})
