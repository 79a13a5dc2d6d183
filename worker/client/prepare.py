"""Requests -> final job messages, before any I/O: local files hashed, bodies checked by the worker's parser.

``prepare_jobs`` either returns every message ready to publish or raises one ``ClientInputInvalid`` naming
each bad request; a submit that gets past it cannot be refused by the worker for its shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from worker.client.ids import CLIENT_ID_ATTRIBUTE
from worker.client.problems import input_error
from worker.client.records import JobIdentity, JobRequest
from worker.client.settings import ClientSettings
from worker.shared import contracts
from worker.shared.contracts import NAMESPACE_ATTRIBUTE

MAX_ATTRIBUTE_KEY_BYTES = 256  # Pub/Sub limits
MAX_ATTRIBUTE_VALUE_BYTES = 1024
HASH_CHUNK_BYTES = 1 << 20
#: The first job version that may name ``pages`` (docs/contracts.md "Pages").
PAGES_SCHEMA_VERSION = 2

_SAFE_SUFFIX_RE = re.compile(r"\.[a-z0-9]{1,10}")


@dataclass(frozen=True)
class Upload:
    """A local file and the content-addressed object it becomes (re-runs never upload it twice).

    ``sha256`` is the hex digest of the file's bytes: the worker's ``input_digest`` of what it will read.
    """

    path: Path
    object_name: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class PreparedJob:
    """A validated job message, ready to publish once its upload (if any) is done.

    ``identity`` is the fingerprint the worker will store in the job's result, so the client can tell a
    stored result that answers this job from one that answers another job under the same job id.
    """

    job_id: str
    data: bytes
    attributes: dict[str, str]
    upload: Upload | None
    identity: JobIdentity


class FileHasher:
    """sha256 of local files, each read once per run; also proves every file is readable before publishing."""

    def __init__(self, upload_prefix: str) -> None:
        self._prefix = upload_prefix
        self._cache: dict[Path, Upload] = {}

    def upload_for(self, path: Path) -> Upload:
        """The object ``path`` becomes: ``<prefix>sha256/<hex><.suffix>`` (suffix kept when it is plain)."""
        resolved = path.resolve()
        cached = self._cache.get(resolved)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        size = 0
        with resolved.open("rb") as handle:
            for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
                digest.update(chunk)
                size += len(chunk)
        suffix = resolved.suffix.lower()
        suffix = suffix if _SAFE_SUFFIX_RE.fullmatch(suffix) else ""
        hexdigest = digest.hexdigest()
        upload = Upload(resolved, f"{self._prefix}sha256/{hexdigest}{suffix}", size, hexdigest)
        self._cache[resolved] = upload
        return upload


def with_job_options(
    requests: Sequence[JobRequest], *, pages: Sequence[int] | None, schema_version: int | None
) -> list[JobRequest]:
    """The requests with ``pages`` / ``schema_version`` filled in where a request does not set its own."""
    return [
        replace(
            request,
            pages=request.pages if request.pages is not None or pages is None else tuple(pages),
            schema_version=request.schema_version if request.schema_version is not None else schema_version,
        )
        for request in requests
    ]


def prepare_jobs(
    requests: Sequence[JobRequest], *, settings: ClientSettings, client_id: str
) -> list[PreparedJob]:
    """Build and validate every message (no network I/O); raises ClientInputInvalid listing every problem."""
    hasher = FileHasher(settings.upload_prefix)
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
        raise input_error(problems)
    return prepared


def _prepare_one(
    request: JobRequest, settings: ClientSettings, client_id: str, hasher: FileHasher
) -> PreparedJob:
    upload = None if request.is_remote else _local_upload(request, hasher)
    input_uri = request.input if upload is None else f"gs://{settings.input_bucket}/{upload.object_name}"
    body: dict[str, Any] = {
        "schema_version": _schema_version(request),
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
    if request.pages is not None:
        body["pages"] = list(request.pages)  # INVALID_PAGES from the parser: the worker's own rule
    attributes = _attributes(request, client_id, settings.namespace)
    data = contracts.encode(body)
    job = check_job_message(data, attributes)
    identity = JobIdentity(
        contracts.request_fingerprint(job, data),
        None if upload is None else upload.sha256,
        request_v1=contracts.request_fingerprint(job, data, version=1),
    )
    return PreparedJob(request.job_id, data, attributes, upload, identity)


def _schema_version(request: JobRequest) -> int:
    """The request's version (default: the newest); ``pages`` needs version 2."""
    version = contracts.LATEST_SCHEMA_VERSION if request.schema_version is None else request.schema_version
    if version not in contracts.SUPPORTED_SCHEMA_VERSIONS:
        speaks = " or ".join(map(str, sorted(contracts.SUPPORTED_SCHEMA_VERSIONS)))
        raise ValueError(f"schema_version {version!r} is not one this client speaks ({speaks})")
    if request.pages is not None and version < PAGES_SCHEMA_VERSION:
        raise ValueError(
            f"pages needs schema_version {PAGES_SCHEMA_VERSION}; a schema_version {version} job is answered "
            "from one page (leave out pages, or publish schema_version 2 once the workers speak it)"
        )
    return version


