"""The job pipeline: pull -> fetch -> preprocess -> micro-batch -> infer -> write once -> notify -> ack.

Ports are Protocols (fakes in unit tests, real adapters wired by ``worker.runtime.app``). One asyncio event
loop runs everything: a job is a task, not a thread; blocking libraries sit behind fixed pools owned by their
adapters. Each stage that queues (input fetch, preprocess, inference) serves interactive work first.

Decisions: a job handler returns ``Ack`` or ``Nack``; the ``Settler`` applies them in batches and the
``Leases`` owner renews deadlines while jobs run (worker/runtime/intake.py).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from worker.runtime import policy
from worker.runtime.intake import Ack, Decision, JobSource, Leases, Nack, Settler
from worker.runtime.settings import WorkerSettings
from worker.runtime.telemetry import Metrics, get_logger, preload, timed_call, trace_from_attributes
from worker.shared import contracts, errors, exit_codes
from worker.shared.contracts import Delivery, Job, Notification, Rejection, Timeline

log = get_logger("worker.runtime.pipeline")
FloatArray = npt.NDArray[np.float32]
T = TypeVar("T")

#: How long batch work waits for interactive work to leave the worker before starting its next stage,
#: and the longest the Batcher holds batch requests back for it.
BATCH_YIELD_MAX_S = 0.5
#: Triton requests of interactive work in flight at once; more interactive tensors wait and go together.
INTERACTIVE_REQUESTS = 1
#: A long-poll Pull that comes back empty sooner than this waits the rest (a server that cannot hang).
MIN_LONG_POLL_S = 0.05

EXIT_OK = exit_codes.OK
EXIT_TRITON_OUTAGE = exit_codes.TRITON_OUTAGE
EXIT_INTERNAL = exit_codes.INTERNAL


# --- ports ------------------------------------------------------------------------------------------


class InputStore(Protocol):
    async def read_input(self, bucket: str, name: str, *, max_bytes: int, urgent: bool = False) -> bytes:
        """``urgent``: interactive work, served ahead of batch calls (its own threads)."""
        ...


class ResultStore(Protocol):
    def result_uri(self, name: str) -> str: ...

    async def create_result(self, name: str, data: bytes, *, urgent: bool = False) -> bool: ...

    async def read_result(self, name: str) -> bytes | None: ...


class Model(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    async def ready(self) -> bool: ...

    async def infer(self, batch: FloatArray, *, interactive: bool) -> tuple[FloatArray, FloatArray]: ...


class Notifier(Protocol):
    async def publish(self, notification: Notification) -> str: ...


class Preprocessor(Protocol):
    async def __call__(self, data: bytes, *, urgent: bool = False) -> FloatArray:
        """``urgent``: interactive work, never queued behind batch work."""
        ...


Postprocess = Callable[[FloatArray, FloatArray, tuple[str, ...]], dict[str, Any]]


# --- helpers ----------------------------------------------------------------------------------------


def _log_retry(error: BaseException | None, attempt: int) -> None:
    log.info(
        "transient error; retrying",
        error_code=getattr(error, "code", None),
        reason=str(error)[:200],
        count=attempt,
    )


def _backoff_s(attempt: int) -> float:
    return policy.backoff_s(attempt, base_s=0.2, cap_s=3.0)


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int) -> T:
    """Bounded in-process retries of transient errors (tenacity); the last error propagates.

    The first attempt is a plain call: tenacity's per-call machinery (signature inspection, locks,
    statistics) cost ~0.3 ms of CPU per job when it wrapped every storage, publish and inference call,
    and it is only needed once something failed.
    """
    try:
        return await call()
    except errors.TransientError as exc:
        if attempts <= 1:
            raise
        _log_retry(exc, 1)
    await asyncio.sleep(_backoff_s(1))
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(errors.TransientError),
        stop=stop_after_attempt(attempts - 1),
        wait=lambda state: _backoff_s(state.attempt_number + 1),
        before_sleep=lambda state: _log_retry(
            state.outcome.exception() if state.outcome is not None else None, state.attempt_number + 1
        ),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(slots=True)
class _Pending:
    tensor: FloatArray
    interactive: bool
    enqueued: float
    future: asyncio.Future[tuple[FloatArray, FloatArray, float]]


class InteractiveGate:
    """Whether interactive work is in this worker; batch work yields to it, bounded.

    Pipeline stages wait at most ``max_wait_s`` per wait for it to clear (``yield_to``); the Batcher
    holds batch requests back for at most ``max_wait_s`` from when it became present, however jobs
    overlap (``hold_left_s``), so a stream of interactive jobs slows batch work but cannot stop it.
    """

    def __init__(self, max_wait_s: float = BATCH_YIELD_MAX_S) -> None:
        self._max_wait_s = max_wait_s
        self._present = 0
        self._since = 0.0
        self._clear = asyncio.Event()
        self._clear.set()
        self._on_leave: list[Callable[[], None]] = []

    def on_leave(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever an interactive job leaves (a held Batcher re-checks its queue)."""
        self._on_leave.append(callback)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        if not self._present:
            self._since = time.monotonic()
            self._clear.clear()
        self._present += 1
        try:
            yield
        finally:
            self._present -= 1
            if not self._present:
                self._clear.set()
            for callback in self._on_leave:
                callback()

    async def yield_to(self) -> None:
        if self._present:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clear.wait(), self._max_wait_s)

    def hold_left_s(self) -> float:
        if not self._present:
            return 0.0
        return max(0.0, self._max_wait_s - (time.monotonic() - self._since))


