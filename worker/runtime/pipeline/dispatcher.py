"""The jobs in flight: one task per leased job, its lease held while it runs, its decision settled.

``start`` turns deliveries into tasks (or gives them straight back once a drain began); when a job ends
its lease is released, its decision goes to the ``Settler`` and its slot is free (``slot_freed``).
``finish`` is the drain: jobs not begun go back at once, the rest get the drain budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from worker.runtime.intake import Leases, Nack, Settler
from worker.runtime.pipeline.job import JobRunner
from worker.runtime.telemetry import Metrics, get_logger
from worker.shared.contracts import Delivery

log = get_logger(__name__)


class Dispatcher:
    """Owns the job tasks; the pullers ask it how many slots are taken."""

    def __init__(
        self,
        runner: JobRunner,
        *,
        settler: Settler,
        leases: Leases,
        metrics: Metrics,
        stopping: asyncio.Event,
    ) -> None:
        self._runner = runner
        self._settler = settler
        self._leases = leases
        self._metrics = metrics
        self._stopping = stopping
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self.slot_freed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def start(self, deliveries: Iterable[Delivery]) -> None:
        """One task per leased job; a drain that began meanwhile gives them back at once."""
        if self._stopping.is_set():
            self._settler.submit_many(Nack(d.subscription, d.ack_id) for d in deliveries)
            return
        for delivery in deliveries:
            self._leases.hold(delivery)
            self._jobs[delivery.ack_id] = asyncio.create_task(self._handle(delivery))
        self._metrics.set_in_flight(len(self._jobs))

    async def _handle(self, delivery: Delivery) -> None:
        decision = await self._runner.decide(delivery)
        self._leases.release(delivery.ack_id)
        self._settler.submit(decision)
        self._jobs.pop(delivery.ack_id, None)
        self._metrics.set_in_flight(len(self._jobs))
        self.slot_freed.set()

    async def finish(self, *, budget_s: float) -> None:
        """Give back jobs not begun, let the rest finish within ``budget_s``, nack what is still held."""
        # Jobs that have not begun go back at once (nacked by their handler) so another worker starts
        # them now; the drain budget is for work already under way.
        waiting = [task for ack_id, task in self._jobs.items() if not self._runner.has_begun(ack_id)]
        for task in waiting:
            task.cancel()
        if waiting:
            log.info("giving back jobs not begun", count=len(waiting))
            await asyncio.gather(*waiting, return_exceptions=True)
        pending = list(self._jobs.values())
        if pending:
            log.info("draining", count=len(pending), seconds=budget_s)
            _done, not_done = (
                await asyncio.wait(pending, timeout=budget_s) if budget_s > 0 else (set(), set(pending))
            )
            for task in not_done:
                task.cancel()
            if not_done:
                await asyncio.gather(*not_done, return_exceptions=True)
        # Whatever is still leased (cancelled jobs) goes back to the subscription now.
        self._settler.submit_many(Nack(sub, ack_id) for sub, ack_id in self._leases.held_ids())
