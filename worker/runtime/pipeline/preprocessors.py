"""``Preprocessor`` implementations: decode on process pools (interactive work on one of its own), or
inline in the event loop's thread for the one-at-a-time baseline. Both measure the CPU decode costs.

Either runs one page of a job's document through a package (``model_packages.handlers.run_preprocess``),
given the package's folder: a spawned pool process imports the package's handler from there (once),
decodes the page and checks its tensors, so any package works in the pool without being importable by
name. ``probe`` reads a multi-page document's structure (``handlers.probe``) on the same processes and
lanes: untrusted parsing stays out of the event loop's process.

Both have ``warm_up()`` (blocking; run it in a thread) and ``close()``, so the composition root starts
and stops either the same way.

Large items come back from the pool through shared memory: a pool process leaves each array of at least
``SHARED_ITEM_MIN_BYTES`` in a block of its own (``/dev/shm``, when it has room) and the result names the
block; this process maps the block (read-only, no copy) and unlinks its name as the result arrives, so
its memory goes with the array's last view. A detector page's 26 MB input costs this process ~15 ms
unpickled from the result pipe (docs/performance.md "Heavy pages"). A result nobody takes (its job gave
up) has its blocks unlinked when it arrives; a pool process that dies between writing a block and
returning leaves it to Python's resource tracker, which unlinks it when the worker exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import mmap
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Final, Protocol, TypeVar

import numpy as np

from worker.runtime.documents import DocumentInfo
from worker.runtime.model_packages import handlers
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.shared_memory import SHM_DIR, free_bytes
from worker.runtime.telemetry import Metrics, timed_call
from worker.shared import errors

_T = TypeVar("_T")


class PreprocessFunc(Protocol):
    """``(package folder, input bytes, params, measure) -> (tensors, blank measure)``: what a pool process
    runs for one page (``handlers.run_preprocess``)."""

    def __call__(
        self, folder: str, data: bytes, params: dict[str, Any], *, measure: bool = True
    ) -> Preprocessed: ...


#: An item's array of at least this many bytes comes back from a pool process in shared memory.
SHARED_ITEM_MIN_BYTES: Final = 1 << 20
_POPULATE: Final = getattr(mmap, "MAP_POPULATE", 0)


@dataclass(frozen=True)
class _InSharedMemory:
    """An array a pool process left in a shared-memory block: the block's name, the array's shape, dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _apply(
    func: PreprocessFunc, package_folder: str, params: dict[str, Any], measure: bool, data: bytes
) -> Preprocessed:
    """``func`` with the job's bytes last: ``timed_call`` hands over the data (a picklable partial)."""
    return func(package_folder, data, params, measure=measure)


def _apply_shipped(
    func: PreprocessFunc, package_folder: str, params: dict[str, Any], measure: bool, data: bytes
) -> Preprocessed:
    """``_apply`` in a pool process, its large arrays left in shared memory (``_received`` takes them)."""
    return _shipped(_apply(func, package_folder, params, measure, data))


def _shipped(result: Preprocessed) -> Preprocessed:
    items: list[dict[str, Any]] = []
    for item in result.page.items:
        shipped: dict[str, Any] = {}
        for name, array in item.items():
            if array.nbytes < SHARED_ITEM_MIN_BYTES or free_bytes() < 2 * array.nbytes:
                shipped[name] = array
                continue
            block = SharedMemory(create=True, size=array.nbytes)
            np.ndarray(array.shape, array.dtype, buffer=block.buf)[...] = array
            shipped[name] = _InSharedMemory(block.name, tuple(array.shape), array.dtype.str)
            block.close()
        items.append(shipped)
    return result._replace(page=dataclasses.replace(result.page, items=tuple(items)))


def _received(result: Preprocessed) -> Preprocessed:
    """The pool's result with its arrays back in this process's memory, the blocks unlinked."""
    items: list[dict[str, Any]] = []
    for item in result.page.items:
        items.append({name: _take(value) for name, value in item.items()})
    return result._replace(page=dataclasses.replace(result.page, items=tuple(items)))


def _take(value: Any) -> Any:
    """The array in the block ``value`` names, mapped here (not copied), and the block's name unlinked: its
    memory goes with the last view of the array."""
    if not isinstance(value, _InSharedMemory):
        return value
    path = os.path.join(SHM_DIR, value.name)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        # MAP_POPULATE: the pages are mapped in one call, not faulted in one by one as they are read
        memory = mmap.mmap(descriptor, size, mmap.MAP_SHARED | _POPULATE, mmap.PROT_READ)
    finally:
        os.close(descriptor)
        _unlink(value.name)
    count = int(np.prod(value.shape))
    return np.frombuffer(memory, dtype=np.dtype(value.dtype), count=count).reshape(value.shape)


def _unlink(name: str) -> None:
    """Remove a block's name (the pool's resource tracker no longer has to, at exit)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(SHM_DIR, name))
    resource_tracker.unregister(f"/{name}", "shared_memory")


def _discard(future: concurrent.futures.Future[tuple[Preprocessed, float]]) -> None:
    """A pool result whose job gave up: its blocks unlinked (done-callback of the pool's future)."""
    if future.cancelled() or future.exception() is not None:
        return
    result, _cpu_s = future.result()
    for item in result.page.items:
        for value in item.values():
            if isinstance(value, _InSharedMemory):
                _unlink(value.name)


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
        call = functools.partial(_apply_shipped, self._func, package_folder, params, measure)
        return _received(await self._in_pool(call, data, urgent=urgent, shipped=True))

    async def probe(self, data: bytes, *, urgent: bool = False) -> DocumentInfo:
        """The document's structure (``documents.probe``), read in a pool process."""
        return await self._in_pool(handlers.probe, data, urgent=urgent)

    async def _in_pool(
        self, call: Callable[[bytes], _T], data: bytes, *, urgent: bool, shipped: bool = False
    ) -> _T:
        pool = self._urgent_pool if urgent else self._pool
        try:
            running = pool.submit(timed_call, call, data)
        except Exception as exc:  # BrokenProcessPool: the job may succeed elsewhere
            raise errors.TransientError(f"preprocess pool: {type(exc).__name__}") from exc
        try:
            result, cpu_s = await asyncio.wrap_future(running)
        except errors.FleetError:
            raise
        except asyncio.CancelledError:
            if shipped:  # nobody takes the result: its shared-memory blocks go when it arrives
                running.add_done_callback(_discard)
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
