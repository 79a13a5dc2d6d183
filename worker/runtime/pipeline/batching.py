"""``Batcher``: micro-batches one model's inputs into Triton requests, interactive work first and alone.

The worker has one ``Batcher`` per model package (``models.ModelSet``); they share one ``InteractiveGate``,
so interactive work stays ahead for every model.

Batch work waits for a full batch or ``max_delay_ms`` (``policy.batch_due``), with at most
``batch_requests`` requests in flight; interactive work goes at once in a request of its own. While
interactive work is in the worker (``InteractiveGate``) no new batch request is sent, bounded.

A request only ever holds tensors of one ``Signature`` (every input's shape and dtype): a package whose
input has a free size (``shape = [1, -1, -1]``) gets pages of several sizes, which cannot be stacked.
The oldest tensor's signature forms the next request; tensors of other signatures wait their turn in
arrival order. Whatever goes wrong while a request is formed, sent or unpacked, every tensor in it is
answered then: a permanent error when the input is at fault (``MODEL_REJECTED`` for a tensor the model
refuses, tried alone; ``MODEL_OUTPUT_INVALID`` for outputs that do not have a row per tensor), a
transient one otherwise (the job goes back for another delivery). No future is left pending.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass

import numpy as np

from worker.runtime import policy
from worker.runtime.flusher import Background
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.outage import Health
from worker.runtime.pipeline.ports import Arrays, Model
from worker.runtime.pipeline.retries import with_retries
from worker.shared import errors

#: Triton requests of interactive work in flight at once; more interactive tensors wait and go together.
INTERACTIVE_REQUESTS = 1
#: What a submitted job's future gives: (its row of every output, inference milliseconds).
Inferred = tuple[Arrays, float]
#: What tensors must share to travel in one request: (name, shape, dtype) of every input, by name.
Signature = tuple[tuple[str, tuple[int, ...], str], ...]


def signature_of(inputs: Arrays) -> Signature:
    """The tensors' request signature: tensors batch together only when theirs are equal.

    Padding to declared size buckets would map a signature to its bucket here, before it keys a queue.
    """
    return tuple(sorted((name, tuple(array.shape), array.dtype.str) for name, array in inputs.items()))


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    signature: Signature
    interactive: bool
    enqueued: float
    future: asyncio.Future[Inferred]


class Batcher(Background):
    """Micro-batches tensors of one signature into Triton requests: full batch or ``max_delay_ms`` for
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
        self._interactive: collections.deque[_Pending] = collections.deque()
        self._batch: collections.deque[_Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._in_flight = {True: 0, False: 0}  # requests at Triton, by interactive
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = gate or InteractiveGate()
        self._gate.on_leave(self._wake.set)

    def submit(self, inputs: Arrays, *, interactive: bool) -> asyncio.Future[Inferred]:
        """Queue one job's input tensors (no batch axis); the future fails at once during an outage."""
        future: asyncio.Future[Inferred] = asyncio.get_running_loop().create_future()
        if self._health.outage:
            future.set_exception(errors.InferenceUnavailable("triton outage"))
            return future
        (self._interactive if interactive else self._batch).append(
            _Pending(inputs, signature_of(inputs), interactive, time.monotonic(), future)
        )
        self._wake.set()
        return future

    async def run(self) -> None:
        try:
            await self._serve()
        except BaseException:
            # A crashed loop (or its close) must not leave a queued tensor's job waiting for its lease.
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
                elif self._batch and self._in_flight[False] < self._batch_requests:
                    oldest = self._batch[0]
                    age_ms = (time.monotonic() - oldest.enqueued) * 1000.0
                    if policy.batch_due(
                        queued=sum(1 for p in self._batch if p.signature == oldest.signature),
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

    def _send(self, queue: collections.deque[_Pending], *, interactive: bool) -> None:
        items = _take(queue, self._max_size)
        self._in_flight[interactive] += 1
        task = asyncio.create_task(self._dispatch(items, interactive=interactive))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, items: list[_Pending], *, interactive: bool) -> None:
        try:
            if items:
                await self._infer_into(items)
        except BaseException as exc:
            # The last resort: whatever escaped (a bug, a cancel at close) answers every tensor of the
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
                # One bad tensor must not fail its neighbours: retry each alone.
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
                item.future.set_result((row, elapsed_ms))

    def fail_queued(self, error: errors.FleetError) -> None:
        """Fail every tensor not yet sent (an outage: their jobs are given back at once)."""
        for queue in (self._interactive, self._batch):
            _fail(list(queue), error)
            queue.clear()


def _take(queue: collections.deque[_Pending], max_size: int) -> list[_Pending]:
    """Up to ``max_size`` live tensors of the oldest one's signature, in arrival order; the rest stay
    queued in theirs. Tensors whose job gave up (future done) are dropped on the way."""
    items: list[_Pending] = []
    kept: list[_Pending] = []
    wanted: Signature | None = None
    while queue and len(items) < max_size:
        pending = queue.popleft()
        if pending.future.done():
            continue
        if wanted is None:
            wanted = pending.signature
        (items if pending.signature == wanted else kept).append(pending)
    queue.extendleft(reversed(kept))
    return items


def _stack(items: list[_Pending]) -> Arrays:
    """One request's tensors: the items' inputs stacked on a new batch axis (one signature, so they fit)."""
    if len(items) == 1:
        return {name: array[np.newaxis] for name, array in items[0].inputs.items()}
    return {name: np.stack([p.inputs[name] for p in items]) for name in items[0].inputs}


def _unstack(outputs: Arrays, count: int, *, model: str) -> list[Arrays]:
    """Each item's row of every output; outputs without one row per item answer no item."""
    wrong = {name: len(rows) for name, rows in outputs.items() if len(rows) != count}
    if wrong:
        raise errors.ModelOutputInvalid(f"{model} returned {wrong} rows for a request of {count} tensors")
    return [{name: rows[index] for name, rows in outputs.items()} for index in range(count)]


def _fail(items: list[_Pending], error: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)
