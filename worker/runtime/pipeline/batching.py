"""``Batcher``: micro-batches one model's items into Triton requests, interactive work first and alone.

The worker has one ``Batcher`` per model package (``models.ModelSet``); they share one ``InteractiveGate``,
so interactive work stays ahead for every model. An item is one page's tensors, or one of a fan-out
page's items (a text line's crop), padded to its bucket in the preprocess pool: items of many pages and
jobs share a request when their signatures are equal.

Batch work waits for a full batch or ``max_delay_ms`` (``policy.batch_due``), with at most
``batch_requests`` requests in flight; interactive work goes at once in a request of its own. While
interactive work is in the worker (``InteractiveGate``) no new batch request is sent, bounded.

A request only ever holds items of one ``Signature`` (every input's shape and dtype): a package whose
input has a free size (``shape = [1, -1, -1]``) gets pages of several sizes, which cannot be stacked.
The oldest item's signature forms the next request; items of other signatures wait their turn in
arrival order (``_Queue``: a queue per signature, so forming a request never scans the others'
items). Whatever goes wrong while a request is formed, sent or unpacked, every item in it is answered
then: a permanent error when the input is at fault (``MODEL_REJECTED`` for an item the model refuses,
tried alone; ``MODEL_OUTPUT_INVALID`` for outputs that do not have a row per item), a transient one
otherwise (the job goes back for another delivery). No future is left pending.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from worker.runtime import policy
from worker.runtime.flusher import Background
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.outage import Health
from worker.runtime.pipeline.ports import Arrays, Model
from worker.runtime.pipeline.retries import with_retries
from worker.shared import errors

#: Triton requests of interactive work in flight at once; more interactive items wait and go together.
INTERACTIVE_REQUESTS = 1
#: What items must share to travel in one request: (name, shape, dtype) of every input, by name.
Signature = tuple[tuple[str, tuple[int, ...], str], ...]


class Inferred(NamedTuple):
    """What a submitted item's future gives: its row of every output, how long its request took
    (milliseconds, retries included) and when that request started (``time.monotonic()``)."""

    row: Arrays
    inference_ms: float
    started: float


def signature_of(inputs: Arrays) -> Signature:
    """The item's request signature: items batch together only when theirs are equal (the item is padded
    to its bucket already, so this is its bucket's signature)."""
    return tuple(sorted((name, tuple(array.shape), array.dtype.str) for name, array in inputs.items()))


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    signature: Signature
    interactive: bool
    enqueued: float
    order: int  # arrival order across signatures
    future: asyncio.Future[Inferred]


class _Queue:
    """Items waiting for a request: a FIFO per signature. Items whose job gave up (future done) are
    dropped when met."""

    def __init__(self) -> None:
        self._by_signature: dict[Signature, collections.deque[_Pending]] = {}
        self._count = 0

    def __bool__(self) -> bool:
        return self._count > 0

    def append(self, pending: _Pending) -> None:
        self._by_signature.setdefault(pending.signature, collections.deque()).append(pending)
        self._count += 1

    def oldest(self) -> _Pending | None:
        """The oldest live item (the next request takes its signature); None when none is left."""
        oldest: _Pending | None = None
        for signature in list(self._by_signature):
            head = self._live_head(signature)
            if head is not None and (oldest is None or head.order < oldest.order):
                oldest = head
        return oldest

    def queued(self, signature: Signature) -> int:
        """Items of ``signature`` waiting (some may have given up: they are dropped when taken)."""
        waiting = self._by_signature.get(signature)
        return 0 if waiting is None else len(waiting)

    def take(self, max_size: int) -> list[_Pending]:
        """Up to ``max_size`` live items of the oldest one's signature, in arrival order."""
        oldest = self.oldest()
        if oldest is None:
            return []
        waiting = self._by_signature[oldest.signature]
        items: list[_Pending] = []
        while waiting and len(items) < max_size:
            pending = waiting.popleft()
            self._count -= 1
            if not pending.future.done():
                items.append(pending)
        if not waiting:
            del self._by_signature[oldest.signature]
        return items

    def drain(self) -> list[_Pending]:
        """Every item still queued, in no particular order; the queue is empty after."""
        items = [p for waiting in self._by_signature.values() for p in waiting]
        self._by_signature.clear()
        self._count = 0
        return items

    def _live_head(self, signature: Signature) -> _Pending | None:
        waiting = self._by_signature[signature]
        while waiting and waiting[0].future.done():
            waiting.popleft()
            self._count -= 1
        if not waiting:
            del self._by_signature[signature]
            return None
        return waiting[0]


