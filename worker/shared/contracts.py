"""The public records: job message in, result object and notification out (schema_version 1 and 2).

A job of schema_version 2 may name the ``pages`` of its document to analyse, and its result carries one
entry per analysed page (docs/contracts.md "Pages"); a version 1 job and its result keep the version 1
shape (plus the additive ``page_count``). Notifications stay version 1.

Parsing is hand-written (not jsonschema) because it runs once per job on the hot path; the JSON Schemas in
``worker/schemas/`` describe the same contract for clients and are checked against these functions in
tests. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.shared import errors

#: The version of a job that names none, and of every notification.
SCHEMA_VERSION = 1
#: The newest job and result version (what ``fleet submit`` sends).
LATEST_SCHEMA_VERSION = 2
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SUPPORTED_SCHEMA_VERSIONS = frozenset({1, 2})
#: Most pages one job may analyse (``pages`` entries, or the pages of a document that names none).
MAX_PAGES_PER_JOB = 64
PRIORITIES = ("interactive", "batch")
INTERACTIVE = "interactive"
BATCH = "batch"
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
STATUS_EXPIRED = "expired"
DEFAULT_ANALYSES: tuple[str, ...] = ("classify", "embed")
#: What a job that names no ``analyses`` asks for (docs/contracts.md, ``fleet submit --help``); the rule
#: itself is ``default_analyses``. Its request fingerprint names ``DEFAULT_ANALYSES_NAME``, not the list,
#: so a client can recognise its answer whatever packages the fleet serves.
DEFAULT_ANALYSES_RULE = (
    "classify and embed where the fleet serves the drawing model, else every analysis its models offer"
)
DEFAULT_ANALYSES_NAME = "default"
MAX_CLIENT_ATTRIBUTES = 32
MAX_ERROR_MESSAGE_CHARS = 500
# Attributes the worker sets itself on a notification; a client attribute of the same name is not echoed.
RESERVED_ATTRIBUTES = frozenset({"job_id", "status", "error_code", "priority"})
JOB_KEYS = frozenset({"schema_version", "job_id", "input_uri", "priority", "analyses", "deadline", "params"})
#: The fields each job version may carry (a new field is a new version: docs/contracts.md "Versioning").
JOB_KEYS_BY_VERSION: dict[int, frozenset[str]] = {1: JOB_KEYS, 2: JOB_KEYS | {"pages"}}
#: The job attribute that scopes a job's result path (``results/<namespace>/<job_id>.json``). It is the
#: publisher's own word, not an identity: Pub/Sub does not tell a subscriber who published (docs/security.md).
NAMESPACE_ATTRIBUTE = "namespace"
#: Results of messages that cannot have a result at their job's path: no usable job_id, or a job_id whose
#: result answers another job (JOB_ID_CONFLICT). Keyed by message id, so never shared.
REJECTED_FOLDER = "_rejected"
#: Version of the fingerprint recipe. 2: a job that names no analyses is fingerprinted as asking for
#: ``DEFAULT_ANALYSES_NAME``; 1 had the analyses the worker resolved them to (``answers_same_job`` still
#: reads results stored under 1).
FINGERPRINT_VERSION = 2

_JOB_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NAMESPACE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_CONTROL_CHAR_RE = re.compile(r"[\x00-\x1f]")
_GS_URI_RE = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(.+)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One leased Pub/Sub message, as the pipeline sees it (no Pub/Sub types leak past the intake)."""

    ack_id: str
    subscription: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: float
    delivery_attempt: int
    leased_at: float


@dataclass(frozen=True, slots=True)
class Job:
    """A valid job message."""

    job_id: str
    input_uri: str
    input_bucket: str
    input_object: str
    priority: str
    analyses: tuple[str, ...]
    deadline: float | None
    params: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    schema_version: int = SCHEMA_VERSION
    #: The 1-based page numbers to analyse (v2 only); None: every page of the document.
    pages: tuple[int, ...] | None = None
    #: False when the message named no ``analyses``: ``analyses`` is then the fleet's default.
    analyses_named: bool = True


