"""Result objects -> ``JobResult``: one record for every result version, with one entry per analysed page.

A ``schema_version`` 2 result answers a document of one or more pages (a TIFF's frames, a PDF's pages):
``page_count`` is the document's page count and ``pages`` holds one entry per analysed page (its number,
whether it was blank, its ink, its outputs and timings). A ``schema_version`` 1 result was answered from
one page, so it reads as one page, number 1, with the result's outputs.

Reading ``JobResult.outputs`` of a document of more than one page raises ``MultiPageResult`` instead of
returning the document's ``outputs`` (null for such a document): code written for one-page results
cannot mistake "no outputs" for an answer, nor one page's answer for the document's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.client.outcomes import outcome_from_result
from worker.client.records import JobOutcome
from worker.shared import contracts
from worker.shared.errors import FleetError


class MultiPageResult(FleetError):
    """``JobResult.outputs`` was read for a document of more than one page: read ``pages`` instead."""

    code = "MULTI_PAGE_RESULT"


@dataclass(frozen=True)
class ResultPage:
    """One analysed page: ``outputs`` of the analyses that ran on it, None when none did (a blank page,
    paper only, goes only to packages that analyse blank pages).

    ``ink`` (the page's content fraction, the blank measure) and ``timeline`` (``preprocess_ms``,
    ``inference_ms`` summed over the page's models) are None where the result does not say (v1).
    """

    page: int
    blank: bool
    outputs: dict[str, Any] | None
    ink: float | None = None
    timeline: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """The page entry as a v2 result stores it."""
        return {
            "page": self.page,
            "blank": self.blank,
            "ink": self.ink,
            "outputs": self.outputs,
            "timeline": self.timeline,
        }


@dataclass(frozen=True)
class JobResult:
    """A result object, read: the job's outcome, its document's page count and its analysed pages.

    ``page_count`` is None where the result does not say (a v1 result from a worker before pages, or a
    job that failed before its input was read). ``document`` is the parsed object as stored.
    """

    outcome: JobOutcome
    schema_version: int
    page_count: int | None
    pages: tuple[ResultPage, ...]
    model: dict[str, Any] = field(default_factory=dict)
    timeline: dict[str, Any] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def job_id(self) -> str:
        """The job the result answers."""
        return self.outcome.job_id

    @property
    def status(self) -> str:
        """``succeeded``, ``failed`` or ``expired``."""
        return self.outcome.status

    @property
    def multi_page(self) -> bool:
        """The document has more than one page: its answer is in ``pages``, one entry per analysed page."""
        return self.page_count is not None and self.page_count > 1

    @property
    def outputs(self) -> dict[str, Any] | None:
        """The outputs of a one-page document (None when not succeeded, or when no analysis ran on it).

        Raises ``MultiPageResult`` for a succeeded document of more than one page: read ``pages``.
        """
        if self.multi_page and self.outcome.succeeded:
            analysed = ", ".join(str(entry.page) for entry in self.pages)
            raise MultiPageResult(
                f"job {self.job_id!r}: the input has {self.page_count} pages, so the result has no single "
                f"outputs; read JobResult.pages (one entry per analysed page: {analysed})"
            )
        outputs = self.document.get("outputs")
        return outputs if isinstance(outputs, dict) else None

    def page(self, number: int) -> ResultPage:
        """The entry of page ``number`` (1-based); KeyError when that page was not analysed."""
        for entry in self.pages:
            if entry.page == number:
                return entry
        raise KeyError(f"page {number} was not analysed (analysed: {[p.page for p in self.pages]})")

    def to_json(self) -> dict[str, Any]:
        """The outcome (as a notification has it), the stored ``outputs``, ``page_count`` and ``pages``.

        The shape is the same for v1 and v2 results (a v1 result's one page is page 1), for ``--json``.
        """
        return {
            **self.outcome.to_json(),
            "outputs": self.document.get("outputs"),
            "page_count": self.page_count,
            "pages": [entry.to_json() for entry in self.pages],
        }


def read_result(document: Mapping[str, Any], result_uri: str) -> JobResult:
    """A parsed result object (any schema version) -> its ``JobResult``."""
    version = document.get("schema_version")
    schema_version = version if type(version) is int else contracts.SCHEMA_VERSION
    outcome = outcome_from_result(document, result_uri)
    page_count = document.get("page_count")
    stored_pages = document.get("pages")
    if isinstance(stored_pages, list):
        pages = tuple(_page(entry) for entry in stored_pages if isinstance(entry, dict))
    elif outcome.succeeded:
        pages = (_only_page(document),)
    else:
        pages = ()
    model, timeline = document.get("model"), document.get("timeline")
    return JobResult(
        outcome=outcome,
        schema_version=schema_version,
        page_count=page_count if type(page_count) is int else None,
        pages=pages,
        model=model if isinstance(model, dict) else {},
        timeline=timeline if isinstance(timeline, dict) else {},
        document=dict(document),
    )


def _page(entry: Mapping[str, Any]) -> ResultPage:
    number, ink, outputs, timeline = (entry.get(k) for k in ("page", "ink", "outputs", "timeline"))
    return ResultPage(
        page=number if type(number) is int else 0,
        blank=entry.get("blank") is True,
        outputs=outputs if isinstance(outputs, dict) else None,
        ink=float(ink) if isinstance(ink, int | float) and not isinstance(ink, bool) else None,
        timeline=_timings(timeline),
    )


def _only_page(document: Mapping[str, Any]) -> ResultPage:
    """A result without ``pages`` (v1) was answered from one page: page 1, never marked blank."""
    outputs = document.get("outputs")
    return ResultPage(page=1, blank=False, outputs=outputs if isinstance(outputs, dict) else None)


def _timings(value: object) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    return {
        str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
