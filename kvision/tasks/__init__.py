"""Vision tasks on one spine: each :class:`~kvision.tasks.base.Task` owns what differs between tasks
(data format, head, loss, decoding outside the graph, metric, parity, prediction output, report
section); run directories, fit, export, compression, runtimes, benchmark and serving ask it."""
