"""``Preprocessor`` implementations: decode on process pools (interactive work on one of its own), or
inline in the event loop's thread for the one-at-a-time baseline. Both measure the CPU decode costs.

Either runs one page of a job's document through a package (``model_packages.handlers.run_preprocess``),
given the package's folder: a spawned pool process imports the package's handler from there (once),
decodes the page and checks its tensors, so any package works in the pool without being importable by
name. ``probe`` reads a multi-page document's structure (``handlers.probe``) on the same processes and
lanes: untrusted parsing stays out of the event loop's process.

Both have ``warm_up()`` (blocking; run it in a thread) and ``close()``, so the composition root starts
and stops either the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from worker.runtime.documents import DocumentInfo
from worker.runtime.model_packages import handlers
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.telemetry import Metrics, timed_call
from worker.shared import errors

_T = TypeVar("_T")


class PreprocessFunc(Protocol):
    """``(package folder, input bytes, params, measure) -> (tensors, blank measure)``: what a pool process
    runs for one page (``handlers.run_preprocess``)."""

    def __call__(
        self, folder: str, data: bytes, params: dict[str, Any], *, measure: bool = True
    ) -> Preprocessed: ...


def _apply(
    func: PreprocessFunc, package_folder: str, params: dict[str, Any], measure: bool, data: bytes
) -> Preprocessed:
    """``func`` with the job's bytes last: ``timed_call`` hands over the data (a picklable partial)."""
    return func(package_folder, data, params, measure=measure)


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
        packages: Sequence[str],
        *,
        processes: int,
        metrics: Metrics,
        batch_nice: int = 0,
        func: PreprocessFunc = handlers.run_preprocess,
    ) -> None:
        self._packages = tuple(packages)
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
        """Start every process now, importing every package's handler, rather than on the first jobs."""
        futures = [self._pool.submit(handlers.warm, self._packages) for _ in range(self._processes)]
        futures.append(self._urgent_pool.submit(handlers.warm, self._packages))
        for future in futures:
            future.result(timeout=120)

    async def __call__(
        self,
        package_folder: str,
        data: bytes,
        params: dict[str, Any],
        *,
        urgent: bool = False,
        measure: bool = True,
    ) -> Preprocessed:
        call = functools.partial(_apply, self._func, package_folder, params, measure)
        return await self._in_pool(call, data, urgent=urgent)

    async def probe(self, data: bytes, *, urgent: bool = False) -> DocumentInfo:
        """The document's structure (``documents.probe``), read in a pool process."""
        return await self._in_pool(handlers.probe, data, urgent=urgent)

    async def _in_pool(self, call: Callable[[bytes], _T], data: bytes, *, urgent: bool) -> _T:
        loop = asyncio.get_running_loop()
        pool = self._urgent_pool if urgent else self._pool
        try:
            result, cpu_s = await loop.run_in_executor(pool, timed_call, call, data)
        except errors.FleetError:
            raise
        except Exception as exc:  # BrokenProcessPool, pickling errors: the job may succeed elsewhere
            raise errors.TransientError(f"preprocess pool: {type(exc).__name__}") from exc
        self._metrics.preprocess_cpu_s += cpu_s
        return result  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the processes; queued decodes are cancelled."""
        for pool in (self._urgent_pool, self._pool):
            pool.shutdown(wait=True, cancel_futures=True)


class InlinePreprocessor:
    """``Preprocessor`` in the event loop's own thread: the naive one-at-a-time baseline."""

    def __init__(self, *, metrics: Metrics, func: PreprocessFunc = handlers.run_preprocess) -> None:
        self._func = func
        self._metrics = metrics

    def warm_up(self) -> None:
        """Nothing to start: decode runs in this process."""

    def close(self) -> None:
        """Nothing to stop."""

    async def __call__(
        self,
        package_folder: str,
        data: bytes,
        params: dict[str, Any],
        *,
        urgent: bool = False,
        measure: bool = True,
    ) -> Preprocessed:
        call = functools.partial(_apply, self._func, package_folder, params, measure)
        return self._inline(call, data)

    async def probe(self, data: bytes, *, urgent: bool = False) -> DocumentInfo:
        return self._inline(handlers.probe, data)

    def _inline(self, call: Callable[[bytes], _T], data: bytes) -> _T:
        result, cpu_s = timed_call(call, data)
        self._metrics.preprocess_cpu_s += cpu_s
        self._metrics.preprocess_inline_cpu_s += cpu_s
        return result  # type: ignore[no-any-return]