@dataclass(frozen=True, slots=True)
class Rejection:
    """A job message that cannot run; ``job_id``/``priority``/``schema_version`` are what was salvaged."""

    error: errors.PermanentError
    job_id: str | None
    priority: str
    namespace: str | None = None
    #: The message's schema_version when it is a supported one (its result is of that version), else 1.
    schema_version: int = SCHEMA_VERSION


def valid_job_id(value: object) -> bool:
    return isinstance(value, str) and value not in (".", "..") and _JOB_ID_RE.fullmatch(value) is not None


def valid_namespace(value: object) -> bool:
    return isinstance(value, str) and _NAMESPACE_RE.fullmatch(value) is not None


def default_analyses(offered: tuple[str, ...]) -> tuple[str, ...]:
    """What a job naming no analyses asks for, of ``offered`` (``DEFAULT_ANALYSES_RULE``)."""
    return DEFAULT_ANALYSES if set(DEFAULT_ANALYSES) <= set(offered) else offered


def parse_job(
    delivery: Delivery,
    *,
    allowed_buckets: frozenset[str],
    offered_analyses: tuple[str, ...] = DEFAULT_ANALYSES,
    max_message_bytes: int = 64 * 1024,
) -> Job | Rejection:
    """Validate a job message; every failure maps to one stable error code (worker/shared/errors.py).

    A job without ``analyses`` asks for ``default_analyses(offered_analyses)``.
    """
    priority = _lane_priority(delivery.attributes)
    namespace = delivery.attributes.get(NAMESPACE_ATTRIBUTE)
    try:
        body = _parse_envelope(delivery, namespace, max_message_bytes)
    except errors.PermanentError as exc:
        return Rejection(exc, None, priority, namespace if valid_namespace(namespace) else None)
    job_id = body.get("job_id")
    salvaged = job_id if valid_job_id(job_id) else None
    if isinstance(body.get("priority"), str) and body["priority"] in PRIORITIES:
        priority = body["priority"]
    version = body.get("schema_version", SCHEMA_VERSION)
    salvaged_version = version if type(version) is int and version in SUPPORTED_SCHEMA_VERSIONS else 1
    try:
        job = _parse_body(body, allowed_buckets, offered_analyses)
    except errors.PermanentError as exc:
        return Rejection(exc, salvaged, priority, namespace, schema_version=salvaged_version)
    return job if namespace is None else replace(job, namespace=namespace)