class Batcher:
    """Micro-batches tensors into Triton requests: full batch or ``max_delay_ms`` for batch work, at once
    for interactive work, which travels alone.

    Batch work has at most ``batch_requests`` requests in flight; interactive work has a request of its
    own beyond that. The model has one instance more than batch work uses (model_repository configs,
    ``model_spec.INSTANCES``) and no server-side batcher, so an interactive request runs as soon as it
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
        self.batches = 0
        self._gate = gate or InteractiveGate()
        self._gate.on_leave(self._wake.set)

    def submit(
        self, tensor: FloatArray, *, interactive: bool
    ) -> asyncio.Future[tuple[FloatArray, FloatArray, float]]:
        future: asyncio.Future[tuple[FloatArray, FloatArray, float]] = (
            asyncio.get_running_loop().create_future()
        )
        if self._health.outage:
            future.set_exception(errors.InferenceUnavailable("triton outage"))
            return future
        (self._interactive if interactive else self._batch).append(
            _Pending(tensor, interactive, time.monotonic(), future)
        )
        self._wake.set()
        return future

    async def run(self) -> None:
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
                    age_ms = (time.monotonic() - self._batch[0].enqueued) * 1000.0
                    if policy.batch_due(
                        queued=len(self._batch),
                        oldest_age_ms=age_ms,
                        max_size=self._max_size,
                        max_delay_ms=self._max_delay_ms,
                    ):
                        self._send(self._batch, interactive=False)
                        continue
                    wait_s = (self._max_delay_ms - age_ms) / 1000.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
                self._wake.clear()

    def _send(self, queue: collections.deque[_Pending], *, interactive: bool) -> None:
        items = [queue.popleft() for _ in range(min(len(queue), self._max_size))]
        items = [p for p in items if not p.future.done()]
        self._in_flight[interactive] += 1
        task = asyncio.create_task(self._dispatch(items, interactive=interactive))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, items: list[_Pending], *, interactive: bool) -> None:
        try:
            if items:
                await self._infer_into(items)
        finally:
            self._in_flight[interactive] -= 1
            self._wake.set()

    async def _infer_into(self, items: list[_Pending]) -> None:
        batch = np.stack([p.tensor for p in items]) if len(items) > 1 else items[0].tensor[np.newaxis]
        interactive = any(p.interactive for p in items)
        started = time.monotonic()
        try:
            probs, embeddings = await with_retries(
                lambda: self._model.infer(batch, interactive=interactive), attempts=self._retries
            )
        except errors.ModelRejected as exc:
            if len(items) > 1:
                # One bad tensor must not fail its neighbours: retry each alone.
                for item in items:
                    await self._infer_into([item])
                return
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
        self.batches += 1
        elapsed_ms = (time.monotonic() - started) * 1000.0
        for index, item in enumerate(items):
            if not item.future.done():
                item.future.set_result((probs[index], embeddings[index], elapsed_ms))

    def fail_queued(self, error: errors.FleetError) -> None:
        for queue in (self._interactive, self._batch):
            _fail(list(queue), error)
            queue.clear()


def _fail(items: list[_Pending], error: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)


class Health:
    """Triton health as seen by inference calls: an outage starts at the first failed batch."""

    def __init__(self) -> None:
        self.outage_since: float | None = None
        self.recovered = asyncio.Event()
        self.recovered.set()

    @property
    def outage(self) -> bool:
        return self.outage_since is not None

    def inference_failed(self) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self.recovered.clear()

    def inference_ok(self) -> None:
        if self.outage_since is not None:
            self.outage_since = None
            self.recovered.set()


# --- answering: shared with the dead-letter handler --------------------------------------------------


class Answerer:
    """Writes a job's one result object (never overwriting) and publishes its notification."""

    def __init__(
        self,
        results: ResultStore,
        notifier: Notifier,
        *,
        settings: WorkerSettings,
        model_name: str,
        model_version: Callable[[], str],
    ) -> None:
        self._results = results
        self._notifier = notifier
        self._settings = settings
        self._model_name = model_name
        self._model_version = model_version
        self._pid = os.getpid()
        self._instance = settings.instance

    def object_name(self, job_id: str | None, message_id: str) -> str:
        return contracts.result_object_name(self._settings.results_prefix, job_id, message_id)

    async def answer(
        self,
        delivery: Delivery,
        *,
        job_id: str | None,
        priority: str,
        input_uri: str | None,
        outputs: dict[str, Any] | None,
        error: errors.FleetError | None,
        timeline: Timeline,
    ) -> tuple[str, str | None, bool]:
        """Returns (status, error_code, duplicate). Raises TransientError when storage/Pub/Sub stay down."""
        name = self.object_name(job_id, delivery.message_id)
        document = contracts.build_result(
            job_id=job_id,
            input_uri=input_uri,
            outputs=outputs,
            error=error,
            model={"name": self._model_name, "version": self._model_version()},
            timeline=timeline,
            instance=self._instance,
            pid=self._pid,
            delivery_attempt=delivery.delivery_attempt,
        )
        retries = self._settings.transient_retries
        payload = contracts.encode(document)
        urgent = priority == contracts.INTERACTIVE
        created = await with_retries(
            lambda: self._results.create_result(name, payload, urgent=urgent), attempts=retries
        )
        status, error_body = document["status"], document["error"]
        if not created:
            existing = await with_retries(lambda: self._results.read_result(name), attempts=retries)
            if existing is not None:
                status, error_body = _status_of(existing, status, error_body)
        await self.notify(
            delivery, job_id=job_id, priority=priority, status=status, error_body=error_body, name=name
        )
        return status, (error_body or {}).get("code"), not created

    async def notify(
        self,
        delivery: Delivery,
        *,
        job_id: str | None,
        priority: str,
        status: str,
        error_body: dict[str, str] | None,
        name: str,
    ) -> None:
        notification = contracts.build_notification(
            job_id=job_id,
            status=status,
            result_uri=self._results.result_uri(name),
            error=error_body,
            priority=priority,
            client_attributes=delivery.attributes,
        )
        await with_retries(
            lambda: self._notifier.publish(notification), attempts=self._settings.transient_retries
        )

    async def existing(self, job_id: str, message_id: str) -> tuple[str, dict[str, str] | None] | None:
        """The (status, error) of a result that already exists, else None."""
        name = self.object_name(job_id, message_id)
        data = await with_retries(
            lambda: self._results.read_result(name), attempts=self._settings.transient_retries
        )
        return None if data is None else _status_of(data, contracts.STATUS_FAILED, None)


