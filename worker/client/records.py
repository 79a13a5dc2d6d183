"""The immutable records the SDK takes and gives: job requests, outcomes, receipts, dead letters, replays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.shared import contracts

STATUS_PENDING = "pending"  # not answered (yet): no notification and no result object
ANSWERED_STATUSES = (contracts.STATUS_SUCCEEDED, contracts.STATUS_FAILED, contracts.STATUS_EXPIRED)


@dataclass(frozen=True)
class JobRequest:
    """One job to submit. ``input`` is a ``gs://`` URI or a local file, uploaded to the inputs bucket.

    ``pages`` names the 1-based pages of the input's document to analyse (None: every page; a job of
    ``schema_version`` 2 only). ``schema_version`` None publishes the newest version the client speaks
    (``contracts.LATEST_SCHEMA_VERSION``); 1 is for fleets whose workers predate pages.
    """

    job_id: str
    input: str
    priority: str = contracts.BATCH
    analyses: tuple[str, ...] | None = None
    deadline: str | None = None
    params: Mapping[str, Any] | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    pages: tuple[int, ...] | None = None
    schema_version: int | None = None
    origin: str = ""  # where the request came from ("jobs.jsonl:12"), for error messages
    # False for ids generated on submit: such a job cannot have a result yet, so submit skips the lookup.
    may_be_answered: bool = True

    @property
    def is_remote(self) -> bool:
        """True when ``input`` is already in GCS (nothing to upload)."""
        return self.input.startswith("gs://")

    def where(self) -> str:
        """Where the request came from, for error messages."""
        return self.origin or f"job {self.job_id!r}"


@dataclass(frozen=True)
class JobIdentity:
    """What decides one job's answer, as the worker fingerprints it: does a stored result answer this job?

    ``request`` is ``contracts.request_fingerprint`` of the job as the worker parses it (``request_v1``:
    under the recipe before, which results and notifications of workers not yet upgraded carry);
    ``input_sha256`` is the digest of a local input's bytes (None for a ``gs://`` input the client did not
    upload). A job id is the caller's choice, so a result at its path may answer another job (another
    input, options or publisher): the client reports a stored result only when it answers this job.
    """

    request: str
    input_sha256: str | None = None
    request_v1: str | None = None

    def answered_by(self, document: dict[str, Any]) -> bool:
        """True when the stored result ``document`` answers this job (the worker's own check)."""
        return contracts.answers_same_job(
            document, self.request, self.input_sha256, request_v1=self.request_v1
        )

    def named_by(self, fingerprint: str) -> bool:
        """True when a notification's request ``fingerprint`` names this job (under either recipe)."""
        return fingerprint in (self.request, self.request_v1)


@dataclass(frozen=True)
class JobOutcome:
    """What is known about one job: its status, where its result is, and the error when it failed."""

    job_id: str
    status: str
    result_uri: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: The request fingerprint a notification says it answers (None from result objects and older
    #: workers); not part of equality, it only tells a stale notification from this job's answer.
    fingerprint: str | None = field(default=None, compare=False)

    @property
    def answered(self) -> bool:
        """The job has its final answer (succeeded, failed or expired)."""
        return self.status in ANSWERED_STATUSES

    @property
    def succeeded(self) -> bool:
        """The job's answer is a success."""
        return self.status == contracts.STATUS_SUCCEEDED

    def to_json(self) -> dict[str, Any]:
        """The shape of a notification: ``job_id``, ``status``, ``result_uri``, ``error {code, message}``."""
        error = None if self.error_code is None else {"code": self.error_code, "message": self.error_message}
        return {"job_id": self.job_id, "status": self.status, "result_uri": self.result_uri, "error": error}


@dataclass(frozen=True)
class SubmitReceipt:
    """What ``submit`` did: job ids published, jobs already answered (not published again), uploads."""

    client_id: str
    job_ids: tuple[str, ...]
    published: tuple[str, ...]
    already_answered: dict[str, JobOutcome]
    uploaded_objects: int
    reused_objects: int


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered job message held on the hold subscription."""

    message_id: str
    job_id: str | None
    publish_time: str
    delivery_attempts: int | None
    attributes: dict[str, str]
    data: bytes

    def to_json(self) -> dict[str, Any]:
        """Everything but the message body, for ``fleet dlq list --json``."""
        return {
            "message_id": self.message_id,
            "job_id": self.job_id,
            "publish_time": self.publish_time,
            "delivery_attempts": self.delivery_attempts,
            "attributes": self.attributes,
        }


@dataclass(frozen=True)
class Replay:
    """One replayed dead letter: results are write-once, so the job runs again under a new job id."""

    message_id: str
    original_job_id: str | None
    job_id: str | None
