"""``Preprocessor`` implementations: decode on process pools (interactive work on one of its own), or
inline in the event loop's thread for the one-at-a-time baseline. Both measure the CPU decode costs.

Both have ``warm_up()`` (blocking; run it in a thread) and ``close()``, so the composition root starts
and stops either the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable

from worker.runtime.pipeline.ports import FloatArray
from worker.runtime.telemetry import Metrics, preload, timed_call
from worker.shared import errors


class PoolPreprocessor:
    """``Preprocessor`` on process pools (decode is CPU-bound, holds the GIL); CPU measured per task.

    Batch work runs on ``processes`` processes at CPU niceness ``batch_nice``; interactive work has a
    process of its own at the worker's priority. An interactive decode then never queues behind a
    batch decode, and while it runs the kernel gives it (and the event loop, and Triton) the CPU the
    backlog's decodes would have taken; when no interactive work runs the niced processes get every
    idle cycle, so batch throughput is unchanged.
    """

    def __init__(
        self,
        func: Callable[[bytes], FloatArray],
        *,
        processes: int,
        metrics: Metrics,
        batch_nice: int = 0,
    ) -> None:
        self._func = func
        self._metrics = metrics
        # spawn, not fork: the parent holds gRPC channels and threads that must not be forked.
        spawn = multiprocessing.get_context("spawn")
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=processes, mp_context=spawn, initializer=os.nice, initargs=(batch_nice,)
        )
        self._urgent_pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn)
        self._processes = processes

    def warm_up(self) -> None:
        """Start every process now, importing the preprocessing module, rather than on the first jobs."""
        module = getattr(self._func, "__module__", None) or "worker.runtime.telemetry"
        futures = [self._pool.submit(preload, module) for _ in range(self._processes)]
        futures.append(self._urgent_pool.submit(preload, module))
        for future in futures:
            future.result(timeout=120)

    async def __call__(self, data: bytes, *, urgent: bool = False) -> FloatArray:
        loop = asyncio.get_running_loop()
        pool = self._urgent_pool if urgent else self._pool
        try:
            tensor, cpu_s = await loop.run_in_executor(pool, timed_call, self._func, data)
        except errors.FleetError:
            raise
        except Exception as exc:  # BrokenProcessPool, pickling errors: the job may succeed elsewhere
            raise errors.TransientError(f"preprocess pool: {type(exc).__name__}") from exc
        self._metrics.preprocess_cpu_s += cpu_s
        return tensor  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the processes; queued decodes are cancelled."""
        for pool in (self._urgent_pool, self._pool):
            pool.shutdown(wait=True, cancel_futures=True)


class InlinePreprocessor:
    """``Preprocessor`` in the event loop's own thread: the naive one-at-a-time baseline."""

    def __init__(self, func: Callable[[bytes], FloatArray], *, metrics: Metrics) -> None:
        self._func = func
        self._metrics = metrics

    def warm_up(self) -> None:
        """Nothing to start: decode runs in this process."""

    def close(self) -> None:
        """Nothing to stop."""

    async def __call__(self, data: bytes, *, urgent: bool = False) -> FloatArray:
        tensor, cpu_s = timed_call(self._func, data)
        self._metrics.preprocess_cpu_s += cpu_s
        self._metrics.preprocess_inline_cpu_s += cpu_s
        return tensor  # type: ignore[no-any-return]
