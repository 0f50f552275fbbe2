"""Vision tasks on one spine: each :class:`~kvision.tasks.base.Task` owns what differs between tasks
(data format, head, loss, decoding outside the graph, metric, parity, prediction output, report
section); run directories, fit, export, compression, runtimes, benchmark and serving ask it."""

from kvision.tasks.base import (
    Parity,
    StreamingMetric,
    Task,
    Tolerance,
    get_task,
    list_tasks,
    register_task,
    variant_kind,
)

__all__ = [
    "Parity",
    "StreamingMetric",
    "Task",
    "Tolerance",
    "get_task",
    "list_tasks",
    "register_task",
    "variant_kind",
]
