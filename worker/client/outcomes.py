"""Notifications and result objects -> ``JobOutcome``: the two ways the client learns a job's answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from worker.client.records import ANSWERED_STATUSES, JobOutcome
from worker.shared import contracts


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
    outcome = _outcome(job_id, status, body.get("result_uri"), body.get("error"))
    fingerprint = body.get("fingerprint")
    return replace(outcome, fingerprint=fingerprint) if isinstance(fingerprint, str) else outcome


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
