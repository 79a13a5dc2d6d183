"""The client SDK: submit jobs, follow their results, read result objects, inspect the dead-letter hold.

The common paths are one call each::

    with FleetClient.from_env() as client:                     # opens this client's results subscription
        receipt = client.submit([JobRequest("drawing-1", "drawings/a.png")])   # uploads, then publishes
        outcomes = client.wait(receipt.job_ids, timeout_s=300)  # {job_id: JobOutcome}

Three rules shape the client:

* **Validate everything, then publish.** ``submit`` turns every request into its final message (local files
  hashed, job bodies checked by ``worker.shared.contracts`` — the worker's own parser, so client and worker
  cannot disagree) before the first upload or publish. Bad input raises ``ClientInputInvalid`` naming each
  file and line; a publish failure part-way raises ``PublishIncomplete`` naming exactly which job ids
  went out.
* **Only this client's results.** Each job carries a ``client_id`` attribute that the worker echoes on its
  notification; the client reads a subscription on the results topic filtered on that attribute, created
  before its first publish (so no notification can be missed) and deleted on exit when ephemeral.
* **The result object is the truth.** Notifications are a fast path. A job whose result object exists is
  answered, so ``wait`` sweeps GCS for jobs it has no notification for (published before the subscription
  existed, or by another process) and re-submitting a job id that is already answered reports the existing
  result instead of publishing again (results are write-once: a re-run needs a new job id).
* **Only results that answer this job.** Job ids are the caller's choice, so the result under an id may
  answer another job. The client takes a stored result for a job it submits only when the result's
  fingerprint (the worker's ``contracts.request_fingerprint`` and input digest) matches; otherwise the job
  is published and answered ``JOB_ID_CONFLICT`` by the worker. ``ClientSettings.namespace``
  (``FLEET_NAMESPACE``) scopes result paths so that two clients' job ids never meet.

This module is the facade: ``FleetClient`` wires the parts below and every public name of the client is
importable from here. One concern per module: ``settings`` (environment, ``.devstack/env``), ``records``,
``ids``, ``manifest`` and ``targets`` (requests), ``prepare`` (validated messages), ``uploads``,
``publishing``, ``subscription``, ``result_objects``, ``outcomes`` and ``answers`` (results),
``dead_letters``, ``connections`` and ``ports`` (the Google clients).
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from worker.client.answers import Answers, OutcomeCallback
from worker.client.connections import Connections
from worker.client.dead_letters import (
    DEAD_LETTER_ATTRIBUTE_PREFIX,
    REPLAY_OF_ATTRIBUTE,
    DeadLetterHold,
)
from worker.client.ids import (
    CLIENT_ID_ATTRIBUTE,
    check_client_id,
    new_client_id,
    new_job_id,
    replay_job_id,
)
from worker.client.manifest import MANIFEST_KEYS, MANIFEST_SUFFIXES, read_manifest
from worker.client.outcomes import outcome_from_notification, outcome_from_result
from worker.client.ports import Publisher, Storage, Subscriber
from worker.client.prepare import (
    PreparedJob,
    Upload,
    check_job_message,
    prepare_jobs,
    with_job_options,
)
from worker.client.publishing import JobPublisher
from worker.client.records import (
    ANSWERED_STATUSES,
    STATUS_PENDING,
    DeadLetter,
    JobIdentity,
    JobOutcome,
    JobRequest,
    Replay,
    SubmitReceipt,
)
from worker.client.result_objects import ResultObjects
from worker.client.result_records import JobResult, MultiPageResult, ResultPage, read_result
from worker.client.settings import ClientSettings, apply_devstack_env, find_devstack_env
from worker.client.subscription import ResultsSubscription
from worker.client.targets import requests_from_targets
from worker.client.uploads import InputUploader, UploadCallback


class FleetClient:
    """Submit jobs and follow this client's results through its own filtered results subscription.

    A client id given by the caller names a durable subscription (kept on ``close``, so ``fleet results``
    can read notifications later); without one the client is ephemeral and deletes its subscription on
    exit. Subscriptions carry an expiration policy so one left behind by a crash is collected by Pub/Sub.

    The parts are attributes, for a caller that needs one step alone: ``connections`` (the Google clients),
    ``subscription``, ``uploader``, ``publisher``, ``result_objects``, ``answers``, ``hold``.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        client_id: str | None = None,
        ephemeral: bool | None = None,
        publisher: Publisher | None = None,
        subscriber: Subscriber | None = None,
        storage_client: Storage | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = check_client_id(client_id) if client_id else new_client_id()
        self.ephemeral = (client_id is None) if ephemeral is None else ephemeral
        self.connections = Connections(
            settings.project, publisher=publisher, subscriber=subscriber, storage_client=storage_client
        )
        self.subscription = ResultsSubscription(
            settings, self.connections, self.client_id, ephemeral=self.ephemeral
        )
        self.uploader = InputUploader(settings, self.connections)
        self.publisher = JobPublisher(settings, self.connections)
        self.result_objects = ResultObjects(settings, self.connections)
        self.answers = Answers(
            self.subscription,
            self.result_objects,
            self.publisher.published_ids,
            self.publisher.message_ids,
        )
        self.hold = DeadLetterHold(settings, self.connections, self.result_objects)
        self._opened = False
        self._closed = False

    @classmethod
    def from_env(
        cls,
        *,
        project: str | None = None,
        namespace: str | None = None,
        client_id: str | None = None,
        ephemeral: bool | None = None,
    ) -> FleetClient:
        """Settings from the environment (``.devstack/env`` fills what is missing); clients from ADC."""
        apply_devstack_env()
        settings = ClientSettings.from_env(project=project, namespace=namespace)
        return cls(settings, client_id=client_id, ephemeral=ephemeral)

    # -- lifecycle --

    @property
    def subscription_id(self) -> str:
        """``<results topic>-client-<client id>``."""
        return self.subscription.id

    @property
    def subscription_path(self) -> str:
        """The results subscription's full resource name."""
        return self.subscription.path

    def open(self) -> Self:
        """Create (or reuse) this client's filtered results subscription; idempotent."""
        if self._closed:
            raise RuntimeError("client is closed")
        if not self._opened:
            self.subscription.create()
            self._opened = True
        return self

    def close(self) -> None:
        """Delete the subscription when ephemeral; stop the clients this object created."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            self.subscription.delete_if_ephemeral()
        self.connections.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- submit --

    def submit(
        self,
        requests: Sequence[JobRequest],
        *,
        pages: Sequence[int] | None = None,
        schema_version: int | None = None,
        on_upload: UploadCallback | None = None,
    ) -> SubmitReceipt:
        """Validate every request, upload local inputs, skip jobs already answered, publish the rest.

        ``pages`` (the 1-based pages of each input's document to analyse, e.g. ``[1, 3]``) and
        ``schema_version`` apply to the requests that do not set their own. Jobs are published as
        ``schema_version`` 2 (``contracts.LATEST_SCHEMA_VERSION``) unless 1 is asked for, for workers that
        predate pages; ``pages`` with 1, or pages that are not unique numbers from 1 (at most
        ``contracts.MAX_PAGES_PER_JOB``, INVALID_PAGES), raise ``ClientInputInvalid`` before anything is
        published.

        A job whose id the caller chose (``may_be_answered``) has its result object looked up first (one GET
        per job): a job id whose result answers this very job (same input, analyses, params and namespace:
        the worker's fingerprint) is reported in ``already_answered``, not published. A result that answers
        another job under the same id is not this job's answer: the job is published, and the worker
        answers it ``failed`` / ``JOB_ID_CONFLICT`` (choose a new job id, or a namespace of your own).
        """
        requests = with_job_options(requests, pages=pages, schema_version=schema_version)
        prepared = prepare_jobs(requests, settings=self.settings, client_id=self.client_id)
        self.open()  # before any publish, so no notification for these jobs can be missed
        self.answers.expect(prepared)
        answered = self.answers.lookup([r.job_id for r in requests if r.may_be_answered])
        to_publish = [job for job in prepared if job.job_id not in answered]
        uploaded, reused = self.uploader.upload(to_publish, on_upload)
        published = self.publisher.publish(to_publish)
        return SubmitReceipt(
            client_id=self.client_id,
            job_ids=tuple(job.job_id for job in prepared),
            published=published,
            already_answered=answered,
            uploaded_objects=uploaded,
            reused_objects=reused,
        )

    # -- results --

    def fetch_result(self, job_id: str) -> dict[str, Any] | None:
        """The object at the job's result path in this client's namespace, or None when there is none yet.

        It is what is stored under the job id, whichever job it answers; ``wait`` checks that for the jobs
        this client submitted.
        """
        return self.result_objects.fetch(job_id)

    def result(self, job_id: str) -> JobResult | None:
        """The job's result object, read: outcome, ``page_count`` and one ``ResultPage`` per analysed page.

        None when there is none yet. Like ``fetch_result`` it is what is stored under the job id. A
        result of a document of more than one page has no single ``outputs`` (reading it raises
        ``MultiPageResult``): its answer is ``pages``.
        """
        return self.result_objects.result(job_id)

    def wait(
        self, job_ids: Iterable[str], timeout_s: float, *, on_answer: OutcomeCallback | None = None
    ) -> dict[str, JobOutcome]:
        """Block until every job is answered or ``timeout_s`` passes; unanswered jobs come back ``pending``.

        Answers come from this client's notifications and, for jobs without one, from their result objects:
        at the start for jobs not published by this open client, then whenever answers stop arriving for a
        while — so a job answered before the wait began (or whose notification went elsewhere) never hangs.
        For a job this client submitted, a result object that answers another job under the same id does
        not count: its answer is the worker's JOB_ID_CONFLICT (notification or rejected-result object).
        """
        self.open()
        return self.answers.wait(job_ids, timeout_s, on_answer=on_answer)

    def results(
        self, *, idle_timeout_s: float | None = None, timeout_s: float | None = None
    ) -> Generator[JobOutcome, None, None]:
        """Notifications for this client's jobs, as they arrive, each once.

        A notification is acked only once the consumer has taken it; if the consumer stops early, the rest
        of the pulled batch is handed back (so ``fleet results --limit`` loses nothing). Stops after
        ``idle_timeout_s`` without a notification or ``timeout_s`` in all; never when both are None.
        """
        self.open()
        return self.answers.stream(idle_timeout_s=idle_timeout_s, timeout_s=timeout_s)

    # -- dead letters --

    def dead_letters(self, *, max_messages: int = 100) -> list[DeadLetter]:
        """Peek at the dead-letter hold subscription: pull, then hand every message straight back."""
        return self.hold.peek(max_messages=max_messages)

    def replay_dead_letters(
        self, job_ids: Collection[str] | None = None, *, max_messages: int = 100
    ) -> list[Replay]:
        """Republish held dead letters to the jobs topic (all, or those whose job id is listed) and ack them.

        The dead-letter handler already wrote a DEAD_LETTERED result for each job, and results are
        write-once, so a replay runs under ``<job_id>.replay-N`` (attribute ``replay_of`` names the original);
        client attributes are kept, so the original client's subscription gets the new answer.
        """
        return self.hold.replay(job_ids, max_messages=max_messages)


__all__ = [
    "ANSWERED_STATUSES",
    "CLIENT_ID_ATTRIBUTE",
    "DEAD_LETTER_ATTRIBUTE_PREFIX",
    "MANIFEST_KEYS",
    "MANIFEST_SUFFIXES",
    "REPLAY_OF_ATTRIBUTE",
    "STATUS_PENDING",
    "ClientSettings",
    "DeadLetter",
    "FleetClient",
    "JobIdentity",
    "JobOutcome",
    "JobRequest",
    "JobResult",
    "MultiPageResult",
    "OutcomeCallback",
    "PreparedJob",
    "Replay",
    "ResultPage",
    "SubmitReceipt",
    "Upload",
    "UploadCallback",
    "apply_devstack_env",
    "check_client_id",
    "check_job_message",
    "find_devstack_env",
    "new_client_id",
    "new_job_id",
    "outcome_from_notification",
    "outcome_from_result",
    "prepare_jobs",
    "read_manifest",
    "read_result",
    "replay_job_id",
    "requests_from_targets",
    "with_job_options",
]
