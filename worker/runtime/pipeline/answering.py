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
from worker.shared.contracts import Delivery, Job, PageResult, Rejection, Timeline


class Answered(NamedTuple):
    """How a job was answered: the status its notification carries and whether the result existed."""

    status: str
    error_code: str | None
    duplicate: bool


def parse(
    delivery: Delivery,
    settings: WorkerSettings,
    offered: tuple[str, ...] = contracts.DEFAULT_ANALYSES,
) -> Job | Rejection:
    """The job in ``delivery``, validated against the worker's limits and ``offered`` analyses.

    A job that names no analyses asks for the fleet's default (``contracts.default_analyses``).
    """
    return contracts.parse_job(
        delivery,
        allowed_buckets=settings.allowed_buckets,
        max_message_bytes=settings.max_message_bytes,
        offered_analyses=offered,
    )


def timeline_of(
    delivery: Delivery,
    *,
    started: float,
    inference_ms: float = 0.0,
    models: dict[str, dict[str, float]] | None = None,
) -> Timeline:
    """The result's timeline for a job answered now (wall-clock seconds); ``models``: per-model timings."""
    return Timeline(
        published=delivery.publish_time,
        leased=delivery.leased_at,
        started=started,
        finished=time.time(),
        inference_ms=inference_ms,
        models=models,
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

    def object_name(self, job: Job | Rejection, message_id: str) -> str:
        """The job's result path: ``<prefix>[<namespace>/]<job_id>.json`` (``_rejected/`` without an id)."""
        return contracts.result_object_name(self._prefix, job.job_id, message_id, job.namespace)

    async def answer(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        *,
        outputs: dict[str, Any] | None,
        error: errors.FleetError | None,
        timeline: Timeline,
        input_sha256: str | None = None,
        model: dict[str, str] | None = None,
        page_count: int | None = None,
        pages: tuple[PageResult, ...] = (),
    ) -> Answered:
        """Write the result unless one exists, then notify what is stored — if it answers this job.

        ``model``: the models that answered it (default: the worker's, for a job that ran none).
        ``page_count``/``pages``: the document's page count when it was read, the analysed pages.

        A stored result answers this job when its fingerprint matches (a redelivery, a duplicate publish,
        a re-run manifest); otherwise the job_id is another job's and this one is answered
        JOB_ID_CONFLICT at a path of its own. Raises ``TransientError`` when storage or Pub/Sub stay
        down (the caller gives the message back).
        """
        request = contracts.request_fingerprint(job, delivery.data)
        name = self.object_name(job, delivery.message_id)
        document = self._document(
            delivery,
            job,
            outputs=outputs,
            error=error,
            timeline=timeline,
            request=request,
            input_sha256=input_sha256,
            model=model,
            page_count=page_count,
            pages=pages,
        )
        created, stored = await self._create_or_read(name, document, job)
        if stored is not None and not _answers(stored, job, delivery.data, request, input_sha256):
            return await self._conflict(delivery, job, timeline, request, input_sha256)
        status, error_body = _status_of(stored if stored is not None else document, document)
        await self._notify(delivery, job, status=status, error_body=error_body, name=name, request=request)
        return Answered(status, (error_body or {}).get("code"), duplicate=not created)

    async def answer_existing(self, delivery: Delivery, job: Job) -> Answered | None:
        """A redelivery whose result exists: re-publish its notification; None when there is none.

        The input is not read again, so the stored result is taken when the request matches; a stored
        result of another request (the job_id was reused) answers this job JOB_ID_CONFLICT at once.
        """
        name = self.object_name(job, delivery.message_id)
        stored = _document_of(await self._read(name))
        if stored is None:
            return None
        request = contracts.request_fingerprint(job, delivery.data)
        if not _answers(stored, job, delivery.data, request, None):
            started = time.time()
            timeline = Timeline(delivery.publish_time, delivery.leased_at, started, started)
            return await self._conflict(delivery, job, timeline, request, None)
        status, error_body = _status_of(stored, {"status": contracts.STATUS_FAILED, "error": None})
        await self._notify(delivery, job, status=status, error_body=error_body, name=name, request=request)
        return Answered(status, (error_body or {}).get("code"), duplicate=True)

    async def _conflict(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        timeline: Timeline,
        request: str,
        input_sha256: str | None,
    ) -> Answered:
        """Answer a job whose job_id is taken by another job: its own failure, at its message's path.

        The other job's result is neither touched nor pointed at, so this client never reads it.
        """
        error: errors.PermanentError = errors.JobIdConflict(
            f"job_id {job.job_id!r} already has a result that answers a different job (another input or "
            "options); use a new job_id, or a namespace of your own"
        )
        if isinstance(job, Rejection):  # a rejected message keeps its own error, at its own path
            error = job.error
        name = contracts.rejected_object_name(self._prefix, delivery.message_id)
        document = self._document(
            delivery,
            job,
            outputs=None,
            error=error,
            timeline=timeline,
            request=request,
            input_sha256=input_sha256,
        )
        created, stored = await self._create_or_read(name, document, job)
        status, error_body = _status_of(stored or document, document)
        await self._notify(delivery, job, status=status, error_body=error_body, name=name, request=request)
        return Answered(status, (error_body or {}).get("code"), duplicate=not created)

    def _document(
        self,
        delivery: Delivery,
        job: Job | Rejection,
        *,
        outputs: dict[str, Any] | None,
        error: errors.FleetError | None,
        timeline: Timeline,
        request: str,
        input_sha256: str | None,
        model: dict[str, str] | None = None,
        page_count: int | None = None,
        pages: tuple[PageResult, ...] = (),
    ) -> dict[str, Any]:
        return contracts.build_result(
            job_id=job.job_id,
            input_uri=job.input_uri if isinstance(job, Job) else None,
            outputs=outputs,
            error=error,
            model=model or {"name": self._model_name, "version": self._model_version()},
            timeline=timeline,
            instance=self._instance,
            pid=self._pid,
            delivery_attempt=delivery.delivery_attempt,
            fingerprint=contracts.fingerprint_body(request, input_sha256),
            namespace=job.namespace,
            schema_version=job.schema_version,
            page_count=page_count,
            pages=pages,
            analyses=job.analyses if isinstance(job, Job) else None,
        )

    async def _create_or_read(
        self, name: str, document: dict[str, Any], job: Job | Rejection
    ) -> tuple[bool, dict[str, Any] | None]:
        """(created, the stored document when one already existed)."""
        payload = contracts.encode(document)
        urgent = job.priority == contracts.INTERACTIVE
        created = await with_retries(
            lambda: self._results.create_result(name, payload, urgent=urgent), attempts=self._retries
        )
        if created:
            return True, None
        return False, _document_of(await self._read(name))

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
        request: str,
    ) -> None:
        notification = contracts.build_notification(
            job_id=job.job_id,
            status=status,
            result_uri=self._results.result_uri(name),
            error=error_body,
            priority=job.priority,
            client_attributes=delivery.attributes,
            fingerprint=request,
        )
        await with_retries(lambda: self._notifier.publish(notification), attempts=self._retries)


def _answers(
    stored: dict[str, Any], job: Job | Rejection, data: bytes, request: str, input_sha256: str | None
) -> bool:
    """Whether the stored result answers this job; one stored by a worker of fingerprint version 1 (in
    flight across an upgrade) is compared with the job's fingerprint under that recipe."""
    request_v1 = contracts.request_fingerprint(job, data, version=1)
    return contracts.answers_same_job(stored, request, input_sha256, request_v1=request_v1)


def _document_of(data: bytes | None) -> dict[str, Any] | None:
    """A stored result document; ``{}`` for one that cannot be read (never taken as another job's)."""
    if data is None:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _status_of(document: dict[str, Any], fallback: dict[str, Any]) -> tuple[str, dict[str, str] | None]:
    """(status, error) of a result document; the fallback's when the stored one is unreadable."""
    status = document.get("status")
    if not isinstance(status, str):
        return str(fallback["status"]), fallback.get("error")
    return status, document.get("error")
