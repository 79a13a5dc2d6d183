"""The dead-letter handler: every job that exhausted its delivery attempts still gets an answer.

Pulls ``FLEET_DEAD_LETTER_HANDLER_SUBSCRIPTION`` (one of two subscriptions on the dead-letter topic; the
other, ``fleet-dead-letter-hold``, keeps every message for inspection and replay). For each message it
writes the DEAD_LETTERED failure result if the job has no result yet -- never overwriting one that a
worker wrote after all -- publishes the notification matching the stored result, then acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

from worker.runtime.intake import Ack, JobSource, Nack, Settler
from worker.runtime.pipeline import Answerer
from worker.runtime.settings import WorkerSettings
from worker.runtime.telemetry import get_logger
from worker.shared import contracts, errors
from worker.shared.contracts import Delivery, Rejection, Timeline

log = get_logger("worker.runtime.dead_letter")
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"


class DeadLetterHandler:
    """Answers dead-lettered jobs until ``stop()``."""

    def __init__(self, settings: WorkerSettings, source: JobSource, answerer: Answerer) -> None:
        self._s = settings
        self._source = source
        self._answerer = answerer
        self.settler = Settler(source, interval_s=settings.settle_interval_ms / 1000.0)
        self._stopping = asyncio.Event()
        self.answered = 0

    def stop(self, reason: str = "stop") -> None:
        log.info("dlq handler stopping", reason=reason)
        self._stopping.set()

    async def run(self) -> int:
        settle = asyncio.create_task(self.settler.run())
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
            settle.cancel()
            await asyncio.gather(settle, return_exceptions=True)
            await self.settler.close()
        return 0

    async def handle(self, delivery: Delivery) -> Ack | Nack:
        attempts = delivery.attributes.get(f"{DEAD_LETTER_ATTRIBUTE_PREFIX}SourceDeliveryCount", "")
        client_attributes = {
            k: v for k, v in delivery.attributes.items() if not k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)
        }
        original = dataclasses.replace(
            delivery,
            attributes=client_attributes,
            delivery_attempt=int(attempts) if attempts.isdigit() else delivery.delivery_attempt,
        )
        job = contracts.parse_job(
            original, allowed_buckets=self._s.allowed_buckets, max_message_bytes=self._s.max_message_bytes
        )
        now = time.time()
        if isinstance(job, Rejection):
            job_id, priority, uri = job.job_id, job.priority, None
        else:
            job_id, priority, uri = job.job_id, job.priority, job.input_uri
        error = errors.DeadLettered(
            f"the job was not processed after {attempts or 'the maximum'} delivery attempts"
        )
        try:
            status, code, duplicate = await self._answerer.answer(
                original,
                job_id=job_id,
                priority=priority,
                input_uri=uri,
                outputs=None,
                error=error,
                timeline=Timeline(
                    published=delivery.publish_time, leased=delivery.leased_at, started=now, finished=now
                ),
            )
        except errors.TransientError as exc:
            log.warning("dead-letter answer failed; will retry", job_id=job_id, error_code=exc.code)
            return Nack(delivery.subscription, delivery.ack_id)
        self.answered += 1
        log.info(
            "dead-lettered job answered",
            job_id=job_id,
            status=status,
            error_code=code,
            duplicate=duplicate or None,
            delivery_attempt=original.delivery_attempt,
        )
        return Ack(delivery.subscription, delivery.ack_id)