def _status_of(
    data: bytes, status: str, error_body: dict[str, str] | None
) -> tuple[str, dict[str, str] | None]:
    try:
        document = json.loads(data)
        return str(document["status"]), document.get("error")
    except (ValueError, KeyError, TypeError):
        return status, error_body


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
        for pool in (self._urgent_pool, self._pool):
            pool.shutdown(wait=True, cancel_futures=True)


class InlinePreprocessor:
    """``Preprocessor`` in the event loop's own thread: the naive one-at-a-time baseline."""

    def __init__(self, func: Callable[[bytes], FloatArray], *, metrics: Metrics) -> None:
        self._func = func
        self._metrics = metrics

    async def __call__(self, data: bytes, *, urgent: bool = False) -> FloatArray:
        tensor, cpu_s = timed_call(self._func, data)
        self._metrics.preprocess_cpu_s += cpu_s
        self._metrics.preprocess_inline_cpu_s += cpu_s
        return tensor  # type: ignore[no-any-return]


# --- the pipeline -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    source: JobSource
    inputs: InputStore
    results: ResultStore
    model: Model
    notifier: Notifier
    preprocess: Preprocessor
    postprocess: Postprocess


class Pipeline:
    """Runs jobs until ``drain()``; ``run()`` returns the process exit code."""

    def __init__(
        self,
        settings: WorkerSettings,
        ports: Ports,
        *,
        metrics: Metrics | None = None,
        fetch_concurrency: int = 8,
    ) -> None:
        self._s = settings
        self._p = ports
        self.metrics = metrics or Metrics(slots=settings.pipeline_slots)
        self.metrics.slots = settings.pipeline_slots
        self.health = Health()
        self.settler = Settler(ports.source, interval_s=settings.settle_interval_ms / 1000.0)
        self.leases = Leases(
            self.settler, ack_deadline_s=settings.ack_deadline_s, max_processing_s=settings.max_processing_s
        )
        self._interactive_gate = InteractiveGate()
        self.batcher = Batcher(
            ports.model,
            self.health,
            max_size=settings.max_batch_size,
            max_delay_ms=settings.max_batch_delay_ms,
            retries=settings.transient_retries,
            batch_requests=settings.triton_batch_requests,
            gate=self._interactive_gate,
        )
        self.answerer = Answerer(
            ports.results,
            ports.notifier,
            settings=settings,
            model_name=ports.model.name,
            model_version=lambda: ports.model.version,
        )
        # batch input reads at once (interactive reads skip this limit and use their own threads)
        self._batch_fetches = asyncio.Semaphore(fetch_concurrency)
        # batch decodes handed to the pool at once: one queued behind each process, no more
        self._batch_decodes = asyncio.Semaphore(settings.preprocess_processes + 1)
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._reserved = 0  # slots promised to an outstanding interactive long-poll
        self._begun: set[str] = set()  # ack ids of jobs that began work (fetching their input)
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._started = False
        self.exit_code = EXIT_OK
        self.drain_reason: str | None = None
        self._offered = contracts.DEFAULT_ANALYSES

    # lifecycle ---------------------------------------------------------------------------------------
    def drain(self, reason: str) -> None:
        """Stop pulling and finish in-flight work within the drain budget (idempotent)."""
        if not self._stopping.is_set():
            self.drain_reason = reason
            log.info("drain requested", reason=reason, held=len(self._jobs))
            self._stopping.set()

    async def run(self) -> int:
        if self._started:
            raise RuntimeError("pipeline already started")
        self._started = True
        background = [
            asyncio.create_task(coro)
            for coro in (self.settler.run(), self.leases.run(), self.batcher.run(), self._watch_health())
        ]
        for task in background:
            task.add_done_callback(self._background_done)
        try:
            pullers = [self._pull_loop()]
            if self._s.pipeline_slots > 1:
                # With a single slot the standing interactive Pull would hold it for ever and the batch
                # lane would never be pulled (the one-at-a-time baseline); the main loop then polls the
                # interactive lane first on its own.
                pullers.append(self._interactive_pull_loop())
            await asyncio.gather(*pullers)
            await self._finish_in_flight()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.settler.close()
        return self.exit_code

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A dead settler or batcher would strand every job: stop, give leases back, exit non-zero.
        log.error("pipeline component crashed", reason=repr(task.exception())[:300])
        self.exit_code = EXIT_INTERNAL
        self.drain("internal_error")

    # pulling -----------------------------------------------------------------------------------------
    async def _pull_loop(self) -> None:
        state = policy.LoadState()
        idle_s = 0.0
        while not self._stopping.is_set():
            if self.health.outage:
                await self._wait_any(self.health.recovered.wait(), None)
                continue
            in_flight = len(self._jobs) + self._reserved
            state = policy.next_load_state(state, in_flight=in_flight, slots=self._s.pipeline_slots)
            got = 0
            if not state.paused:
                free = policy.pull_size(in_flight=in_flight, slots=self._s.pipeline_slots)
                try:
                    got = await self._pull(self._s.interactive_subscription, free)
                    if got < free and not self._stopping.is_set():
                        got += await self._pull(self._s.batch_subscription, free - got)
                except errors.TransientError as exc:
                    log.warning("pull failed", error_code=exc.code)
                    idle_s = self._s.idle_poll_max_ms / 1000.0
            if got:
                idle_s = 0.0
                continue
            if state.paused:
                self._slot_freed.clear()
                await self._wait_any(self._slot_freed.wait(), None)
            else:
                # Both lanes empty: back off from 5 ms up to idle_poll_max_ms; a job finishing or a
                # drain request wakes the loop early.
                idle_s = min(self._s.idle_poll_max_ms / 1000.0, max(0.005, idle_s * 2))
                await self._wait_any(asyncio.sleep(idle_s), None)

    async def _interactive_pull_loop(self) -> None:
        """A standing long-poll Pull of one interactive message whenever a slot is free.

        The main loop polls (``return_immediately``) with an idle backoff and, when every slot is busy,
        waits for the hysteresis; an interactive job must not wait for either. This Pull hangs on the
        server until an interactive message arrives, holding one slot in reserve, so an interactive job
        is leased as soon as it is published, idle or busy, and the worker still never leases more than
        its slots.
        """
        subscription = self._s.interactive_subscription
        while not self._stopping.is_set():
            if self.health.outage:
                await self._wait_any(self.health.recovered.wait(), None)
                continue
            if len(self._jobs) + self._reserved >= self._s.pipeline_slots:
                self._slot_freed.clear()
                await self._wait_any(self._slot_freed.wait(), None)
                continue
            self._reserved += 1
            began = time.monotonic()
            pull = asyncio.ensure_future(self._p.source.pull(subscription, 1, wait=True))
            try:
                await self._wait_any(asyncio.shield(pull), None)
                if not pull.done():
                    pull.cancel()  # draining: a message leased meanwhile comes back after its deadline
                    await asyncio.gather(pull, return_exceptions=True)
                    return
                deliveries = pull.result()
            except errors.TransientError as exc:
                log.warning("pull failed", error_code=exc.code)
                deliveries = []
            finally:
                self._reserved -= 1
            if deliveries:
                self._start(deliveries)
                continue
            rest = MIN_LONG_POLL_S - (time.monotonic() - began)
            if rest > 0:
                await self._wait_any(asyncio.sleep(rest), None)

    async def _wait_any(self, awaitable: Awaitable[Any], timeout: float | None) -> None:
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()

    async def _pull(self, subscription: str, max_messages: int) -> int:
        if max_messages <= 0:
            return 0
        deliveries = await self._p.source.pull(subscription, max_messages)
        self._start(deliveries)
        return len(deliveries)

    def _start(self, deliveries: list[Delivery]) -> None:
        """One task per leased job; a drain that began meanwhile gives them back at once."""
        if self._stopping.is_set():
            self.settler.submit_many(Nack(d.subscription, d.ack_id) for d in deliveries)
            return
        for delivery in deliveries:
            self.leases.hold(delivery)
            task = asyncio.create_task(self._handle(delivery))
            self._jobs[delivery.ack_id] = task
        self.metrics.set_in_flight(len(self._jobs))

    # draining ----------------------------------------------------------------------------------------
    async def _finish_in_flight(self) -> None:
        budget = 0.0 if self.exit_code != EXIT_OK else self._s.drain_budget_s
        # Jobs that have not begun go back at once (nacked by their handler) so another worker starts
        # them now; the drain budget is for work already under way.
        waiting = [task for ack_id, task in self._jobs.items() if ack_id not in self._begun]
        for task in waiting:
            task.cancel()
        if waiting:
            log.info("giving back jobs not begun", count=len(waiting))
            await asyncio.gather(*waiting, return_exceptions=True)
        pending = list(self._jobs.values())
        if pending:
            log.info("draining", count=len(pending), seconds=budget)
            _done, not_done = (
                await asyncio.wait(pending, timeout=budget) if budget > 0 else (set(), set(pending))
            )
            for task in not_done:
                task.cancel()
            if not_done:
                await asyncio.gather(*not_done, return_exceptions=True)
        # Whatever is still leased (cancelled jobs) goes back to the subscription now.
        self.settler.submit_many(Nack(sub, ack_id) for sub, ack_id in self.leases.held_ids())

    async def _watch_health(self) -> None:
        attempt = 0
        while True:
            if not self.health.outage:
                attempt = 0
                await asyncio.sleep(0.5)
                continue
            self.batcher.fail_queued(errors.InferenceUnavailable("triton outage"))
            down_s = time.monotonic() - (self.health.outage_since or time.monotonic())
            if down_s >= self._s.triton_outage_exit_s:
                log.error("triton outage too long; exiting for a restart", seconds=round(down_s, 1))
                self.exit_code = EXIT_TRITON_OUTAGE
                self.drain("triton_outage")
                return
            if await self._p.model.ready():
                log.info("triton recovered", seconds=round(down_s, 1))
                self.health.inference_ok()
                continue
            attempt += 1
            await asyncio.sleep(policy.backoff_s(attempt, base_s=0.25, cap_s=5.0))

    # one job -----------------------------------------------------------------------------------------
    async def _handle(self, delivery: Delivery) -> None:
        decision: Decision
        try:
            budget = self._s.max_processing_s - (time.time() - delivery.leased_at)
            try:
                # asyncio.timeout, not wait_for: no second task per job
                async with asyncio.timeout(max(0.001, budget)):
                    decision = await self._process(delivery)
            except TimeoutError:
                decision = await self._fail_fast(
                    delivery, errors.ProcessingTimeout(f"job ran past {self._s.max_processing_s:.0f} s")
                )
        except asyncio.CancelledError:
            decision = Nack(delivery.subscription, delivery.ack_id)
        except Exception as exc:  # a bug must not leak the lease: give the message back
            log.error("job crashed", reason=type(exc).__name__, message_id=delivery.message_id)
            decision = Nack(delivery.subscription, delivery.ack_id)
        self.leases.release(delivery.ack_id)
        self.settler.submit(decision)
        self._jobs.pop(delivery.ack_id, None)
        self._begun.discard(delivery.ack_id)
        self.metrics.set_in_flight(len(self._jobs))
        self._slot_freed.set()

    async def _fail_fast(self, delivery: Delivery, error: errors.PermanentError) -> Decision:
        job = contracts.parse_job(
            delivery, allowed_buckets=self._s.allowed_buckets, max_message_bytes=self._s.max_message_bytes
        )
        try:
            return await asyncio.wait_for(
                self._answer(delivery, job, outputs=None, error=error, started=time.time()), timeout=30
            )
        except (TimeoutError, errors.FleetError):
            return Nack(delivery.subscription, delivery.ack_id)

    async def _process(self, delivery: Delivery) -> Decision:
        started = time.time()
        job = contracts.parse_job(
            delivery,
            allowed_buckets=self._s.allowed_buckets,
            offered_analyses=self._offered,
            max_message_bytes=self._s.max_message_bytes,
        )
        if job.priority != contracts.INTERACTIVE:
            return await self._process_job(delivery, job, started)
        # Strict priority, bounded: while interactive work is in the worker, batch work starts no new
        # stage (fetch, decode, answer) and the Batcher sends no new batch request.
        with self._interactive_gate.entered():
            return await self._process_job(delivery, job, started)

    async def _process_job(self, delivery: Delivery, job: Job | Rejection, started: float) -> Decision:
        try:
            if isinstance(job, Rejection):
                return await self._answer(delivery, job, outputs=None, error=job.error, started=started)
            if delivery.delivery_attempt > 1:
                decision = await self._answer_existing(delivery, job)
                if decision is not None:
                    return decision
            outputs, inference_ms = await self._run(job, delivery.ack_id)
            return await self._answer(
                delivery, job, outputs=outputs, error=None, started=started, inference_ms=inference_ms
            )
        except errors.PermanentError as exc:
            return await self._answer(delivery, job, outputs=None, error=exc, started=started)
        except errors.TransientError as exc:
            self._log_outcome(delivery, job, "retry", exc.code, started)
            return Nack(delivery.subscription, delivery.ack_id)

    def _check_deadline(self, job: Job) -> None:
        if job.deadline is not None and time.time() > job.deadline:
            raise errors.DeadlineExceeded("the job's deadline passed before it ran")

    async def _run(self, job: Job, ack_id: str) -> tuple[dict[str, Any], float]:
        self._check_deadline(job)
        if job.priority == contracts.INTERACTIVE:
            self._begun.add(ack_id)
            # No new batch request goes to Triton while this job is on its way there.
            tensor = await self._prepare_interactive(job)
            probs, embedding, inference_ms = await self.batcher.submit(tensor, interactive=True)
        else:
            await self._interactive_gate.yield_to()
            async with self._batch_fetches:
                self._begun.add(ack_id)
                data = await self._read_input(job, urgent=False)
            await self._interactive_gate.yield_to()
            async with self._batch_decodes:
                tensor = await self._p.preprocess(data)
            self._check_deadline(job)
            probs, embedding, inference_ms = await self.batcher.submit(tensor, interactive=False)
        return self._p.postprocess(probs, embedding, job.analyses), inference_ms

    async def _prepare_interactive(self, job: Job) -> FloatArray:
        # Interactive reads skip the fetch limit that paces the backlog and use their own threads.
        data = await self._read_input(job, urgent=True)
        tensor = await self._p.preprocess(data, urgent=True)  # its own process: no batch queue
        self._check_deadline(job)
        return tensor

    async def _read_input(self, job: Job, *, urgent: bool) -> bytes:
        return await with_retries(
            lambda: self._p.inputs.read_input(
                job.input_bucket, job.input_object, max_bytes=self._s.max_input_bytes, urgent=urgent
            ),
            attempts=self._s.transient_retries,
        )

    async def _answer_existing(self, delivery: Delivery, job: Job) -> Decision | None:
        """A redelivery whose result exists: re-publish its notification and ack, without rework."""
        self._begun.add(delivery.ack_id)
        existing = await self.answerer.existing(job.job_id, delivery.message_id)
        if existing is None:
            return None
        status, error_body = existing
        await self.answerer.notify(
            delivery,
            job_id=job.job_id,
            priority=job.priority,
            status=status,
            error_body=error_body,
            name=self.answerer.object_name(job.job_id, delivery.message_id),
        )
        self._log_outcome(delivery, job, status, (error_body or {}).get("code"), time.time(), duplicate=True)
        return Ack(delivery.subscription, delivery.ack_id)

    async def _answer(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        *,
        outputs: dict[str, Any] | None,
        error: errors.FleetError | None,
        started: float,
        inference_ms: float = 0.0,
    ) -> Decision:
        self._begun.add(delivery.ack_id)  # answering: a drain lets it finish
        timeline = Timeline(
            published=delivery.publish_time,
            leased=delivery.leased_at,
            started=started,
            finished=time.time(),
            inference_ms=inference_ms,
        )
        job_id: str | None = job.job_id
        uri = job.input_uri if isinstance(job, Job) else None
        priority = job.priority
        if priority != contracts.INTERACTIVE:
            await self._interactive_gate.yield_to()
        status, code, duplicate = await self.answerer.answer(
            delivery,
            job_id=job_id,
            priority=priority,
            input_uri=uri,
            outputs=outputs,
            error=error,
            timeline=timeline,
        )
        self._log_outcome(
            delivery, job, status, code, started, duplicate=duplicate, inference_ms=inference_ms
        )
        return Ack(delivery.subscription, delivery.ack_id)

    def _log_outcome(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        status: str,
        code: str | None,
        started: float,
        *,
        duplicate: bool = False,
        inference_ms: float = 0.0,
    ) -> None:
        now = time.time()
        latency_ms = (now - delivery.publish_time) * 1000.0
        if status != "retry":
            self.metrics.job_done(status, latency_ms)
        log.info(
            "job " + status,
            job_id=job.job_id,
            message_id=delivery.message_id,
            status=status,
            error_code=code,
            priority=job.priority,
            delivery_attempt=delivery.delivery_attempt,
            latency_ms=round(latency_ms, 1),
            queue_wait_ms=round(max(0.0, started - delivery.publish_time) * 1000.0, 1),
            inference_ms=round(inference_ms, 1),
            duplicate=duplicate or None,
            trace=trace_from_attributes(delivery.attributes, self._s.project),
        )
