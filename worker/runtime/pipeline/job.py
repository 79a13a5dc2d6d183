"""Running one job to a decision: parse, (answer a redelivery from its stored result), fetch, find the
pages to analyse, preprocess and infer each, answer. A permanent error is answered (failed/expired) and
acked; a transient one gives the message back (nack) for another attempt.

Pages: an input whose format may hold several (TIFF, PDF: ``documents.may_have_pages``, magic bytes) is
probed in the preprocess pool; any other input is one page and goes straight to its decode, as before.
A version 1 job of a document of several pages is answered MULTI_PAGE_INPUT; a version 2 job analyses
its ``pages`` (default: every page) within the page and pixel budgets (``documents.select_pages``).

Interactive jobs go first at every stage that queues: their input reads skip the batch fetch limit and
use their own threads, their decode has a process of its own, and while one is in the worker batch work
starts no new stage (``InteractiveGate``, bounded).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from worker.runtime import documents
from worker.runtime.intake import Ack, Decision, Nack
from worker.runtime.model_packages.catalog import Step
from worker.runtime.model_packages.handlers import Preprocessed, page_decode
from worker.runtime.pipeline.answering import Answerer, parse, timeline_of
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.models import ModelSet, Ran
from worker.runtime.pipeline.outcomes import RETRY, Outcomes
from worker.runtime.pipeline.ports import InputObject, Ports
from worker.runtime.pipeline.retries import with_retries
from worker.runtime.pipeline.watchdog import StageClock
from worker.runtime.settings import WorkerSettings
from worker.runtime.telemetry import get_logger
from worker.shared import contracts, errors
from worker.shared.contracts import Delivery, Job, Rejection

log = get_logger(__name__)
#: The longest the answer of a job past ``max_processing_s`` may take before the message goes back.
FAIL_FAST_ANSWER_S = 30.0


class _InputRead:
    """What the input read told, for the result: its digest (the fingerprint), its page count."""

    __slots__ = ("page_count", "sha256")

    def __init__(self) -> None:
        self.sha256: str | None = None
        self.page_count: int | None = None


class JobRunner:
    """Turns one leased delivery into a decision (``Ack``/``Nack``); never raises."""

    def __init__(
        self,
        settings: WorkerSettings,
        ports: Ports,
        *,
        models: ModelSet,
        answerer: Answerer,
        outcomes: Outcomes,
        gate: InteractiveGate,
        clock: StageClock | None = None,
        fetch_concurrency: int = 8,
    ) -> None:
        self._s = settings
        self._p = ports
        self._models = models
        self._answerer = answerer
        self._outcomes = outcomes
        self._gate = gate
        # batch input reads at once (interactive reads skip this limit and use their own threads)
        self._batch_fetches = asyncio.Semaphore(fetch_concurrency)
        # batch decodes handed to the pool at once: one queued behind each process, no more
        self._batch_decodes = asyncio.Semaphore(settings.preprocess_processes + 1)
        self._begun: set[str] = set()  # ack ids of jobs that began work (fetching their input)
        self._clock = clock or StageClock()  # where each job is, for the lease-age watchdog

    def has_begun(self, ack_id: str) -> bool:
        """Whether the job began work: a drain lets it finish; one not begun goes back at once."""
        return ack_id in self._begun

    async def decide(self, delivery: Delivery) -> Decision:
        """Run the job within ``max_processing_s`` of its lease; a crash or cancel gives it back."""
        try:
            budget = self._s.max_processing_s - (time.time() - delivery.leased_at)
            try:
                # asyncio.timeout, not wait_for: no second task per job
                async with asyncio.timeout(max(0.001, budget)):
                    return await self._process(delivery)
            except TimeoutError:
                return await self._fail_fast(
                    delivery, errors.ProcessingTimeout(f"job ran past {self._s.max_processing_s:.0f} s")
                )
        except asyncio.CancelledError:
            return Nack(delivery.subscription, delivery.ack_id)
        except Exception as exc:  # a bug must not leak the lease: give the message back
            log.error("job crashed", reason=type(exc).__name__, message_id=delivery.message_id)
            return Nack(delivery.subscription, delivery.ack_id)
        finally:
            self._begun.discard(delivery.ack_id)
            self._clock.leave(delivery.ack_id)

    async def _fail_fast(self, delivery: Delivery, error: errors.PermanentError) -> Decision:
        job = parse(delivery, self._s, self._models.catalog.analyses)
        try:
            return await asyncio.wait_for(
                self._answer(delivery, job, outputs=None, error=error, started=time.time()),
                timeout=FAIL_FAST_ANSWER_S,
            )
        except (TimeoutError, errors.FleetError):
            return Nack(delivery.subscription, delivery.ack_id)

    def _enter(self, delivery: Delivery, stage: str, job: Job | Rejection | None = None) -> None:
        job_id = None if job is None else job.job_id
        self._clock.enter(delivery.ack_id, stage, message_id=delivery.message_id, job_id=job_id)

    async def _process(self, delivery: Delivery) -> Decision:
        started = time.time()
        job = parse(delivery, self._s, self._models.catalog.analyses)
        self._enter(delivery, "fetch", job)
        if job.priority != contracts.INTERACTIVE:
            return await self._process_job(delivery, job, started)
        # Strict priority, bounded: while interactive work is in the worker, batch work starts no new
        # stage (fetch, decode, answer) and the Batcher sends no new batch request.
        with self._gate.entered():
            return await self._process_job(delivery, job, started)

    async def _process_job(self, delivery: Delivery, job: Job | Rejection, started: float) -> Decision:
        read = _InputRead()
        try:
            if isinstance(job, Rejection):
                return await self._answer(delivery, job, outputs=None, error=job.error, started=started)
            if delivery.delivery_attempt > 1:
                decision = await self._answer_existing(delivery, job)
                if decision is not None:
                    return decision
            ran = await self._run(delivery, job, read)
            return await self._answer(
                delivery,
                job,
                outputs=ran.outputs,
                error=None,
                started=started,
                ran=ran,
                input_sha256=read.sha256,
            )
        except errors.PermanentError as exc:
            return await self._answer(
                delivery,
                job,
                outputs=None,
                error=exc,
                started=started,
                input_sha256=read.sha256,
                page_count=read.page_count,
            )
        except errors.TransientError as exc:
            self._outcomes.record(delivery, job, RETRY, exc.code, started)
            return Nack(delivery.subscription, delivery.ack_id)

    @staticmethod
    def _check_deadline(job: Job) -> None:
        if job.deadline is not None and time.time() > job.deadline:
            raise errors.DeadlineExceeded("the job's deadline passed before it ran")

    async def _run(self, delivery: Delivery, job: Job, read: _InputRead) -> Ran:
        self._check_deadline(job)
        interactive = job.priority == contracts.INTERACTIVE
        ack_id = delivery.ack_id
        if interactive:
            # Interactive reads skip the fetch limit that paces the backlog and use their own threads;
            # no new batch request goes to Triton while this job is on its way there.
            self._begun.add(ack_id)
            data, read.sha256 = await self._read_input(job, urgent=True)
        else:
            await self._gate.yield_to()
            async with self._batch_fetches:
                self._begun.add(ack_id)
                data, read.sha256 = await self._read_input(job, urgent=False)

        pages = await self._pages(delivery, job, data, read, interactive=interactive)

        async def decode(step: Step, data: bytes, params: dict[str, Any], *, measure: bool) -> Preprocessed:
            self._enter(delivery, "preprocess", job)
            folder = str(step.package.folder)
            if interactive:  # its own process: no batch queue
                decoded = await self._p.preprocess(folder, data, params, urgent=True, measure=measure)
            else:
                await self._gate.yield_to()
                async with self._batch_decodes:  # paces pages as it paces jobs
                    decoded = await self._p.preprocess(folder, data, params, measure=measure)
            self._check_deadline(job)
            self._enter(delivery, "infer", job)  # from here the page's tensors wait for the model
            return decoded

        return await self._models.run(
            job.analyses,
            data,
            dict(job.params),
            interactive=interactive,
            decode=decode,
            pages=pages,
            page_count=read.page_count or 1,
            skip_blank=job.schema_version >= 2,  # a version 1 answer is as it always was
        )

    async def _pages(
        self, delivery: Delivery, job: Job, data: bytes, read: _InputRead, *, interactive: bool
    ) -> tuple[int, ...]:
        """The page numbers to analyse; a document that may have several is probed in the pool."""
        if not documents.may_have_pages(data):  # PNG, JPEG, ...: one page, no pool round trip
            read.page_count = 1
            past_the_end = [n for n in job.pages or () if n > 1]
            if past_the_end:
                raise errors.PageNotFound(f"page {past_the_end[0]} asked; the input has 1 page")
            return (1,)
        self._enter(delivery, "probe", job)
        if interactive:
            info = await self._p.preprocess.probe(data, urgent=True)
        else:
            await self._gate.yield_to()
            async with self._batch_decodes:
                info = await self._p.preprocess.probe(data)
        read.page_count = info.page_count
        if job.schema_version == 1 and info.page_count > 1:
            raise errors.MultiPageInput(
                f"the input has {info.page_count} pages; a schema_version 1 job can be answered from one "
                "page only: send schema_version 2 (fleet submit does) to have every page analysed"
            )
        plan = self._models.catalog.plan(job.analyses)
        decodes = [page_decode(step.package.declaration) for step in plan]
        return documents.select_pages(info, job.pages, decodes=decodes)

    async def _read_input(self, job: Job, *, urgent: bool) -> InputObject:
        return await with_retries(
            lambda: self._p.inputs.read_input(
                job.input_bucket, job.input_object, max_bytes=self._s.max_input_bytes, urgent=urgent
            ),
            attempts=self._s.transient_retries,
        )

    async def _answer_existing(self, delivery: Delivery, job: Job) -> Decision | None:
        """A redelivery whose result exists: re-publish its notification and ack, without rework."""
        self._begun.add(delivery.ack_id)
        answered = await self._answerer.answer_existing(delivery, job)
        if answered is None:
            return None
        self._outcomes.record(
            delivery, job, answered.status, answered.error_code, time.time(), duplicate=True
        )
        return Ack(delivery.subscription, delivery.ack_id)

    async def _answer(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        *,
        outputs: dict[str, Any] | None,
        error: errors.FleetError | None,
        started: float,
        ran: Ran | None = None,
        input_sha256: str | None = None,
        page_count: int | None = None,
    ) -> Decision:
        self._begun.add(delivery.ack_id)  # answering: a drain lets it finish
        self._enter(delivery, "answer", job)
        inference_ms = ran.inference_ms if ran is not None else 0.0
        timeline = timeline_of(
            delivery, started=started, inference_ms=inference_ms, models=ran.timings if ran else None
        )
        if job.priority != contracts.INTERACTIVE:
            await self._gate.yield_to()
        answered = await self._answerer.answer(
            delivery,
            job,
            outputs=outputs,
            error=error,
            timeline=timeline,
            input_sha256=input_sha256,
            model=ran.model() if ran is not None else None,
            page_count=ran.page_count if ran is not None else page_count,
            pages=ran.pages if ran is not None else (),
        )
        self._outcomes.record(
            delivery,
            job,
            answered.status,
            answered.error_code,
            started,
            duplicate=answered.duplicate,
            inference_ms=inference_ms,
        )
        return Ack(delivery.subscription, delivery.ack_id)
