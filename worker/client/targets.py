"""What ``fleet submit`` is given -> job requests: manifests, ``gs://`` URIs, files, directories."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from worker.client.ids import new_job_id
from worker.client.manifest import MANIFEST_SUFFIXES, read_manifest
from worker.client.problems import input_error
from worker.client.records import JobRequest
from worker.shared import contracts
from worker.shared.errors import ClientInputInvalid


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

    def fresh(source: str, origin: str) -> JobRequest:
        return JobRequest(
            new_job_id(job_id_prefix), source, priority, analyses, origin=origin, may_be_answered=False
        )

    for target in targets:
        if target.startswith("gs://"):
            requests.append(fresh(target, f"argument {target}"))
            continue
        path = Path(target)
        if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            try:
                requests.extend(read_manifest(path, default_priority=priority))
            except ClientInputInvalid as exc:
                problems.extend(exc.problems)
        elif path.is_file():
            requests.append(fresh(str(path), str(path)))
        elif path.is_dir():
            files = _files_under(path)
            if not files:
                problems.append(f"{path}: directory has no files")
            requests.extend(fresh(str(f), str(f)) for f in files)
        else:
            problems.append(f"{path}: no such file or directory")
    if problems:
        raise input_error(problems)
    _check_unique(requests)
    return requests


def _files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, sorted; anything under a dot-named part is skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _check_unique(requests: Sequence[JobRequest]) -> None:
    """A job id given twice (in two manifests, say) names both places."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for request in requests:
        if request.job_id in seen:
            problems.append(
                f"{request.where()}: duplicate job_id {request.job_id!r} (also {seen[request.job_id]})"
            )
        seen.setdefault(request.job_id, request.where())
    if problems:
        raise input_error(problems)
