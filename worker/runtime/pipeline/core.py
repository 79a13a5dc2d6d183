"""``Pipeline``: wires the pipeline's components over the ports and owns its run, drain and exit code.

Components and their one concern each: ``Puller`` (pulling.py) leases jobs into the ``Dispatcher``
(dispatcher.py), which runs each through the ``JobRunner`` (job.py): fetch, then the job's plan across
the ``ModelSet`` (models.py: a ``Batcher`` per model, batching.py), answer through the ``Answerer``
(answering.py), record the outcome (outcomes.py). The ``Settler`` and ``Leases``
(worker/runtime/intake/) apply decisions and renew leases; the ``OutageMonitor`` (outage.py) waits
out a Triton outage. Each background component has its own
``start()``/``close()``; a component that crashes drains the worker with exit code ``INTERNAL``. The
``Watchdog`` (watchdog.py) reports jobs held in a stage past its budget.
"""

from __future__ import annotations

import asyncio

from worker.runtime.flusher import Background
from worker.runtime.intake import Leases, Settler
from worker.runtime.pipeline.answering import Answerer
from worker.runtime.pipeline.dispatcher import Dispatcher
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.job import JobRunner
from worker.runtime.pipeline.models import ModelSet
from worker.runtime.pipeline.outage import Health, OutageMonitor
from worker.runtime.pipeline.outcomes import Outcomes
from worker.runtime.pipeline.ports import Ports
from worker.runtime.pipeline.pulling import Puller
from worker.runtime.pipeline.watchdog import StageClock, Watchdog
from worker.runtime.settings import WorkerSettings
from worker.runtime.telemetry import Metrics, get_logger
from worker.shared import exit_codes

log = get_logger(__name__)


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
        self.metrics = metrics or Metrics(slots=settings.pipeline_slots)
        self.metrics.slots = settings.pipeline_slots
        self._stopping = asyncio.Event()
        self._started = False
        self.exit_code: int = exit_codes.OK
        self.drain_reason: str | None = None
        self.health = Health()
        self.settler = Settler(ports.source, interval_s=settings.settle_interval_ms / 1000.0)
        self.leases = Leases(
            self.settler, ack_deadline_s=settings.ack_deadline_s, max_processing_s=settings.max_processing_s
        )
        gate = InteractiveGate()
        self.models = ModelSet(ports.catalog, ports.models, self.health, settings=settings, gate=gate)
        self.outage = OutageMonitor(
            self.health,
            self.models,
            fail_queued=self.models.fail_queued,
            outage_exit_s=settings.triton_outage_exit_s,
            on_give_up=self._give_up_on_triton,
        )
        self.answerer = Answerer(
            ports.results,
            ports.notifier,
            settings=settings,
            model_name=self.models.name,
            model_version=lambda: self.models.version,
        )
        self.clock = StageClock()
        self.watchdog = Watchdog(self.clock, self.metrics)
        runner = JobRunner(
            settings,
            ports,
            models=self.models,
            answerer=self.answerer,
            outcomes=Outcomes(self.metrics, project=settings.project),
            gate=gate,
            clock=self.clock,
            fetch_concurrency=fetch_concurrency,
        )
        self.dispatcher = Dispatcher(
            runner, settler=self.settler, leases=self.leases, metrics=self.metrics, stopping=self._stopping
        )
        self.puller = Puller(settings, ports.source, self.dispatcher, self.health, stopping=self._stopping)

    def drain(self, reason: str) -> None:
        """Stop pulling and finish in-flight work within the drain budget (idempotent)."""
        if not self._stopping.is_set():
            self.drain_reason = reason
            log.info("drain requested", reason=reason, held=self.dispatcher.in_flight)
            self._stopping.set()

    async def run(self) -> int:
        """Start the components, pull until drained, finish in-flight work, close; the exit code."""
        if self._started:
            raise RuntimeError("pipeline already started")
        self._started = True
        # Closed in reverse: the settler last, so it applies every decision the others made.
        components: tuple[Background, ...] = (
            self.settler,
            self.leases,
            *self.models.components,
            self.outage,
            self.watchdog,
        )
        for component in components:
            component.start().add_done_callback(self._component_done)
        try:
            await self.puller.run()
            budget_s = self._s.drain_budget_s if self.exit_code == exit_codes.OK else 0.0
            await self.dispatcher.finish(budget_s=budget_s)
        finally:
            for component in reversed(components):
                await component.close()
        return self.exit_code

    def _give_up_on_triton(self) -> None:
        self.exit_code = exit_codes.TRITON_OUTAGE
        self.drain("triton_outage")

    def _component_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A dead settler or batcher would strand every job: stop, give leases back, exit non-zero.
        log.error("pipeline component crashed", reason=repr(task.exception())[:300])
        self.exit_code = exit_codes.INTERNAL
        self.drain("internal_error")
