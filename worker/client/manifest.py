"""JSONL manifests: one job object per line, every problem reported with ``file:line``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.client.problems import input_error
from worker.client.records import JobRequest
from worker.shared import contracts
from worker.shared.errors import ClientInputInvalid

MANIFEST_SUFFIXES = (".jsonl", ".ndjson")
MANIFEST_KEYS = frozenset(
    {"job_id", "input", "input_uri", "priority", "analyses", "deadline", "params", "attributes", "pages"}
)


def read_manifest(path: Path, *, default_priority: str = contracts.BATCH) -> list[JobRequest]:
    """Parse a JSONL manifest: one job object per line, blank lines ignored.

    Keys: ``job_id`` (required), exactly one of ``input`` (a local file, relative to the manifest) or
    ``input_uri`` (``gs://``), and optionally ``priority``, ``analyses``, ``deadline``, ``params``,
    ``attributes``, ``pages`` (the 1-based pages of the document to analyse, e.g. ``[1, 3]``). Every
    problem is reported with ``file:line``; field values are checked later by ``prepare_jobs`` with the
    worker's own parser.
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
            request = _line_request(line_bytes, where, path.parent, default_priority)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if request is None:
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
        raise input_error(problems)
    return requests


def _line_request(line_bytes: bytes, where: str, base: Path, default_priority: str) -> JobRequest | None:
    """One manifest line -> a request (None for a blank line); ValueError says what is wrong."""
    try:
        line = line_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("line is not UTF-8") from None
    if not line.strip():
        return None
    entry = _entry(line)
    return JobRequest(
        job_id=_job_id(entry),
        input=_source(entry, base),
        priority=entry.get("priority", default_priority),
        analyses=_analyses(entry),
        deadline=entry.get("deadline"),
        params=entry.get("params"),
        attributes=_attributes(entry),
        pages=_pages(entry),
        origin=where,
    )


def _entry(line: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(entry, dict):
        raise ValueError("a manifest line must be a JSON object")
    unknown = sorted(set(entry) - MANIFEST_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(MANIFEST_KEYS))}")
    return entry


def _job_id(entry: dict[str, Any]) -> str:
    job_id = entry.get("job_id")
    if job_id is None:
        raise ValueError("job_id is required")
    if not contracts.valid_job_id(job_id):
        raise ValueError(f"job_id {str(job_id)[:40]!r} must match [A-Za-z0-9._-]{{1,128}}, not '.' or '..'")
    return str(job_id)


def _source(entry: dict[str, Any], base: Path) -> str:
    """The ``gs://`` URI, or the local file resolved against the manifest's folder."""
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
    return source


def _analyses(entry: dict[str, Any]) -> tuple[str, ...] | None:
    analyses = entry.get("analyses")
    if analyses is None:
        return None
    if not (isinstance(analyses, list) and all(isinstance(a, str) for a in analyses)):
        raise ValueError("analyses must be a list of strings")
    return tuple(analyses)


def _attributes(entry: dict[str, Any]) -> dict[str, str]:
    attributes = entry.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise ValueError("attributes must be an object of strings")
    return attributes


def _pages(entry: dict[str, Any]) -> tuple[int, ...] | None:
    """The list as given: its numbers are checked by the worker's parser (INVALID_PAGES) in prepare_jobs."""
    pages = entry.get("pages")
    if pages is None:
        return None
    if not isinstance(pages, list):
        raise ValueError("pages must be a list of page numbers, e.g. [1, 3]")
    return tuple(pages)
