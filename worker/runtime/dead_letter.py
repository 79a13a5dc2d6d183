"""The dead-letter handler: every job that exhausted its delivery attempts still gets an answer.

Pulls ``FLEET_DEAD_LETTER_HANDLER_SUBSCRIPTION`` (one of two subscriptions on the dead-letter topic; the
other, ``fleet-dead-letter-hold``, keeps every message for inspection and replay). For each message it
writes the DEAD_LETTERED failure result if the job has no result yet -- never overwriting one that a
worker wrote after all -- publishes the notification matching the stored result, then acks. The
writing and notifying is the pipeline's own ``Answerer`` (worker/runtime/pipeline/answering.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

from worker.runtime.intake import Ack, JobSource, Nack, Settler
from worker.runtime.pipeline.answering import Answerer, parse, timeline_of
from worker.runtime.settings import WorkerSettings
from worker.runtime.telemetry import get_logger
from worker.shared import contracts, errors, exit_codes
from worker.shared.contracts import Delivery

log = get_logger("worker.runtime.dead_letter")
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"


class DeadLetterHandler:
    """Answers dead-lettered jobs until ``stop()``."""

    def __init__(
        self,
        settings: WorkerSettings,
        source: JobSource,
        answerer: Answerer,
        *,
        offered: tuple[str, ...] = contracts.DEFAULT_ANALYSES,
    ) -> None:
        self._s = settings
        self._offered = offered  # the analyses the worker offers: the job parses as the worker parsed it
        self._source = source
        self._answerer = answerer
        self.settler = Settler(source, interval_s=settings.settle_interval_ms / 1000.0)
        self._stopping = asyncio.Event()
        self.answered = 0

    def stop(self, reason: str = "stop") -> None:
        log.info("dlq handler stopping", reason=reason)
        self._stopping.set()

    async def run(self) -> int:
        """Answer until ``stop()``; the exit code."""
        self.settler.start()
        idle_s = 0.0
        try:
            while not self._stopping.is_set():
                try:
                    deliveries = await self._source.pull(self._s.dead_letter_handler_subscription, 100)
                except errors.TransientError as exc:
                    log.warning("pull failed", error_code=exc.code)
                    deliveries = []
                if not deliveries:
                    idle_s = min(self._s.idle_poll_max_ms / 1000.0 * 5, max(0.01, idle_s * 2))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), idle_s)
                    continue
                idle_s = 0.0
                decisions = await asyncio.gather(*(self.handle(d) for d in deliveries))
                self.settler.submit_many(decisions)
        finally:
            await self.settler.close()
        return exit_codes.OK

    async def handle(self, delivery: Delivery) -> Ack | Nack:
        """Answer one dead-lettered job (never overwriting a result); Nack when storage/Pub/Sub fail."""
        attempts = delivery.attributes.get(f"{DEAD_LETTER_ATTRIBUTE_PREFIX}SourceDeliveryCount", "")
        client_attributes = {
            k: v for k, v in delivery.attributes.items() if not k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)
        }
        original = dataclasses.replace(
            delivery,
            attributes=client_attributes,
            delivery_attempt=int(attempts) if attempts.isdigit() else delivery.delivery_attempt,
        )
        job = parse(original, self._s, self._offered)
        error = errors.DeadLettered(
            f"the job was not processed after {attempts or 'the maximum'} delivery attempts"
        )
        try:
            answered = await self._answerer.answer(
                original, job, outputs=None, error=error, timeline=timeline_of(delivery, started=time.time())
            )
        except errors.TransientError as exc:
            log.warning("dead-letter answer failed; will retry", job_id=job.job_id, error_code=exc.code)
            return Nack(delivery.subscription, delivery.ack_id)
        self.answered += 1
        log.info(
            "dead-lettered job answered",
            job_id=job.job_id,
            status=answered.status,
            error_code=answered.error_code,
            duplicate=answered.duplicate or None,
            delivery_attempt=original.delivery_attempt,
        )
        return Ack(delivery.subscription, delivery.ack_id)
