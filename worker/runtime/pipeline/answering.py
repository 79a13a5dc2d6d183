"""Answering a job: its one result object (written once, never overwritten) and its notification.

Every path that answers goes through ``Answerer``: a job that ran, one that failed or was rejected, a
redelivery whose result already exists (``answer_existing`` re-publishes the stored outcome without
rework), and the dead-letter handler's DEAD_LETTERED answer (worker/runtime/dead_letter.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from worker.runtime.pipeline.ports import Notifier, ResultStore
from worker.runtime.pipeline.retries import with_retries
from worker.runtime.settings import WorkerSettings
from worker.shared import contracts, errors
from worker.shared.contracts import Delivery, Job, Rejection, Timeline


class Answered(NamedTuple):
    """How a job was answered: the status its notification carries and whether the result existed."""

    status: str
    error_code: str | None
    duplicate: bool


def parse(delivery: Delivery, settings: WorkerSettings) -> Job | Rejection:
    """The job in ``delivery``, validated against the worker's limits, or why it cannot run."""
    return contracts.parse_job(
        delivery, allowed_buckets=settings.allowed_buckets, max_message_bytes=settings.max_message_bytes
    )


def timeline_of(delivery: Delivery, *, started: float, inference_ms: float = 0.0) -> Timeline:
    """The result's timeline for a job answered now (wall-clock seconds)."""
    return Timeline(
        published=delivery.publish_time,
        leased=delivery.leased_at,
        started=started,
        finished=time.time(),
        inference_ms=inference_ms,
    )


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
        self._prefix = settings.results_prefix
        self._retries = settings.transient_retries
        self._model_name = model_name
        self._model_version = model_version
        self._pid = os.getpid()
        self._instance = settings.instance

    def object_name(self, job_id: str | None, message_id: str) -> str:
        return contracts.result_object_name(self._prefix, job_id, message_id)

    async def answer(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        *,
        outputs: dict[str, Any] | None,
        error: errors.FleetError | None,
        timeline: Timeline,
    ) -> Answered:
        """Write the result unless one exists, then notify what is stored.

        Raises ``TransientError`` when storage or Pub/Sub stay down (the caller gives the message back).
        """
        name = self.object_name(job.job_id, delivery.message_id)
        document = contracts.build_result(
            job_id=job.job_id,
            input_uri=job.input_uri if isinstance(job, Job) else None,
            outputs=outputs,
            error=error,
            model={"name": self._model_name, "version": self._model_version()},
            timeline=timeline,
            instance=self._instance,
            pid=self._pid,
            delivery_attempt=delivery.delivery_attempt,
        )
        payload = contracts.encode(document)
        urgent = job.priority == contracts.INTERACTIVE
        created = await with_retries(
            lambda: self._results.create_result(name, payload, urgent=urgent), attempts=self._retries
        )
        status, error_body = document["status"], document["error"]
        if not created:
            existing = await self._read(name)
            if existing is not None:
                status, error_body = _status_of(existing, status, error_body)
        await self._notify(delivery, job, status=status, error_body=error_body, name=name)
        return Answered(status, (error_body or {}).get("code"), duplicate=not created)

    async def answer_existing(self, delivery: Delivery, job: Job) -> Answered | None:
        """A redelivery whose result exists: re-publish its notification; None when there is none."""
        name = self.object_name(job.job_id, delivery.message_id)
        data = await self._read(name)
        if data is None:
            return None
        status, error_body = _status_of(data, contracts.STATUS_FAILED, None)
        await self._notify(delivery, job, status=status, error_body=error_body, name=name)
        return Answered(status, (error_body or {}).get("code"), duplicate=True)

    async def _read(self, name: str) -> bytes | None:
        return await with_retries(lambda: self._results.read_result(name), attempts=self._retries)

    async def _notify(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        *,
        status: str,
        error_body: dict[str, str] | None,
        name: str,
    ) -> None:
        notification = contracts.build_notification(
            job_id=job.job_id,
            status=status,
            result_uri=self._results.result_uri(name),
            error=error_body,
            priority=job.priority,
            client_attributes=delivery.attributes,
        )
        await with_retries(lambda: self._notifier.publish(notification), attempts=self._retries)


def _status_of(
    data: bytes, status: str, error_body: dict[str, str] | None
) -> tuple[str, dict[str, str] | None]:
    """(status, error) of a stored result document; the given fallback when it cannot be read."""
    try:
        document = json.loads(data)
        return str(document["status"]), document.get("error")
    except (ValueError, KeyError, TypeError):
        return status, error_body