def _local_upload(request: JobRequest, hasher: FileHasher) -> Upload:
    path = Path(request.input)
    if not path.exists():
        raise ValueError(f"input file {request.input} does not exist")
    if not path.is_file():
        raise ValueError(f"input {request.input} is not a regular file")
    try:
        return hasher.upload_for(path)
    except OSError as exc:
        raise ValueError(f"cannot read input file {request.input}: {exc.strerror or exc}") from exc


def _attributes(request: JobRequest, client_id: str, namespace: str | None) -> dict[str, str]:
    # The namespace is reserved even when unset: a hand-set one would move the result path behind the
    # client's back (its lookups and sweeps read the settings' namespace).
    own = {CLIENT_ID_ATTRIBUTE: client_id} | ({} if namespace is None else {NAMESPACE_ATTRIBUTE: namespace})
    reserved = contracts.RESERVED_ATTRIBUTES | {CLIENT_ID_ATTRIBUTE, NAMESPACE_ATTRIBUTE}
    clash = sorted(set(request.attributes) & reserved)
    if clash:
        raise ValueError(f"attribute(s) {', '.join(clash)} are set by the client itself")
    if len(request.attributes) > contracts.MAX_CLIENT_ATTRIBUTES - len(own):
        raise ValueError(
            f"at most {contracts.MAX_CLIENT_ATTRIBUTES - len(own)} attributes besides {', '.join(own)}"
        )
    for key, value in request.attributes.items():
        if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES or key.startswith("goog"):
            raise ValueError(f"attribute name {key[:40]!r} is empty, too long or reserved (goog*)")
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise ValueError(f"attribute {key!r} is longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes")
    return {
        **request.attributes,
        "priority": request.priority if isinstance(request.priority, str) else "",
        "job_id": request.job_id,
        **own,
    }


def check_job_message(data: bytes, attributes: Mapping[str, str]) -> contracts.Job:
    """The job as the worker parses it; raises ValueError for a job the worker would reject.

    The client does not know the worker's allowed input buckets, so the job's own bucket is allowed here;
    a bucket outside the worker's list is answered ``INPUT_NOT_ALLOWED`` by the worker. Nor does it know
    the worker's model packages: the job's own analyses are taken as offered (after the drawing model's,
    in the order the worker lists them), and one no package offers is answered ``UNKNOWN_ANALYSIS`` by
    the worker.
    """
    body = json.loads(data)
    uri = body.get("input_uri")
    bucket = uri[len("gs://") :].split("/", 1)[0] if isinstance(uri, str) else ""
    asked = body.get("analyses")
    named = tuple(a for a in asked if isinstance(a, str)) if isinstance(asked, list) else ()
    offered = (
        *contracts.DEFAULT_ANALYSES,
        *(a for a in dict.fromkeys(named) if a not in contracts.DEFAULT_ANALYSES),
    )
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
    parsed = contracts.parse_job(delivery, allowed_buckets=frozenset({bucket}), offered_analyses=offered)
    if isinstance(parsed, contracts.Rejection):
        raise ValueError(f"{parsed.error.code}: {parsed.error.message}")
    return parsed
