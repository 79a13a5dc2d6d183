"""The client SDK: submit jobs, follow their results, read result objects, inspect the dead-letter hold.

The common paths are one call each::

    with FleetClient.from_env() as client:                     # opens this client's results subscription
        receipt = client.submit([JobRequest("drawing-1", "drawings/a.png")])   # uploads, then publishes
        outcomes = client.wait(receipt.job_ids, timeout_s=300)  # {job_id: JobOutcome}

Three rules shape this module:

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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import time
import uuid
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Iterable,
    Mapping,
    MutableMapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1, storage  # type: ignore[attr-defined]  # storage has no py.typed
from google.cloud.pubsub_v1 import types as pubsub_types

from worker.shared import contracts
from worker.shared.errors import ClientInputInvalid, PublishIncomplete
from worker.shared.resources import FleetResources, load_resources

log = logging.getLogger(__name__)

STATUS_PENDING = "pending"  # not answered (yet): no notification and no result object
ANSWERED_STATUSES = (contracts.STATUS_SUCCEEDED, contracts.STATUS_FAILED, contracts.STATUS_EXPIRED)
CLIENT_ID_ATTRIBUTE = "client_id"
REPLAY_OF_ATTRIBUTE = "replay_of"
# Attributes Pub/Sub adds to a dead-lettered message; a replay must not carry them back to the jobs topic.
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"
MANIFEST_SUFFIXES = (".jsonl", ".ndjson")
MANIFEST_KEYS = frozenset(
    {"job_id", "input", "input_uri", "priority", "analyses", "deadline", "params", "attributes"}
)
MAX_ATTRIBUTE_KEY_BYTES = 256  # Pub/Sub limits
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_REPORTED_PROBLEMS = 20
DEVSTACK_ENV_RELATIVE = Path(".devstack") / "env"

_CLIENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SAFE_SUFFIX_RE = re.compile(r"\.[a-z0-9]{1,10}")


# --- environment ----------------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``export NAME=VALUE`` / ``NAME=VALUE`` lines (shell quoting allowed); other lines are ignored."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            continue
        parts = shlex.split(value) if value else [""]
        values[name] = parts[0] if parts else ""
    return values


def find_devstack_env(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """``FLEET_DEVSTACK_ENV``, else ``.devstack/env`` in the current directory or its nearest parent."""
    env = os.environ if environ is None else environ
    explicit = env.get("FLEET_DEVSTACK_ENV")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEVSTACK_ENV_RELATIVE
        if candidate.is_file():
            return candidate
    return None


def apply_devstack_env(
    environ: MutableMapping[str, str] | None = None, start: Path | None = None
) -> Path | None:
    """Fill variables missing from the environment from ``.devstack/env``; returns the file used, if any.

    Variables already set win, so a real project (``GOOGLE_CLOUD_PROJECT`` and ADC) is never redirected to a
    local emulator by a stale file. The google clients read the emulator hosts from the process environment,
    which is why this writes there rather than into a settings object.
    """
    env = os.environ if environ is None else environ
    path = find_devstack_env(start, env)
    if path is None:
        return None
    for name, value in read_env_file(path).items():
        env.setdefault(name, value)
    return path


@dataclass(frozen=True)
class ClientSettings:
    """Names the client needs; ``from_env`` reads the same variables as the worker and the local stack."""

    project: str
    jobs_topic: str
    results_topic: str
    dead_letter_hold_subscription: str
    input_bucket: str
    results_bucket: str
    results_prefix: str = "results/"
    upload_prefix: str = "uploads/"
    publish_timeout_s: float = 120.0
    storage_threads: int = 8

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        project: str | None = None,
        resources: FleetResources | None = None,
    ) -> ClientSettings:
        """``--project`` > ``GOOGLE_CLOUD_PROJECT``; every other name defaults from terraform/fleet.json."""
        env = os.environ if environ is None else environ
        res = resources or load_resources()
        project = project or env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT")
        if not project:
            raise ClientInputInvalid("no project: set GOOGLE_CLOUD_PROJECT or pass --project")
        return cls(
            project=project,
            jobs_topic=env.get("FLEET_JOBS_TOPIC") or res.full(res.jobs_topic),
            results_topic=env.get("FLEET_RESULTS_TOPIC") or res.full(res.results_topic),
            dead_letter_hold_subscription=env.get("FLEET_DEAD_LETTER_SUBSCRIPTION")
            or res.full(res.dead_letter_subscription),
            input_bucket=env.get("FLEET_INPUT_BUCKET") or res.inputs_bucket(project),
            results_bucket=env.get("FLEET_RESULTS_BUCKET") or res.results_bucket(project),
            results_prefix=res.results_prefix,
        )

    def result_object(self, job_id: str) -> str:
        return contracts.result_object_name(self.results_prefix, job_id, "")

    def result_uri(self, job_id: str) -> str:
        return f"gs://{self.results_bucket}/{self.result_object(job_id)}"


# --- records --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRequest:
    """One job to submit. ``input`` is a ``gs://`` URI or a local file, uploaded to the inputs bucket."""

    job_id: str
    input: str
    priority: str = contracts.BATCH
    analyses: tuple[str, ...] | None = None
    deadline: str | None = None
    params: Mapping[str, Any] | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    origin: str = ""  # where the request came from ("jobs.jsonl:12"), for error messages
    # False for ids generated on submit: such a job cannot have a result yet, so submit skips the lookup.
    may_be_answered: bool = True

    @property
    def is_remote(self) -> bool:
        return self.input.startswith("gs://")

    def where(self) -> str:
        return self.origin or f"job {self.job_id!r}"


