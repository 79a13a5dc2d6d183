"""Outcome records: one metric update and one log line per job answered (or given back for a retry)."""

from __future__ import annotations

import time

from worker.runtime.telemetry import Metrics, get_logger, trace_from_attributes
from worker.shared.contracts import Delivery, Job, Rejection

log = get_logger(__name__)
#: The status logged for a job given back (nacked) after a transient error; not a final outcome.
RETRY = "retry"


class Outcomes:
    """Counts final outcomes in ``Metrics`` and logs every outcome (whitelisted fields only)."""

    def __init__(self, metrics: Metrics, *, project: str) -> None:
        self._metrics = metrics
        self._project = project

    def record(
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
        """``started``: when the job began running (wall clock); latency counts from its publish."""
        latency_ms = (time.time() - delivery.publish_time) * 1000.0
        if status != RETRY:
            self._metrics.job_done(status, latency_ms)
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
            trace=trace_from_attributes(delivery.attributes, self._project),
        )
