"""Result objects in GCS, the truth about a job: written once by the worker, read here by job id.

A job id is the caller's choice, so the object at a job's path may answer another job (the same id with
another input, from an earlier run or another publisher). Where the client knows the job it asked for
(its ``JobIdentity``), it takes a stored result only when the result's fingerprint matches; otherwise the
job's answer is the worker's ``JOB_ID_CONFLICT`` result, stored under the message id it was published as.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.api_core import exceptions as gexc

from worker.client.connections import Connections
from worker.client.outcomes import outcome_from_result
from worker.client.records import STATUS_PENDING, JobIdentity, JobOutcome
from worker.client.result_records import JobResult, read_result
from worker.client.settings import ClientSettings


class ResultObjects:
    """Reads result objects one at a time, or many at once on ``storage_threads`` threads."""

    def __init__(self, settings: ClientSettings, connections: Connections) -> None:
        self._settings = settings
        self._connections = connections

    def fetch(self, job_id: str) -> dict[str, Any] | None:
        """The object at the job's result path (parsed JSON), or None when there is none yet.

        It is whatever is stored under this job id (in this client's namespace), whichever job it answers.
        """
        return self.fetch_object(self._settings.result_object(job_id))

    def fetch_object(self, name: str) -> dict[str, Any] | None:
        """The result object ``name`` in the results bucket (parsed JSON), or None when it does not exist."""
        blob = self._connections.storage().bucket(self._settings.results_bucket).blob(name)
        try:
            raw = blob.download_as_bytes()
        except gexc.NotFound:
            return None
        document: dict[str, Any] = json.loads(raw)
        return document

    def result(self, job_id: str) -> JobResult | None:
        """The object at the job's result path, read (outcome, page count, pages), or None when none yet."""
        document = self.fetch(job_id)
        return None if document is None else read_result(document, self._settings.result_uri(job_id))

    def outcome(
        self, job_id: str, identity: JobIdentity | None = None, message_id: str | None = None
    ) -> JobOutcome:
        """The outcome recorded for the job; status ``pending`` when there is none.

        Without ``identity`` it is what is stored under the job id. With it, only a result that answers
        this job counts; a stored result of another job is replaced by the JOB_ID_CONFLICT result the
        worker wrote for ``message_id`` (the publish of this job), or ``pending`` until there is one.
        """
        document = self.fetch(job_id)
        uri = self._settings.result_uri(job_id)
        if document is not None and identity is not None and not identity.answered_by(document):
            document, uri = self._own_rejection(identity, message_id)
        if document is None:
            return JobOutcome(job_id, STATUS_PENDING)
        outcome = outcome_from_result(document, uri)
        return outcome if outcome.job_id == job_id else JobOutcome(job_id, outcome.status, outcome.result_uri)

    def answered(
        self,
        job_ids: Sequence[str],
        identities: Mapping[str, JobIdentity] | None = None,
        message_ids: Mapping[str, str] | None = None,
    ) -> dict[str, JobOutcome]:
        """The outcomes of those ``job_ids`` that are answered (one or two GETs each, in parallel).

        A job with an entry in ``identities`` is answered only by a result that answers it (see
        ``outcome``); the others by whatever is stored under their id.
        """
        if not job_ids:
            return {}
        known = identities or {}
        published = message_ids or {}
        self._connections.storage()  # created once, before the threads share it
        with ThreadPoolExecutor(self._settings.storage_threads) as pool:
            outcomes = list(
                pool.map(
                    lambda job_id: self.outcome(job_id, known.get(job_id), published.get(job_id)), job_ids
                )
            )
        return {outcome.job_id: outcome for outcome in outcomes if outcome.answered}

    def _own_rejection(
        self, identity: JobIdentity, message_id: str | None
    ) -> tuple[dict[str, Any] | None, str]:
        """The JOB_ID_CONFLICT result of this job's publish, when the worker has written it."""
        if message_id is None:
            return None, ""
        name = self._settings.rejected_object(message_id)
        document = self.fetch_object(name)
        if document is None or not identity.answered_by(document):
            return None, ""
        return document, self._settings.object_uri(name)