@dataclass(frozen=True)
class Upload:
    """A local file and the content-addressed object it becomes (re-runs never upload it twice)."""

    path: Path
    object_name: str
    size_bytes: int


@dataclass(frozen=True)
class PreparedJob:
    """A validated job message, ready to publish once its upload (if any) is done."""

    job_id: str
    data: bytes
    attributes: dict[str, str]
    upload: Upload | None


@dataclass(frozen=True)
class JobOutcome:
    """What is known about one job: its status, where its result is, and the error when it failed."""

    job_id: str
    status: str
    result_uri: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def answered(self) -> bool:
        return self.status in ANSWERED_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == contracts.STATUS_SUCCEEDED

    def to_json(self) -> dict[str, Any]:
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


# --- pure parts: requests, manifests, validation --------------------------------------------------------


def new_job_id(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def new_client_id() -> str:
    return f"c-{uuid.uuid4().hex[:16]}"


def check_client_id(client_id: str) -> str:
    """Client ids become part of a subscription name: lowercase letters, digits and '-', ≤ 63 chars."""
    if not _CLIENT_ID_RE.fullmatch(client_id):
        raise ClientInputInvalid(f"client id {client_id!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    return client_id


def read_manifest(path: Path, *, default_priority: str = contracts.BATCH) -> list[JobRequest]:
    """Parse a JSONL manifest: one job object per line, blank lines ignored.

    Keys: ``job_id`` (required), exactly one of ``input`` (a local file, relative to the manifest) or
    ``input_uri`` (``gs://``), and optionally ``priority``, ``analyses``, ``deadline``, ``params``,
    ``attributes``. Every problem is reported with ``file:line``; field values are checked later by
    ``prepare_jobs`` with the worker's own parser.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ClientInputInvalid(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc
    requests: list[JobRequest] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{where}: line is not UTF-8")
            continue
        if not line.strip():
            continue
        try:
            request = _manifest_request(line, where, path.parent, default_priority)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if request.job_id in first_line:
            problems.append(
                f"{where}: duplicate job_id {request.job_id!r} (first on line {first_line[request.job_id]})"
            )
            continue
        first_line[request.job_id] = number
        requests.append(request)
    if not problems and not requests:
        problems.append(f"{path}: manifest has no jobs")
    if problems:
        raise _input_error(problems)
    return requests


def _manifest_request(line: str, where: str, base: Path, default_priority: str) -> JobRequest:
    """One manifest line -> a request; raises ValueError with a message that fits after ``file:line:``."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(entry, dict):
        raise ValueError("a manifest line must be a JSON object")
    unknown = sorted(set(entry) - MANIFEST_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(MANIFEST_KEYS))}")
    job_id = entry.get("job_id")
    if job_id is None:
        raise ValueError("job_id is required")
    if not contracts.valid_job_id(job_id):
        raise ValueError(f"job_id {str(job_id)[:40]!r} must match [A-Za-z0-9._-]{{1,128}}, not '.' or '..'")
    has_local, has_uri = "input" in entry, "input_uri" in entry
    if has_local == has_uri:
        raise ValueError("give exactly one of 'input' (a local file) or 'input_uri' (gs://bucket/object)")
    source = entry["input"] if has_local else entry["input_uri"]
    if not isinstance(source, str) or not source:
        raise ValueError("'input' / 'input_uri' must be a non-empty string")
    if has_uri and not source.startswith("gs://"):
        raise ValueError(f"input_uri {source[:60]!r} is not gs://bucket/object")
    if has_local and not source.startswith("gs://"):
        source = str(base / source)
    analyses = entry.get("analyses")
    if analyses is not None and not (
        isinstance(analyses, list) and all(isinstance(a, str) for a in analyses)
    ):
        raise ValueError("analyses must be a list of strings")
    attributes = entry.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise ValueError("attributes must be an object of strings")
    return JobRequest(
        job_id=job_id,
        input=source,
        priority=entry.get("priority", default_priority),
        analyses=None if analyses is None else tuple(analyses),
        deadline=entry.get("deadline"),
        params=entry.get("params"),
        attributes=attributes,
        origin=where,
    )


def requests_from_targets(
    targets: Sequence[str],
    *,
    priority: str = contracts.BATCH,
    analyses: tuple[str, ...] | None = None,
    job_id_prefix: str = "job",
) -> list[JobRequest]:
    """CLI targets -> requests: a manifest (``*.jsonl``), a ``gs://`` URI, a file, or a directory (recursive).

    Jobs from files and URIs get fresh job ids (each submit is a new job); manifest jobs keep theirs.
    """
    requests: list[JobRequest] = []
    problems: list[str] = []
    for target in targets:
        if target.startswith("gs://"):
            requests.append(_fresh(job_id_prefix, target, priority, analyses, origin=f"argument {target}"))
            continue
        path = Path(target)
        if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            try:
                requests.extend(read_manifest(path, default_priority=priority))
            except ClientInputInvalid as exc:
                problems.extend(exc.problems)
        elif path.is_file():
            requests.append(_fresh(job_id_prefix, str(path), priority, analyses, origin=str(path)))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
            if not files:
                problems.append(f"{path}: directory has no files")
            requests.extend(_fresh(job_id_prefix, str(f), priority, analyses, origin=str(f)) for f in files)
        else:
            problems.append(f"{path}: no such file or directory")
    if problems:
        raise _input_error(problems)
    seen: dict[str, str] = {}
    for request in requests:
        if request.job_id in seen:
            problems.append(
                f"{request.where()}: duplicate job_id {request.job_id!r} (also {seen[request.job_id]})"
            )
        seen.setdefault(request.job_id, request.where())
    if problems:
        raise _input_error(problems)
    return requests


def _fresh(
    prefix: str, source: str, priority: str, analyses: tuple[str, ...] | None, *, origin: str
) -> JobRequest:
    return JobRequest(new_job_id(prefix), source, priority, analyses, origin=origin, may_be_answered=False)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _input_error(problems: Sequence[str]) -> ClientInputInvalid:
    shown = list(problems[:MAX_REPORTED_PROBLEMS])
    if len(problems) > MAX_REPORTED_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more")
    head = "nothing was published: " + ("1 problem" if len(problems) == 1 else f"{len(problems)} problems")
    return ClientInputInvalid(head + "\n  " + "\n  ".join(shown), problems=tuple(problems))


class _FileHasher:
    """sha256 of local files, each read once per run; also proves every file is readable before publishing."""

    def __init__(self, upload_prefix: str) -> None:
        self._prefix = upload_prefix
        self._cache: dict[Path, Upload] = {}

    def upload_for(self, path: Path) -> Upload:
        resolved = path.resolve()
        cached = self._cache.get(resolved)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        size = 0
        with resolved.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        suffix = resolved.suffix.lower()
        suffix = suffix if _SAFE_SUFFIX_RE.fullmatch(suffix) else ""
        upload = Upload(resolved, f"{self._prefix}sha256/{digest.hexdigest()}{suffix}", size)
        self._cache[resolved] = upload
        return upload


def prepare_jobs(
    requests: Sequence[JobRequest], *, settings: ClientSettings, client_id: str
) -> list[PreparedJob]:
    """Build and validate every message (no network I/O); raises ClientInputInvalid listing every problem."""
    hasher = _FileHasher(settings.upload_prefix)
    prepared: list[PreparedJob] = []
    problems: list[str] = []
    seen: set[str] = set()
    for request in requests:
        try:
            if request.job_id in seen:
                raise ValueError(f"duplicate job_id {request.job_id!r}")
            seen.add(request.job_id)
            prepared.append(_prepare_one(request, settings, client_id, hasher))
        except ValueError as exc:
            problems.append(f"{request.where()}: {exc}")
    if problems:
        raise _input_error(problems)
    return prepared


def _prepare_one(
    request: JobRequest, settings: ClientSettings, client_id: str, hasher: _FileHasher
) -> PreparedJob:
    upload: Upload | None = None
    if request.is_remote:
        input_uri = request.input
    else:
        path = Path(request.input)
        if not path.exists():
            raise ValueError(f"input file {request.input} does not exist")
        if not path.is_file():
            raise ValueError(f"input {request.input} is not a regular file")
        try:
            upload = hasher.upload_for(path)
        except OSError as exc:
            raise ValueError(f"cannot read input file {request.input}: {exc.strerror or exc}") from exc
        input_uri = f"gs://{settings.input_bucket}/{upload.object_name}"
    body: dict[str, Any] = {
        "schema_version": contracts.SCHEMA_VERSION,
        "job_id": request.job_id,
        "input_uri": input_uri,
        "priority": request.priority,
    }
    if request.analyses is not None:
        body["analyses"] = list(request.analyses)
    if request.deadline is not None:
        body["deadline"] = request.deadline
    if request.params is not None:
        body["params"] = request.params  # the parser says what is wrong with a non-object
    attributes = _attributes(request, client_id)
    data = contracts.encode(body)
    check_job_message(data, attributes)
    return PreparedJob(request.job_id, data, attributes, upload)


def _attributes(request: JobRequest, client_id: str) -> dict[str, str]:
    reserved = contracts.RESERVED_ATTRIBUTES | {CLIENT_ID_ATTRIBUTE}
    clash = sorted(set(request.attributes) & reserved)
    if clash:
        raise ValueError(f"attribute(s) {', '.join(clash)} are set by the client itself")
    if len(request.attributes) > contracts.MAX_CLIENT_ATTRIBUTES - 1:
        raise ValueError(f"at most {contracts.MAX_CLIENT_ATTRIBUTES - 1} attributes besides client_id")
    for key, value in request.attributes.items():
        if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES or key.startswith("goog"):
            raise ValueError(f"attribute name {key[:40]!r} is empty, too long or reserved (goog*)")
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise ValueError(f"attribute {key!r} is longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes")
    return {
        **request.attributes,
        "priority": request.priority if isinstance(request.priority, str) else "",
        "job_id": request.job_id,
        CLIENT_ID_ATTRIBUTE: client_id,
    }


def check_job_message(data: bytes, attributes: Mapping[str, str]) -> None:
    """Reject a job the worker would reject, using the worker's own parser (raises ValueError).

    The client does not know the worker's allowed input buckets, so the job's own bucket is allowed here;
    a bucket outside the worker's list is answered ``INPUT_NOT_ALLOWED`` by the worker.
    """
    body = json.loads(data)
    uri = body.get("input_uri")
    bucket = uri[len("gs://") :].split("/", 1)[0] if isinstance(uri, str) else ""
    delivery = contracts.Delivery(
        ack_id="",
        subscription="",
        message_id="",
        data=data,
        attributes=dict(attributes),
        publish_time=0.0,
        delivery_attempt=1,
        leased_at=0.0,
    )
    parsed = contracts.parse_job(delivery, allowed_buckets=frozenset({bucket}))
    if isinstance(parsed, contracts.Rejection):
        raise ValueError(f"{parsed.error.code}: {parsed.error.message}")


def outcome_from_notification(data: bytes, attributes: Mapping[str, str]) -> JobOutcome | None:
    """A notification -> its outcome; None when it names no usable job (a rejected, id-less message)."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    job_id = body.get("job_id") or attributes.get("job_id")
    status = body.get("status") or attributes.get("status")
    if not isinstance(job_id, str) or status not in ANSWERED_STATUSES:
        return None
    return _outcome(job_id, status, body.get("result_uri"), body.get("error"))


def outcome_from_result(document: Mapping[str, Any], result_uri: str) -> JobOutcome:
    """A parsed result object -> its outcome."""
    job_id = document.get("job_id")
    status = document.get("status")
    return _outcome(
        job_id if isinstance(job_id, str) else "",
        status if status in ANSWERED_STATUSES else contracts.STATUS_FAILED,
        result_uri,
        document.get("error"),
    )


def _outcome(job_id: str, status: str, result_uri: object, error: object) -> JobOutcome:
    code = message = None
    if isinstance(error, dict):
        code = str(error.get("code")) if error.get("code") is not None else None
        message = str(error.get("message")) if error.get("message") is not None else None
    return JobOutcome(job_id, status, result_uri if isinstance(result_uri, str) else None, code, message)


def replay_job_id(job_id: str, attempt: int) -> str:
    """``drawing-7`` -> ``drawing-7.replay-1``; trimmed so the id stays within 128 characters."""
    suffix = f".replay-{attempt}"
    return job_id[: 128 - len(suffix)] + suffix


# --- the client ------------------------------------------------------------------------------------------

UploadCallback = Callable[[int, int], None]  # (inputs in place so far, inputs in all), after each one
OutcomeCallback = Callable[[JobOutcome], None]


class FleetClient:
    """Submit jobs and follow this client's results through its own filtered results subscription.

    A client id given by the caller names a durable subscription (kept on ``close``, so ``fleet results``
    can read notifications later); without one the client is ephemeral and deletes its subscription on
    exit. Subscriptions carry an expiration policy so one left behind by a crash is collected by Pub/Sub.
    """

    PULL_BATCH = 1000
    PULL_TIMEOUT_S = 5.0
    SWEEP_AFTER_QUIET_S = 10.0  # sweep GCS for pending jobs after this long without an answer
    SWEEP_MAX_INTERVAL_S = 60.0
    SUBSCRIPTION_TTL_S = 24 * 3600  # the shortest expiration Pub/Sub accepts
    SUBSCRIPTION_ACK_DEADLINE_S = 60
    BATCH_SETTINGS = pubsub_types.BatchSettings(
        max_messages=1000, max_bytes=4 * 1024 * 1024, max_latency=0.02
    )
    # Interactive jobs are published on a publisher of their own whose window is 1 ms: the 20 ms window
    # that makes bulk submits cheap was half of an interactive job's answer time on the local stack.
    INTERACTIVE_BATCH_SETTINGS = pubsub_types.BatchSettings(
        max_messages=100, max_bytes=4 * 1024 * 1024, max_latency=0.001
    )
    FLOW_CONTROL = pubsub_types.PublishFlowControl(
        message_limit=20_000,
        byte_limit=64 * 1024 * 1024,
        limit_exceeded_behavior=pubsub_types.LimitExceededBehavior.BLOCK,
    )

    def __init__(
        self,
        settings: ClientSettings,
        *,
        client_id: str | None = None,
        ephemeral: bool | None = None,
        publisher: Any = None,
        subscriber: Any = None,
        storage_client: Any = None,
    ) -> None:
        self.settings = settings
        self.client_id = check_client_id(client_id) if client_id else new_client_id()
        self.ephemeral = (client_id is None) if ephemeral is None else ephemeral
        self._owned: list[Any] = []
        self._publisher = publisher
        self._interactive_publisher = publisher  # an injected publisher serves both
        self._subscriber = subscriber
        self._storage = storage_client
        self._opened = False
        self._closed = False
        self._outcomes: dict[str, JobOutcome] = {}  # every answer this client has seen
        self._published_while_open: set[str] = set()

    @classmethod
    def from_env(
        cls, *, project: str | None = None, client_id: str | None = None, ephemeral: bool | None = None
    ) -> FleetClient:
        """Settings from the environment (``.devstack/env`` fills what is missing); clients from ADC."""
        apply_devstack_env()
        return cls(ClientSettings.from_env(project=project), client_id=client_id, ephemeral=ephemeral)

    # -- lifecycle --

    @property
    def subscription_id(self) -> str:
        return f"{self.settings.results_topic}-client-{self.client_id}"

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.settings.project}/subscriptions/{self.subscription_id}"

    def open(self) -> Self:
        """Create (or reuse) this client's filtered results subscription; idempotent."""
        if self._closed:
            raise RuntimeError("client is closed")
        if self._opened:
            return self
        topic = f"projects/{self.settings.project}/topics/{self.settings.results_topic}"
        request = {
            "name": self.subscription_path,
            "topic": topic,
            "filter": f'attributes.{CLIENT_ID_ATTRIBUTE} = "{self.client_id}"',
            "ack_deadline_seconds": self.SUBSCRIPTION_ACK_DEADLINE_S,
            "expiration_policy": {"ttl": {"seconds": self.SUBSCRIPTION_TTL_S}},
        }
        with contextlib.suppress(gexc.AlreadyExists):  # a durable client id reuses its subscription
            self._subscriber_client().create_subscription(request=request)
        self._opened = True
        return self

    def close(self) -> None:
        """Delete the subscription when ephemeral; stop the clients this object created."""
        if self._closed:
            return
        self._closed = True
        if self._opened and self.ephemeral:
            try:
                self._subscriber_client().delete_subscription(
                    request={"subscription": self.subscription_path}
                )
            except gexc.NotFound:
                pass
            except gexc.GoogleAPICallError as exc:  # left for the expiration policy to collect
                log.warning("could not delete subscription %s: %s", self.subscription_path, exc)
        for client in self._owned:
            stop = getattr(client, "stop", None) or getattr(client, "close", None)
            if stop is not None:
                stop()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- submit --

    def submit(
        self, requests: Sequence[JobRequest], *, on_upload: UploadCallback | None = None
    ) -> SubmitReceipt:
        """Validate every request, upload local inputs, skip jobs already answered, publish the rest.

        A job whose id the caller chose (``may_be_answered``) has its result object looked up first (one GET
        per job): a job id that already has a result is reported in ``already_answered``, not published.
        """
        prepared = prepare_jobs(requests, settings=self.settings, client_id=self.client_id)
        self.open()  # before any publish, so no notification for these jobs can be missed
        answered = self._existing_outcomes([r.job_id for r in requests if r.may_be_answered])
        to_publish = [job for job in prepared if job.job_id not in answered]
        uploaded, reused = self._upload_inputs(to_publish, on_upload)
        published = self._publish(to_publish)
        return SubmitReceipt(
            client_id=self.client_id,
            job_ids=tuple(job.job_id for job in prepared),
            published=published,
            already_answered=answered,
            uploaded_objects=uploaded,
            reused_objects=reused,
        )

    def _existing_outcomes(self, job_ids: Sequence[str]) -> dict[str, JobOutcome]:
        found: dict[str, JobOutcome] = {}
        if not job_ids:
            return found
        with ThreadPoolExecutor(self.settings.storage_threads) as pool:
            for outcome in pool.map(self.result_outcome, job_ids):
                if outcome.answered:
                    found[outcome.job_id] = outcome
                    self._outcomes[outcome.job_id] = outcome
        return found

    def _upload_inputs(
        self, jobs: Sequence[PreparedJob], on_upload: UploadCallback | None
    ) -> tuple[int, int]:
        uploads = list(
            {job.upload.object_name: job.upload for job in jobs if job.upload is not None}.values()
        )
        if not uploads:
            return 0, 0
        bucket = self._storage_client().bucket(self.settings.input_bucket)

        def put(upload: Upload) -> bool:
            blob = bucket.blob(upload.object_name)
            if blob.exists():
                return False
            try:
                blob.upload_from_filename(str(upload.path), if_generation_match=0)
            except gexc.PreconditionFailed:  # uploaded by a concurrent run: same name, same bytes
                return False
            return True

        uploaded = reused = 0
        with ThreadPoolExecutor(self.settings.storage_threads) as pool:
            for index, done_now in enumerate(pool.map(put, uploads), start=1):
                uploaded += done_now
                reused += not done_now
                if on_upload is not None:
                    on_upload(index, len(uploads))
        return uploaded, reused

    def _publish(self, jobs: Sequence[PreparedJob]) -> tuple[str, ...]:
        if not jobs:
            return ()
        topic = f"projects/{self.settings.project}/topics/{self.settings.jobs_topic}"
        futures = []
        unpublished: list[str] = []
        first_error: BaseException | None = None
        for index, job in enumerate(jobs):
            try:
                publisher = self._publisher_client(
                    interactive=job.attributes.get("priority") == contracts.INTERACTIVE
                )
                futures.append((job.job_id, publisher.publish(topic, job.data, **job.attributes)))
            except Exception as exc:  # the publisher refused outright (stopped, flow control error)
                first_error = exc
                unpublished.extend(j.job_id for j in jobs[index:])
                break
        published: list[str] = []
        for job_id, future in futures:  # one future per job, all resolved at the end
            try:
                future.result(timeout=self.settings.publish_timeout_s)
            except Exception as exc:
                first_error = first_error or exc
                unpublished.append(job_id)
            else:
                published.append(job_id)
                self._published_while_open.add(job_id)
        if unpublished:
            raise PublishIncomplete(
                f"published {len(published)} of {len(jobs)} jobs; {len(unpublished)} were not published "
                f"(first error: {first_error})",
                published=tuple(published),
                unpublished=tuple(unpublished),
            )
        return tuple(published)

    # -- results --

    def fetch_result(self, job_id: str) -> dict[str, Any] | None:
        """The job's result object (parsed JSON), or None when it has none yet."""
        blob = (
            self._storage_client()
            .bucket(self.settings.results_bucket)
            .blob(self.settings.result_object(job_id))
        )
        try:
            raw = blob.download_as_bytes()
        except gexc.NotFound:
            return None
        document: dict[str, Any] = json.loads(raw)
        return document

    def result_outcome(self, job_id: str) -> JobOutcome:
        """The outcome recorded in the job's result object; status ``pending`` when there is none."""
        document = self.fetch_result(job_id)
        if document is None:
            return JobOutcome(job_id, STATUS_PENDING)
        outcome = outcome_from_result(document, self.settings.result_uri(job_id))
        return outcome if outcome.job_id == job_id else JobOutcome(job_id, outcome.status, outcome.result_uri)

    def wait(
        self, job_ids: Iterable[str], timeout_s: float, *, on_answer: OutcomeCallback | None = None
    ) -> dict[str, JobOutcome]:
        """Block until every job is answered or ``timeout_s`` passes; unanswered jobs come back ``pending``.

        Answers come from this client's notifications and, for jobs without one, from their result objects:
        at the start for jobs not published by this open client, then whenever answers stop arriving for a
        while — so a job answered before the wait began (or whose notification went elsewhere) never hangs.
        """
        self.open()
        order = list(dict.fromkeys(job_ids))
        pending = {job_id for job_id in order if job_id not in self._outcomes}
        deadline = time.monotonic() + timeout_s

        def settle(outcome: JobOutcome) -> None:
            if outcome.job_id in pending:
                pending.discard(outcome.job_id)
                if on_answer is not None:
                    on_answer(outcome)

        for job_id in order:
            if job_id not in pending and on_answer is not None:
                on_answer(self._outcomes[job_id])
        unknown = [job_id for job_id in pending if job_id not in self._published_while_open]
        for outcome in self._sweep(unknown):
            settle(outcome)
        last_answer = time.monotonic()
        quiet_s = self.SWEEP_AFTER_QUIET_S
        while pending and (remaining := deadline - time.monotonic()) > 0:
            answers = self._pull_outcomes(min(remaining, self.PULL_TIMEOUT_S))
            before = len(pending)
            for outcome in answers:
                settle(outcome)
            now = time.monotonic()
            if len(pending) < before:
                last_answer, quiet_s = now, self.SWEEP_AFTER_QUIET_S
            elif pending and now - last_answer >= quiet_s:
                for outcome in self._sweep(sorted(pending)):
                    settle(outcome)
                last_answer, quiet_s = now, min(quiet_s * 2, self.SWEEP_MAX_INTERVAL_S)
        return {job_id: self._outcomes.get(job_id, JobOutcome(job_id, STATUS_PENDING)) for job_id in order}

    def results(
        self, *, idle_timeout_s: float | None = None, timeout_s: float | None = None
    ) -> Generator[JobOutcome, None, None]:
        """Notifications for this client's jobs, as they arrive, each once.

        A notification is acked only once the consumer has taken it; if the consumer stops early, the rest
        of the pulled batch is handed back (so ``fleet results --limit`` loses nothing). Stops after
        ``idle_timeout_s`` without a notification or ``timeout_s`` in all; never when both are None.
        """
        self.open()
        start = last = time.monotonic()
        while True:
            now = time.monotonic()
            if timeout_s is not None and now - start >= timeout_s:
                return
            if idle_timeout_s is not None and now - last >= idle_timeout_s:
                return
            # Always the full pull wait, even near the idle limit (overshooting it by up to PULL_TIMEOUT_S):
            # a pull the client abandons early can still lease a notification on the server, which would
            # then reach this durable subscription again only after the ack deadline.
            batch = self._pull(self.PULL_TIMEOUT_S)
            if batch:
                last = time.monotonic()
            taken: list[str] = []
            try:
                for ack_id, outcome in batch:
                    taken.append(ack_id)  # before the yield: a consumer that stops here has taken it
                    if outcome is not None and outcome.job_id not in self._outcomes:
                        self._outcomes[outcome.job_id] = outcome
                        yield outcome
            finally:
                self._settle(taken, [ack_id for ack_id, _ in batch[len(taken) :]])

    def _pull_outcomes(self, timeout_s: float) -> list[JobOutcome]:
        """One pull from this client's subscription; every message is recorded and acked at once."""
        batch = self._pull(timeout_s)
        fresh: list[JobOutcome] = []
        for _, outcome in batch:
            if outcome is not None:
                if outcome.job_id not in self._outcomes:
                    fresh.append(outcome)
                self._outcomes[outcome.job_id] = outcome
        self._settle([ack_id for ack_id, _ in batch], [])
        return fresh

    def _pull(self, timeout_s: float) -> list[tuple[str, JobOutcome | None]]:
        """One pull: (ack id, parsed notification or None when it names no job) per message."""
        started = time.monotonic()
        try:
            response = self._subscriber_client().pull(
                request={"subscription": self.subscription_path, "max_messages": self.PULL_BATCH},
                timeout=max(timeout_s, 0.1),
            )
        except (gexc.DeadlineExceeded, gexc.RetryError, gexc.ServiceUnavailable):
            return []
        if not response.received_messages and time.monotonic() - started < 0.05:
            time.sleep(0.2)  # an emulator may answer an empty pull at once; do not spin
        return [
            (r.ack_id, outcome_from_notification(r.message.data, dict(r.message.attributes)))
            for r in response.received_messages
        ]

    def _settle(self, ack_ids: Sequence[str], nack_ids: Sequence[str]) -> None:
        subscriber = self._subscriber_client()
        if ack_ids:
            subscriber.acknowledge(request={"subscription": self.subscription_path, "ack_ids": list(ack_ids)})
        if nack_ids:
            subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription_path,
                    "ack_ids": list(nack_ids),
                    "ack_deadline_seconds": 0,
                }
            )

    def _sweep(self, job_ids: Collection[str]) -> list[JobOutcome]:
        """Read result objects for jobs without an answer; returns (and records) the answered ones."""
        if not job_ids:
            return []
        found = list(self._existing_outcomes(list(job_ids)).values())
        return found

    # -- dead letters --

    def dead_letters(self, *, max_messages: int = 100) -> list[DeadLetter]:
        """Peek at the dead-letter hold subscription: pull, then hand every message straight back."""
        received = self._pull_hold(max_messages)
        self._release([r.ack_id for r in received])
        return [_dead_letter(r) for r in received]

    def replay_dead_letters(
        self, job_ids: Collection[str] | None = None, *, max_messages: int = 100
    ) -> list[Replay]:
        """Republish held dead letters to the jobs topic (all, or those whose job id is listed) and ack them.

        The dead-letter handler already wrote a DEAD_LETTERED result for each job, and results are
        write-once, so a replay runs under ``<job_id>.replay-N`` (attribute ``replay_of`` names the original);
        client attributes are kept, so the original client's subscription gets the new answer.
        """
        received = self._pull_hold(max_messages)
        chosen: list[tuple[Any, DeadLetter]] = []
        others: list[tuple[Any, DeadLetter]] = []
        for message in received:
            letter = _dead_letter(message)
            (chosen if job_ids is None or letter.job_id in job_ids else others).append((message, letter))
        self._release([m.ack_id for m, _ in others])
        publisher = self._publisher_client()
        topic = f"projects/{self.settings.project}/topics/{self.settings.jobs_topic}"
        replays: list[Replay] = []
        done_ack_ids: list[str] = []
        failed_ack_ids: list[str] = []
        for message, letter in chosen:
            data, attributes, new_id = self._replay_message(letter)
            try:
                publisher.publish(topic, data, **attributes).result(timeout=self.settings.publish_timeout_s)
            except Exception as exc:
                log.warning("replay of %s failed: %s", letter.message_id, exc)
                failed_ack_ids.append(message.ack_id)
                continue
            done_ack_ids.append(message.ack_id)
            replays.append(Replay(letter.message_id, letter.job_id, new_id))
        hold = self._hold_path()
        if done_ack_ids:
            self._subscriber_client().acknowledge(request={"subscription": hold, "ack_ids": done_ack_ids})
        self._release(failed_ack_ids)
        return replays

    def _replay_message(self, letter: DeadLetter) -> tuple[bytes, dict[str, str], str | None]:
        attributes = {
            k: v for k, v in letter.attributes.items() if not k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)
        }
        try:
            body = json.loads(letter.data)
        except (UnicodeDecodeError, ValueError):
            return letter.data, attributes, None
        if not isinstance(body, dict) or not contracts.valid_job_id(body.get("job_id")):
            return letter.data, attributes, None
        original = str(body["job_id"])
        attempt = 1
        while self.fetch_result(replay_job_id(original, attempt)) is not None:
            attempt += 1
        new_id = replay_job_id(original, attempt)
        body["job_id"] = new_id
        attributes["job_id"] = new_id
        attributes[REPLAY_OF_ATTRIBUTE] = original
        return contracts.encode(body), attributes, new_id

    def _hold_path(self) -> str:
        return f"projects/{self.settings.project}/subscriptions/{self.settings.dead_letter_hold_subscription}"

    def _pull_hold(self, max_messages: int) -> list[Any]:
        subscriber = self._subscriber_client()
        received: list[Any] = []
        while len(received) < max_messages:
            try:
                response = subscriber.pull(
                    request={"subscription": self._hold_path(), "max_messages": max_messages - len(received)},
                    # Not shorter than the server's own wait: a pull abandoned by the client can still
                    # lease a message on the server, hiding it for an ack deadline.
                    timeout=self.PULL_TIMEOUT_S,
                )
            except (gexc.DeadlineExceeded, gexc.RetryError):
                break
            if not response.received_messages:
                break
            received.extend(response.received_messages)
        return received

    def _release(self, ack_ids: Sequence[str]) -> None:
        if ack_ids:
            self._subscriber_client().modify_ack_deadline(
                request={
                    "subscription": self._hold_path(),
                    "ack_ids": list(ack_ids),
                    "ack_deadline_seconds": 0,
                }
            )

    # -- clients (created on first use, so a client that only reads results never builds a publisher) --

    def _publisher_client(self, *, interactive: bool = False) -> Any:
        if interactive:
            if self._interactive_publisher is None:
                self._interactive_publisher = self._new_publisher(self.INTERACTIVE_BATCH_SETTINGS)
            return self._interactive_publisher
        if self._publisher is None:
            self._publisher = self._new_publisher(self.BATCH_SETTINGS)
        return self._publisher

    def _new_publisher(self, batch_settings: Any) -> Any:
        publisher = pubsub_v1.PublisherClient(
            batch_settings=batch_settings,
            publisher_options=pubsub_types.PublisherOptions(flow_control=self.FLOW_CONTROL),
        )
        self._owned.append(publisher)
        return publisher

    def _subscriber_client(self) -> Any:
        if self._subscriber is None:
            self._subscriber = pubsub_v1.SubscriberClient()
            self._owned.append(self._subscriber)
        return self._subscriber

    def _storage_client(self) -> Any:
        if self._storage is None:
            self._storage = storage.Client(project=self.settings.project)
        return self._storage


def _dead_letter(received: Any) -> DeadLetter:
    message = received.message
    attributes = dict(message.attributes)
    job_id = attributes.get("job_id")
    if job_id is None:
        try:
            body = json.loads(message.data)
            job_id = body.get("job_id") if isinstance(body, dict) else None
        except (UnicodeDecodeError, ValueError):
            job_id = None
    attempts_attr = attributes.get(f"{DEAD_LETTER_ATTRIBUTE_PREFIX}SourceDeliveryCount")
    attempts = int(attempts_attr) if attempts_attr and attempts_attr.isdigit() else None
    publish_time = message.publish_time
    return DeadLetter(
        message_id=message.message_id,
        job_id=job_id if isinstance(job_id, str) else None,
        publish_time=publish_time.isoformat() if hasattr(publish_time, "isoformat") else str(publish_time),
        delivery_attempts=attempts or (received.delivery_attempt or None),
        attributes=attributes,
        data=bytes(message.data),
    )
