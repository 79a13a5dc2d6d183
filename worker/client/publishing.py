"""Prepared jobs -> the jobs topic: one future per job, all resolved at the end, failures named exactly."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from worker.client.connections import Connections
from worker.client.prepare import PreparedJob
from worker.client.settings import ClientSettings
from worker.shared import contracts
from worker.shared.errors import PublishIncomplete


class JobPublisher:
    """Publishes prepared jobs, each lane on its own publisher; remembers what it published."""

    def __init__(self, settings: ClientSettings, connections: Connections) -> None:
        self._settings = settings
        self._connections = connections
        self.published_ids: set[str] = set()  # every job id this client has published
        # job id -> Pub/Sub message id of its latest publish: a JOB_ID_CONFLICT answer is stored under it
        self.message_ids: dict[str, str] = {}

    def publish(self, jobs: Sequence[PreparedJob]) -> tuple[str, ...]:
        """Publish every job; raises ``PublishIncomplete`` naming the published and unpublished ids."""
        if not jobs:
            return ()
        futures, unpublished, first_error = self._send(jobs)
        published: list[str] = []
        for job_id, future in futures:
            try:
                message_id = future.result(timeout=self._settings.publish_timeout_s)
            except Exception as exc:
                first_error = first_error or exc
                unpublished.append(job_id)
            else:
                published.append(job_id)
                self.published_ids.add(job_id)
                self.message_ids[job_id] = str(message_id)
        if unpublished:
            raise PublishIncomplete(
                f"published {len(published)} of {len(jobs)} jobs; {len(unpublished)} were not published "
                f"(first error: {first_error})",
                published=tuple(published),
                unpublished=tuple(unpublished),
            )
        return tuple(published)

    def _send(
        self, jobs: Sequence[PreparedJob]
    ) -> tuple[list[tuple[str, Future[str]]], list[str], BaseException | None]:
        """Hand every job to its publisher: (futures, ids never handed over, why they were not)."""
        topic = self._settings.topic_path(self._settings.jobs_topic)
        futures: list[tuple[str, Future[str]]] = []
        for index, job in enumerate(jobs):
            interactive = job.attributes.get("priority") == contracts.INTERACTIVE
            try:
                publisher = self._connections.publisher(interactive=interactive)
                futures.append((job.job_id, publisher.publish(topic, job.data, **job.attributes)))
            except Exception as exc:  # the publisher refused outright (stopped, flow control error)
                return futures, [j.job_id for j in jobs[index:]], exc
        return futures, [], None
