"""Result objects in GCS, the truth about a job: written once by the worker, read here by job id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.api_core import exceptions as gexc

from worker.client.connections import Connections
from worker.client.outcomes import outcome_from_result
from worker.client.records import STATUS_PENDING, JobOutcome
from worker.client.settings import ClientSettings


class ResultObjects:
    """Reads result objects one at a time, or many at once on ``storage_threads`` threads."""

    def __init__(self, settings: ClientSettings, connections: Connections) -> None:
        self._settings = settings
        self._connections = connections

    def fetch(self, job_id: str) -> dict[str, Any] | None:
        """The job's result object (parsed JSON), or None when it has none yet."""
        blob = (
            self._connections.storage()
            .bucket(self._settings.results_bucket)
            .blob(self._settings.result_object(job_id))
        )
        try:
            raw = blob.download_as_bytes()
        except gexc.NotFound:
            return None
        document: dict[str, Any] = json.loads(raw)
        return document

    def outcome(self, job_id: str) -> JobOutcome:
        """The outcome recorded in the job's result object; status ``pending`` when there is none."""
        document = self.fetch(job_id)
        if document is None:
            return JobOutcome(job_id, STATUS_PENDING)
        outcome = outcome_from_result(document, self._settings.result_uri(job_id))
        return outcome if outcome.job_id == job_id else JobOutcome(job_id, outcome.status, outcome.result_uri)

    def answered(self, job_ids: Sequence[str]) -> dict[str, JobOutcome]:
        """The outcomes of those ``job_ids`` that have a result object (one GET each, in parallel)."""
        if not job_ids:
            return {}
        self._connections.storage()  # created once, before the threads share it
        with ThreadPoolExecutor(self._settings.storage_threads) as pool:
            outcomes = list(pool.map(self.outcome, job_ids))
        return {outcome.job_id: outcome for outcome in outcomes if outcome.answered}