def _parse_envelope(delivery: Delivery, namespace: str | None, max_message_bytes: int) -> dict[str, Any]:
    """The checks before the body: attributes, size, JSON object. Raises the permanent error."""
    if namespace is not None and not valid_namespace(namespace):
        raise errors.InvalidNamespace("the namespace attribute must match [a-z0-9][a-z0-9-]{0,62}")
    if len(delivery.data) > max_message_bytes:
        raise errors.MessageTooLarge(f"message data is {len(delivery.data)} bytes; limit {max_message_bytes}")
    if len(delivery.attributes) > MAX_CLIENT_ATTRIBUTES + len(RESERVED_ATTRIBUTES):
        raise errors.MessageTooLarge("too many attributes")
    try:
        body = json.loads(delivery.data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: deep nesting
        raise errors.MalformedJob("message data is not UTF-8 JSON (or nests too deeply)") from exc
    if not isinstance(body, dict):
        raise errors.MalformedJob("message data is not a JSON object")
    return body


def _parse_body(body: dict[str, Any], allowed_buckets: frozenset[str], offered: tuple[str, ...]) -> Job:
    version = body.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise errors.UnsupportedSchemaVersion(
            f"schema_version {str(version)[:20]!r} is not supported; this worker speaks "
            + ", ".join(map(str, sorted(SUPPORTED_SCHEMA_VERSIONS)))
        )
    unknown = set(body) - JOB_KEYS_BY_VERSION[version]
    if unknown:
        raise errors.SchemaInvalid(f"unknown field(s): {', '.join(sorted(map(_clip, unknown))[:5])}")
    job_id = body.get("job_id")
    if job_id is None:
        raise errors.SchemaInvalid("job_id is required")
    if not valid_job_id(job_id):
        raise errors.InvalidJobId("job_id must match [A-Za-z0-9._-]{1,128} and not be '.' or '..'")
    priority = body.get("priority", BATCH)
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise errors.UnknownPriority("priority must be 'interactive' or 'batch'")
    bucket, obj, uri = _parse_input_uri(body.get("input_uri"), allowed_buckets)
    return Job(
        job_id=job_id,
        input_uri=uri,
        input_bucket=bucket,
        input_object=obj,
        priority=priority,
        analyses=_parse_analyses(body.get("analyses"), offered),
        deadline=_parse_deadline(body.get("deadline")),
        params=_parse_params(body.get("params")),
        schema_version=version,
        pages=_parse_pages(body.get("pages")),
        analyses_named=body.get("analyses") is not None,
    )


def _parse_input_uri(value: object, allowed_buckets: frozenset[str]) -> tuple[str, str, str]:
    if value is None:
        raise errors.SchemaInvalid("input_uri is required")
    if not isinstance(value, str):
        raise errors.SchemaInvalid("input_uri must be a string")
    match = _GS_URI_RE.fullmatch(value)
    if match is None or _CONTROL_CHAR_RE.search(value) is not None:
        raise errors.InputUriInvalid("input_uri must be gs://bucket/object")
    bucket, obj = match.group(1), match.group(2)
    if bucket not in allowed_buckets:
        raise errors.InputNotAllowed("input_uri names a bucket this worker may not read")
    return bucket, obj, value


def _parse_analyses(value: object, offered: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default_analyses(offered)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise errors.SchemaInvalid("analyses must be a non-empty list of strings")
    unknown = [v for v in value if v not in offered]
    if unknown:
        raise errors.UnknownAnalysis(f"unknown analysis {_clip(unknown[0])!r}; offered: {', '.join(offered)}")
    return tuple(a for a in offered if a in value)


def _parse_deadline(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise errors.SchemaInvalid("deadline must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        raise errors.SchemaInvalid("deadline must be an RFC 3339 string") from exc
    if parsed.tzinfo is None:
        raise errors.SchemaInvalid("deadline must carry a UTC offset")
    return parsed.timestamp()


def _parse_params(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.SchemaInvalid("params must be an object")
    return value


def _parse_pages(value: object) -> tuple[int, ...] | None:
    """``pages``: a non-empty list of unique 1-based page numbers, at most MAX_PAGES_PER_JOB."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(type(n) is int and n >= 1 for n in value):
        raise errors.InvalidPages("pages must be a non-empty list of page numbers (integers from 1)")
    if len(set(value)) != len(value):
        raise errors.InvalidPages("pages names a page more than once")
    if len(value) > MAX_PAGES_PER_JOB:
        raise errors.InvalidPages(f"pages names {len(value)} pages; a job may analyse {MAX_PAGES_PER_JOB}")
    return tuple(sorted(value))


def _lane_priority(attributes: dict[str, str]) -> str:
    return INTERACTIVE if attributes.get("priority") == INTERACTIVE else BATCH


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- outputs -----------------------------------------------------------------------------------------


def rfc3339(timestamp: float) -> str:
    """Seconds since the epoch -> ``2024-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result_object_name(prefix: str, job_id: str | None, message_id: str, namespace: str | None = None) -> str:
    """Deterministic path of a job's one result object (unusable ids go under ``_rejected/``).

    A namespace scopes the path (``<prefix><namespace>/<job_id>.json``) so two publishers' job ids never
    meet; a namespace cannot start with ``_``, so it never collides with ``_rejected/``.
    """
    if job_id is None:
        return rejected_object_name(prefix, message_id)
    return f"{prefix}{namespace}/{job_id}.json" if namespace else f"{prefix}{job_id}.json"


def rejected_object_name(prefix: str, message_id: str) -> str:
    """The result path of one message that cannot use its job's path: keyed by the message id."""
    safe = "".join(ch for ch in message_id if ch.isalnum() or ch in "._-")[:128] or "unknown"
    return f"{prefix}{REJECTED_FOLDER}/{safe}.json"


# --- fingerprints: does a stored result answer this job? ---------------------------------------------


def request_fingerprint(job: Job | Rejection, data: bytes, *, version: int = FINGERPRINT_VERSION) -> str:
    """Digest of what decides a job's answer, apart from the input's bytes.

    For a valid job: schema version, namespace, job_id, input_uri, analyses as sent (sorted;
    ``DEFAULT_ANALYSES_NAME`` when it named none) and params (not priority or deadline: they decide when,
    not what), and for a version 2 job its ``pages`` (sorted; null for every page). For a rejected
    message: its raw data, since that is what was answered. The input's bytes enter separately
    (``input_sha256``) because they are known only after the read. ``version=1`` gives the recipe before
    this one (the analyses as resolved), to read results stored under it.
    """
    if isinstance(job, Rejection):
        recipe: dict[str, Any] = {"rejected": hashlib.sha256(data).hexdigest(), "namespace": job.namespace}
    else:
        recipe = {
            "schema_version": job.schema_version,
            "namespace": job.namespace,
            "job_id": job.job_id,
            "input_uri": job.input_uri,
            # a set: the order a client or worker lists them in does not matter
            "analyses": sorted(job.analyses) if job.analyses_named or version < 2 else DEFAULT_ANALYSES_NAME,
            "params": job.params,
        }
        if job.schema_version >= 2:  # a version 1 job's recipe is as it always was
            recipe["pages"] = None if job.pages is None else sorted(job.pages)
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def input_digest(data: bytes) -> str:
    """``sha256`` hex of the input object's bytes as the worker read them."""
    return hashlib.sha256(data).hexdigest()


def fingerprint_body(request: str, input_sha256: str | None) -> dict[str, Any]:
    return {"version": FINGERPRINT_VERSION, "request": request, "input_sha256": input_sha256}


def answers_same_job(
    stored: dict[str, Any], request: str, input_sha256: str | None, *, request_v1: str | None = None
) -> bool:
    """Whether a stored result answers the job with this fingerprint (the idempotency-key check).

    The requests must match; the inputs must match where both are known (a result written before the
    input was read, e.g. a failure or a dead-letter answer, has none). A result stored under fingerprint
    version 1 (a worker before this recipe; jobs in flight across an upgrade) is compared with
    ``request_v1``, the job's fingerprint under that recipe, when given. A result written by a worker that
    predates fingerprints has none at all: it is taken as this job's, as before.
    """
    fingerprint = stored.get("fingerprint")
    if not isinstance(fingerprint, dict):
        return True
    expected = request_v1 if fingerprint.get("version") == 1 and request_v1 is not None else request
    if fingerprint.get("request") != expected:
        return False
    stored_input = fingerprint.get("input_sha256")
    return stored_input is None or input_sha256 is None or stored_input == input_sha256


def error_body(error: errors.FleetError) -> dict[str, str]:
    return {"code": error.code, "message": _clip(error.message, MAX_ERROR_MESSAGE_CHARS)}


def status_for(error: errors.FleetError | None) -> str:
    if error is None:
        return STATUS_SUCCEEDED
    return STATUS_EXPIRED if isinstance(error, errors.DeadlineExceeded) else STATUS_FAILED


@dataclass(frozen=True, slots=True)
class Timeline:
    """Wall-clock seconds since the epoch of each step, plus the measured inference time."""

    published: float
    leased: float
    started: float
    finished: float
    inference_ms: float = 0.0
    #: Per model that ran: ``{name: {"preprocess_ms": .., "inference_ms": ..}}`` (optional, additive).
    models: dict[str, dict[str, float]] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "published": rfc3339(self.published),
            "leased": rfc3339(self.leased),
            "started": rfc3339(self.started),
            "finished": rfc3339(self.finished),
            "queue_wait_ms": round(max(0.0, self.started - self.published) * 1000.0, 1),
            "inference_ms": round(self.inference_ms, 1),
        }
        if self.models:
            document["models"] = self.models
        return document


@dataclass(frozen=True, slots=True)
class PageResult:
    """One analysed page of a version 2 result: whether it is blank (paper only) by its measure (``ink``:
    its content fraction, ``paper``: its paper level; None when not measured), the outputs of the
    analyses that ran on it (None when none did), its model timings, and its frame (``{"width",
    "height", "unit"}``: the coordinates outputs are given in; None when no page was decoded)."""

    number: int
    blank: bool
    ink: float | None
    outputs: dict[str, Any] | None
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    paper: int | None = None
    frame: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        document = {
            "page": self.number,
            "blank": self.blank,
            "ink": None if self.ink is None else round(self.ink, 4),
            "outputs": self.outputs,
            "timeline": {
                "preprocess_ms": round(self.preprocess_ms, 1),
                "inference_ms": round(self.inference_ms, 1),
            },
        }
        if self.paper is not None:
            document["paper"] = self.paper
        if self.frame is not None:
            document["frame"] = self.frame
        return document


def build_result(
    *,
    job_id: str | None,
    input_uri: str | None,
    outputs: dict[str, Any] | None,
    error: errors.FleetError | None,
    model: dict[str, str],
    timeline: Timeline,
    instance: str,
    pid: int,
    delivery_attempt: int,
    fingerprint: dict[str, Any] | None = None,
    namespace: str | None = None,
    schema_version: int = SCHEMA_VERSION,
    page_count: int | None = None,
    pages: tuple[PageResult, ...] = (),
    analyses: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The result object's JSON document (docs/contracts.md; worker/shared/schemas/result.v<N>.json).

    Version 1: ``outputs`` as given, plus ``page_count`` when known. Version 2: ``page_count`` (null
    when the document was not read), ``pages`` (the analysed pages, [] for a failed job) and
    ``outputs`` = the one page's outputs for a one-page document, null for a document of several pages.
    Both: ``analyses``, the analyses the job ran as the worker resolved them (absent for a message
    rejected before they were known).
    """
    succeeded = error is None
    if schema_version >= 2:
        outputs = pages[0].to_json()["outputs"] if succeeded and page_count == 1 and pages else None
    document: dict[str, Any] = {
        "schema_version": schema_version,
        "job_id": job_id,
        "status": status_for(error),
        "input_uri": input_uri,
        "outputs": outputs if succeeded else None,
        "error": None if error is None else error_body(error),
        "model": model,
        "timeline": timeline.to_json(),
        "worker": {"instance": instance, "pid": pid},
        "delivery_attempt": delivery_attempt,
    }
    if schema_version >= 2:
        document["page_count"] = page_count
        document["pages"] = [page.to_json() for page in sorted(pages, key=_page_number)] if succeeded else []
    elif page_count is not None:
        document["page_count"] = page_count
    if analyses is not None:
        document["analyses"] = list(analyses)
    if namespace is not None:
        document["namespace"] = namespace
    if fingerprint is not None:
        document["fingerprint"] = fingerprint
    return document


def _page_number(page: PageResult) -> int:
    return page.number


def encode(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; the one serialiser for results and notifications."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class Notification:
    """A result notification ready to publish: data bytes and attributes."""

    data: bytes
    attributes: dict[str, str]


def build_notification(
    *,
    job_id: str | None,
    status: str,
    result_uri: str,
    error: dict[str, str] | None,
    priority: str,
    client_attributes: dict[str, str],
    fingerprint: str | None = None,
) -> Notification:
    """The notification for one job; client attributes are echoed, the worker's own names win.

    ``fingerprint`` is the request fingerprint of the job this notification answers, so a client that
    reused a job_id can tell a stale notification (of the earlier job) from its own job's answer.
    """
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "job_id": job_id,
        "status": status,
        "result_uri": result_uri,
        "error": error,
    }
    if fingerprint is not None:
        body["fingerprint"] = fingerprint
    attributes = {k: v for k, v in client_attributes.items() if k not in RESERVED_ATTRIBUTES}
    if job_id is not None:
        attributes["job_id"] = job_id
    attributes["status"] = status
    attributes["priority"] = priority
    if error is not None and status == STATUS_FAILED:
        attributes["error_code"] = error["code"]
    return Notification(encode(body), attributes)


def load_schema(name: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """``job``, ``result`` or ``notification`` -> the JSON Schema of ``version`` in worker/shared/schemas."""
    text = (SCHEMA_DIR / f"{name}.v{version}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
