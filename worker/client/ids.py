"""Job ids and client ids the SDK makes, and the rule a client id must follow."""

from __future__ import annotations

import re
import uuid

from worker.shared.errors import ClientInputInvalid

#: The attribute each job carries and its notification echoes; a results subscription filters on it.
CLIENT_ID_ATTRIBUTE = "client_id"

_CLIENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_REPLAY_SUFFIX = ".replay-{attempt}"
#: The longest job id ``worker.shared.contracts.valid_job_id`` accepts.
MAX_JOB_ID_CHARS = 128


def new_job_id(prefix: str = "job") -> str:
    """A fresh job id (``job-<20 hex>``): each submit of a file or URI is a new job."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def new_client_id() -> str:
    """A fresh ephemeral client id (``c-<16 hex>``)."""
    return f"c-{uuid.uuid4().hex[:16]}"


def check_client_id(client_id: str) -> str:
    """Client ids become part of a subscription name: lowercase letters, digits and '-', ≤ 63 chars."""
    if not _CLIENT_ID_RE.fullmatch(client_id):
        raise ClientInputInvalid(f"client id {client_id!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    return client_id


def replay_job_id(job_id: str, attempt: int) -> str:
    """``drawing-7`` -> ``drawing-7.replay-1``; trimmed so the id stays within 128 characters."""
    suffix = _REPLAY_SUFFIX.format(attempt=attempt)
    return job_id[: MAX_JOB_ID_CHARS - len(suffix)] + suffix