class Batcher(Background):
    """Micro-batches items of one signature into Triton requests: full batch or ``max_delay_ms`` for
    batch work, at once for interactive work, which travels alone.

    Batch work has at most ``batch_requests`` requests in flight; interactive work has a request of its
    own beyond that. The model has one instance more than batch work uses (the package's ``instances``,
    in the generated Triton config) and no server-side batcher, so an interactive request runs as soon as it
    arrives instead of waiting for, or being merged into, a batch request. While interactive work is in
    the worker (``gate``) no new batch request is sent (bounded), so the interactive
    request does not share the CPU or GPU with one that started after it arrived.
    """

    def __init__(
        self,
        model: Model,
        health: Health,
        *,
        max_size: int,
        max_delay_ms: float,
        retries: int,
        batch_requests: int = 1,
        gate: InteractiveGate | None = None,
    ) -> None:
        self._model = model
        self._health = health
        self._max_size = max_size
        self._max_delay_ms = max_delay_ms
        self._retries = retries
        self._batch_requests = batch_requests
        self._interactive = _Queue()
        self._batch = _Queue()
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._in_flight = {True: 0, False: 0}  # requests at Triton, by interactive
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = gate or InteractiveGate()
        self._gate.on_leave(self._wake.set)

    def submit(self, inputs: Arrays, *, interactive: bool) -> asyncio.Future[Inferred]:
        """Queue one item's input tensors (no batch axis); the future fails at once during an outage."""
        future: asyncio.Future[Inferred] = asyncio.get_running_loop().create_future()
        if self._health.outage:
            future.set_exception(errors.InferenceUnavailable("triton outage"))
            return future
        (self._interactive if interactive else self._batch).append(
            _Pending(inputs, signature_of(inputs), interactive, time.monotonic(), next(self._order), future)
        )
        self._wake.set()
        return future

    async def run(self) -> None:
        try:
            await self._serve()
        except BaseException:
            # A crashed loop (or its close) must not leave a queued item's job waiting for its lease.
            self.fail_queued(errors.InferenceUnavailable("batcher stopped"))
            raise

    async def _serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._interactive or self._batch:
                if self._interactive and self._in_flight[True] < INTERACTIVE_REQUESTS:
                    self._send(self._interactive, interactive=True)
                    continue
                wait_s: float | None = None  # until a request comes back or work is submitted
                hold_s = self._gate.hold_left_s()
                if hold_s > 0:
                    wait_s = hold_s
                elif (
                    self._in_flight[False] < self._batch_requests
                    and (oldest := self._batch.oldest()) is not None
                ):
                    age_ms = (time.monotonic() - oldest.enqueued) * 1000.0
                    if policy.batch_due(
                        queued=self._batch.queued(oldest.signature),
                        oldest_age_ms=age_ms,
                        max_size=self._max_size,
                        max_delay_ms=self._max_delay_ms,
                    ):
                        self._send(self._batch, interactive=False)
                        continue
                    wait_s = (self._max_delay_ms - age_ms) / 1000.0
                # asyncio.timeout, not wait_for: no task per wait (CPU per job, docs/performance.md)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                self._wake.clear()

    def _send(self, queue: _Queue, *, interactive: bool) -> None:
        items = queue.take(self._max_size)
        if not items:  # every item left had given up
            return
        self._in_flight[interactive] += 1
        task = asyncio.create_task(self._dispatch(items, interactive=interactive))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, items: list[_Pending], *, interactive: bool) -> None:
        try:
            await self._infer_into(items)
        except BaseException as exc:
            # The last resort: whatever escaped (a bug, a cancel at close) answers every item of the
            # request now, as transient, instead of leaving its job to its lease.
            _fail(items, errors.InferenceUnavailable(f"inference request: {type(exc).__name__}"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight[interactive] -= 1
            self._wake.set()

    async def _infer_into(self, items: list[_Pending]) -> None:
        interactive = any(p.interactive for p in items)
        started = time.monotonic()
        try:
            batch = _stack(items)
            outputs = await with_retries(
                lambda: self._model.infer(batch, interactive=interactive), attempts=self._retries
            )
            rows = _unstack(outputs, len(items), model=self._model.name)
        except errors.ModelRejected as exc:
            if len(items) > 1:
                # One bad item must not fail its neighbours: retry each alone.
                for item in items:
                    await self._infer_into([item])
                return
            _fail(items, exc)
            return
        except errors.PermanentError as exc:
            _fail(items, exc)
            return
        except errors.TransientError as exc:
            self._health.inference_failed()
            _fail(items, exc)
            return
        except Exception as exc:
            _fail(items, errors.InferenceUnavailable(f"inference: {type(exc).__name__}"))
            return
        self._health.inference_ok()
        elapsed_ms = (time.monotonic() - started) * 1000.0
        for item, row in zip(items, rows, strict=True):
            if not item.future.done():
                item.future.set_result(Inferred(row, elapsed_ms, started))

    def fail_queued(self, error: errors.FleetError) -> None:
        """Fail every item not yet sent (an outage: their jobs are given back at once)."""
        for queue in (self._interactive, self._batch):
            _fail(queue.drain(), error)


def _stack(items: list[_Pending]) -> Arrays:
    """One request's tensors: the items' inputs stacked on a new batch axis (one signature, so they fit)."""
    if len(items) == 1:
        return {name: array[np.newaxis] for name, array in items[0].inputs.items()}
    return {name: np.stack([p.inputs[name] for p in items]) for name in items[0].inputs}


def _unstack(outputs: Arrays, count: int, *, model: str) -> list[Arrays]:
    """Each item's row of every output; outputs without one row per item answer no item."""
    wrong = {name: len(rows) for name, rows in outputs.items() if len(rows) != count}
    if wrong:
        raise errors.ModelOutputInvalid(f"{model} returned {wrong} rows for a request of {count} items")
    return [{name: rows[index] for name, rows in outputs.items()} for index in range(count)]


def _fail(items: list[_Pending], error: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)
