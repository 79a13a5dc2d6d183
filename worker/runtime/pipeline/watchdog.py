"""The lease-age watchdog: a job held in one stage past that stage's budget is logged with its stage and
counted (``Metrics.overdue``, exported as ``jobs_overdue`` by stage), so a job waiting for nothing is
seen long before its lease ends (``max_processing_s``, when PROCESSING_TIMEOUT answers it).

The job runner moves each job through ``StageClock`` as it goes (``enter``): ``fetch`` (from its lease:
parse, the stored result of a redelivery, the fetch slot and the read), ``probe`` (a document's page
count), ``preprocess`` (a page's decode in the pool, and its queue), ``infer`` (from the decoded tensors
to the model's answer: the page's blank measure, the batcher's queue, Triton and its retries) and
``answer`` (the result write and the notification, with retries). A job of several pages or models
enters stages again as its steps go; the clock restarts at each. ``Watchdog`` looks every
``CHECK_INTERVAL_S`` and reports each overdue stage of a job once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

from worker.runtime.flusher import Background
from worker.runtime.telemetry import Metrics, get_logger

log = get_logger(__name__)

#: The longest each stage takes when everything works as designed, retries included, with headroom;
#: every budget is far under ``max_processing_s`` (600 s by default).
STAGE_BUDGETS_S: Final[dict[str, float]] = {
    # a 32 MiB read on its thread (interactive or one of 8 batch fetches), three attempts with backoff
    "fetch": 60.0,
    # a document's structure read in a pool process, behind at most one queued decode per process
    "probe": 30.0,
    # a page's decode and the handler (a PDF page's render is killed at 10 s), behind queued decodes
    "preprocess": 60.0,
    # the batch delay, the batcher's queue, then Triton: 30 s a call (FLEET_TRITON_TIMEOUT_S), 3 attempts
    "infer": 120.0,
    # the write-once result and the notification publish, each with its retries
    "answer": 60.0,
}
STAGES: Final = tuple(STAGE_BUDGETS_S)
#: How often the watchdog looks: an overdue job is reported at most this late.
CHECK_INTERVAL_S: Final = 5.0


@dataclass(slots=True)
class Held:
    """Where one job is: its stage, since when (monotonic), and whether that stage was reported."""

    message_id: str
    job_id: str | None
    stage: str
    since: float
    reported: bool = False


class StageClock:
    """Each job in the worker and the stage it is in, keyed by ack id; the job runner moves it on."""

    def __init__(self) -> None:
        self._held: dict[str, Held] = {}

    def enter(self, ack_id: str, stage: str, *, message_id: str, job_id: str | None = None) -> None:
        """The job is now in ``stage`` (its clock restarts)."""
        self._held[ack_id] = Held(message_id, job_id, stage, time.monotonic())

    def leave(self, ack_id: str) -> None:
        """The job has its decision: no longer watched."""
        self._held.pop(ack_id, None)

    def stage_of(self, ack_id: str) -> str | None:
        held = self._held.get(ack_id)
        return None if held is None else held.stage

    def overdue(self, budgets: dict[str, float], now: float | None = None) -> list[Held]:
        """The jobs in a stage for longer than its budget, not reported yet for that stage."""
        at = time.monotonic() if now is None else now
        return [
            held
            for held in self._held.values()
            if not held.reported and at - held.since > budgets.get(held.stage, float("inf"))
        ]


class Watchdog(Background):
    """Reports each job held in a stage past its budget: one warning log line and one count, by stage."""

    def __init__(
        self,
        clock: StageClock,
        metrics: Metrics,
        *,
        budgets: dict[str, float] | None = None,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._budgets = dict(STAGE_BUDGETS_S if budgets is None else budgets)
        self._interval_s = interval_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.check()

    def check(self, now: float | None = None) -> list[Held]:
        """Report every job that is overdue now; returns them."""
        at = time.monotonic() if now is None else now
        found = self._clock.overdue(self._budgets, at)
        for held in found:
            held.reported = True
            self._metrics.job_overdue(held.stage)
            log.warning(
                "job held past its stage budget",
                job_id=held.job_id,
                message_id=held.message_id,
                stage=held.stage,
                seconds=round(at - held.since, 1),
            )
        return found
