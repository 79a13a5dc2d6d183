"""The verdict: count every job from the results bucket, the write log and the notifications."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.dev.devstack.admin_http import AdminClient
from worker.dev.harness.notifications import Notification


@dataclass
class Audit:
    """The outcome of counting every job: the soak's and the corpus test's verdict."""

    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    lost: int = 0
    overwritten: int = 0
    missing_objects: list[str] = field(default_factory=list)
    missing_notifications: list[str] = field(default_factory=list)
    duplicate_notifications: int = 0
    conflicting_notifications: int = 0
    #: Jobs answered JOB_ID_CONFLICT (on any notification): 0 when every job id is the run's own.
    job_id_conflicts: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)


def list_result_objects(storage_client: Any, bucket: str, prefix: str = "results/") -> dict[str, Any]:
    """Every object under ``prefix``: name -> blob (with generation and metageneration)."""
    return {blob.name: blob for blob in storage_client.list_blobs(bucket, prefix=prefix)}


def audit_jobs(
    expected_objects: Mapping[str, str],
    notifications: Mapping[str, Sequence[Notification]],
    objects: Mapping[str, Any],
    *,
    writes_by_object: Mapping[str, int] | None = None,
) -> Audit:
    """Count outcomes for ``expected_objects`` (key -> result object name).

    A job is lost unless it has exactly one result object and at least one terminal notification. An
    object is overwritten when the storage write log shows more than one successful write to it, or
    (without a log) when its metageneration or generation history says it was replaced.
    """
    audit = Audit(jobs=len(expected_objects))
    for key, object_name in expected_objects.items():
        notes = [n for n in notifications.get(key, []) if n.status in ("succeeded", "failed", "expired")]
        blob = objects.get(object_name)
        if blob is None:
            audit.missing_objects.append(key)
        if not notes:
            audit.missing_notifications.append(key)
        if blob is None or not notes:
            audit.lost += 1
            continue
        _count_answers(audit, notes)
        if writes_by_object is not None:
            if writes_by_object.get(object_name, 0) > 1:
                audit.overwritten += 1
        elif int(getattr(blob, "metageneration", 1) or 1) > 1:
            audit.overwritten += 1
    return audit


def _count_answers(audit: Audit, notes: Sequence[Notification]) -> None:
    """One answered job's notifications: its status (from the first), duplicates, conflicts."""
    if any(n.error_code == "JOB_ID_CONFLICT" for n in notes):
        audit.job_id_conflicts += 1
    if len(notes) > 1:
        audit.duplicate_notifications += len(notes) - 1
        if len({(n.status, n.error_code) for n in notes}) > 1:
            audit.conflicting_notifications += 1
    status = notes[0].status
    if status == "succeeded":
        audit.succeeded += 1
    elif status == "expired":
        audit.expired += 1
    else:
        audit.failed += 1
        code = notes[0].error_code or "?"
        audit.error_codes[code] = audit.error_codes.get(code, 0) + 1


def delivery_stats(admin_url: str | None, subscriptions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per-subscription delivery counters from the Pub/Sub emulator's admin ``/stats`` (empty if absent)."""
    if not admin_url:
        return {}
    try:
        stats = AdminClient(admin_url).stats(messages=1)
    except OSError:
        return {}
    subs: dict[str, dict[str, Any]] = stats.get("subscriptions", {})
    return {name: subs[name] for name in subscriptions if name in subs}
