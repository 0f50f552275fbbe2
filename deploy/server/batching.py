"""Optional dynamic batching: concurrent predict requests are merged into one runtime call.

Requests wait at most ``timeout_ms`` for others to join, up to ``max_batch_size`` images; the
merged batch runs in a worker thread (through the version's runtime pool) and each request gets
its own rows back. Inputs and outputs are arrays or dicts of named arrays (a multi-input,
multi-output model), merged and split along axis 0; an output without a row per input row
fails the batch instead of being split wrongly. A request larger than ``max_batch_size`` runs
alone. An error fails every request of that batch with the same message.

Example:
    >>> batcher = DynamicBatcher(served.predict, max_batch_size=16, timeout_ms=2)
    >>> y = await batcher.submit(x)        # inside the server's event loop
"""

from __future__ import annotations

import asyncio

import numpy as np

from kvision.errors import InputValueError


class DynamicBatcher:
    """Merge concurrent calls of ``fn(x) -> y`` (row-aligned) into batches.

    Args:
        fn: blocking function on ``[N, ...]`` arrays or dicts of them (e.g.
            ``ServedVersion.run``).
        max_batch_size: most images per merged call (default 32).
        timeout_ms: longest wait for a batch to fill, in milliseconds (default 2).
        on_batch: optional callback ``on_batch(n_images)`` (metrics).
    """

    def __init__(self, fn, max_batch_size: int = 32, timeout_ms: float = 2.0, on_batch=None):
        if (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            raise InputValueError(
                f"`max_batch_size` should be a positive integer. Received: {max_batch_size!r}"
            )
        if not timeout_ms >= 0:
            raise InputValueError(f"`timeout_ms` should be >= 0. Received: {timeout_ms!r}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.timeout = timeout_ms / 1000.0
        self.on_batch = on_batch
        self._queue = None
        self._loop = None
        self._task = None

    async def submit(self, x):
        """Queue ``x`` (an array or a dict of arrays) and wait for its rows of the result."""
        from starlette.concurrency import run_in_threadpool

        if _rows(x) >= self.max_batch_size:
            if self.on_batch:
                self.on_batch(_rows(x))
            return await run_in_threadpool(self.fn, x)
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._worker())
        future = loop.create_future()
        await self._queue.put((x, future))
        return await future

    async def _worker(self) -> None:
        from starlette.concurrency import run_in_threadpool

        queue = self._queue
        while True:
            first = await queue.get()
            items, rows = [first], _rows(first[0])
            deadline = asyncio.get_running_loop().time() + self.timeout
            while rows < self.max_batch_size:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                if rows + _rows(item[0]) > self.max_batch_size:
                    await self._run(run_in_threadpool, items)
                    items, rows = [item], _rows(item[0])
                    deadline = asyncio.get_running_loop().time() + self.timeout
                    continue
                items.append(item)
                rows += _rows(item[0])
            await self._run(run_in_threadpool, items)

    async def _run(self, run_in_threadpool, items) -> None:
        xs = _concat([x for x, _ in items])
        n = _rows(xs)
        if self.on_batch:
            self.on_batch(n)
        try:
            y = await run_in_threadpool(self.fn, xs)
            _check_rows(y, n)
        except Exception as exc:  # every waiting request gets the error
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(exc)
            return
        start = 0
        for x, fut in items:
            if not fut.done():
                fut.set_result(_slice(y, start, start + _rows(x)))
            start += _rows(x)


def _rows(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _concat(xs: list):
    if isinstance(xs[0], dict):
        return {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}
    return np.concatenate(xs)


def _slice(y, start: int, stop: int):
    if isinstance(y, dict):
        return {k: v[start:stop] for k, v in y.items()}
    return y[start:stop]


def _check_rows(y, n: int) -> None:
    for name, v in y.items() if isinstance(y, dict) else [("output", y)]:
        v = np.asarray(v)
        if v.ndim == 0 or len(v) != n:
            raise InputValueError(
                f"Output {name!r} has shape {list(v.shape)}, not one row per input row ({n}): "
                "dynamic batching cannot split it; serve this model without --batch-max-size."
            )
