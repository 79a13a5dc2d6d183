"""What the client commands show: progress bars on stderr, report lines, one-line JSON on stdout.

Imported by ``worker.client.cli`` when a command runs; rich is imported only when a terminal gets bars.
"""

# rich is imported where bars are drawn: --json and piped runs never load it.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from worker.shared.errors import FleetError, JobIdConflict
from worker.shared.exit_codes import FAILED as EXIT_FAILED
from worker.shared.exit_codes import OK as EXIT_OK

if TYPE_CHECKING:
    from rich.progress import Progress

    from worker.client.result_records import JobResult, ResultPage
    from worker.client.sdk import FleetClient, JobOutcome, SubmitReceipt

MAX_LISTED_FAILURES = 20
#: Printed under a JOB_ID_CONFLICT outcome: the job was not run, and what the user can do about it.
CONFLICT_ADVICE = (
    "  {job_id} was not run: its job_id already has a result that answers a different job (another input, "
    "options or client). Choose a new job_id, or set a namespace of your own with --namespace or "
    "FLEET_NAMESPACE."
)


@contextmanager
def progress_bars(args: argparse.Namespace) -> Iterator[Progress | None]:
    """Rich progress bars on stderr; none with --json or when stderr is not a terminal."""
    if args.json or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield progress


def wait_with_progress(
    client: FleetClient, receipt: SubmitReceipt, timeout_s: float, progress: Progress | None
) -> dict[str, JobOutcome]:
    """``client.wait`` with a bar that counts answers and says how many did not succeed."""
    task = None if progress is None else progress.add_task("waiting for results", total=len(receipt.job_ids))
    failed = 0

    def on_answer(outcome: JobOutcome) -> None:
        nonlocal failed
        if progress is None or task is None:
            return
        failed += not outcome.succeeded
        label = "waiting for results" + (f" ({failed} not succeeded)" if failed else "")
        progress.update(task, advance=1, description=label)

    on: Callable[[JobOutcome], None] = on_answer
    return client.wait(receipt.job_ids, timeout_s, on_answer=on)


def report_submit(
    args: argparse.Namespace,
    receipt: SubmitReceipt,
    outcomes: dict[str, JobOutcome] | None,
    elapsed_s: float,
) -> int:
    """Print what ``fleet submit`` did (and, with ``--wait``, how the jobs ended); returns the exit code."""
    if outcomes is None:  # not waiting: report what was published and what was answered before
        outcomes = dict(receipt.already_answered)
        statuses = Counter(o.status for o in outcomes.values())
        statuses["published"] = len(receipt.published)
        ok = all(o.succeeded for o in receipt.already_answered.values())
    else:
        statuses = Counter(o.status for o in outcomes.values())
        ok = all(o.succeeded for o in outcomes.values())
    if args.json:
        print_json(
            {
                "client_id": receipt.client_id,
                "published": list(receipt.published),
                "already_answered": sorted(receipt.already_answered),
                "uploads": {"uploaded": receipt.uploaded_objects, "reused": receipt.reused_objects},
                "summary": dict(statuses),
                "elapsed_s": round(elapsed_s, 3),
                "jobs": [outcomes[j].to_json() for j in receipt.job_ids if j in outcomes],
            }
        )
    else:
        _print_submit(receipt, outcomes, statuses, elapsed_s, waited=args.wait)
    return EXIT_OK if ok else EXIT_FAILED


def _print_submit(
    receipt: SubmitReceipt,
    outcomes: dict[str, JobOutcome],
    statuses: Counter[str],
    elapsed_s: float,
    *,
    waited: bool,
) -> None:
    print(
        f"published {len(receipt.published)} job(s) as client {receipt.client_id}; "
        f"inputs uploaded {receipt.uploaded_objects}, already there {receipt.reused_objects}"
    )
    for job_id in sorted(receipt.already_answered):
        print(f"already answered, not re-run: {outcome_line(receipt.already_answered[job_id])}")
    if waited:
        summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        rate = len(outcomes) / elapsed_s if elapsed_s > 0 else 0.0
        print(f"{summary} in {elapsed_s:.1f} s ({rate:.1f} jobs/s)")
        not_ok = [o for o in outcomes.values() if not o.succeeded]
        for outcome in not_ok[:MAX_LISTED_FAILURES]:
            print(outcome_line(outcome))
        if len(not_ok) > MAX_LISTED_FAILURES:
            print(f"... and {len(not_ok) - MAX_LISTED_FAILURES} more not succeeded")
    elif receipt.published:
        print("follow them with: fleet results   (or fleet status JOB_ID)")
        if len(receipt.published) <= 10:
            print("job ids: " + " ".join(receipt.published))


def outcome_line(outcome: JobOutcome) -> str:
    """``job: status [CODE] message  gs://…``; a JOB_ID_CONFLICT adds a line saying what to do."""
    line = f"{outcome.job_id}: {outcome.status}"
    if outcome.error_code:
        line += f" [{outcome.error_code}] {outcome.error_message or ''}".rstrip()
    if outcome.result_uri:
        line += f"  {outcome.result_uri}"
    if outcome.error_code == JobIdConflict.code:
        line += "\n" + CONFLICT_ADVICE.format(job_id=outcome.job_id)
    return line


def result_lines(result: JobResult) -> list[str]:
    """What ``fleet status`` prints under the outcome line: indented, one line per page when paged.

    A one-page result is one line, as before pages: label and confidence, symbols, embedding size,
    model, timings. A document of more than one page gets a line with its page count (and the model and
    timings), then one line per analysed page: ``page N: blank`` or what its analyses said.
    """
    job = _job_parts(result)
    if not result.multi_page:
        only = result.pages[0] if result.pages else None
        page = [] if only is None else _page_parts(only)
        return ["  " + "  ".join(page + job) if page + job else "  (no outputs)"]
    analysed = len(result.pages)
    head = f"{result.page_count} pages" + ("" if analysed == result.page_count else f", {analysed} analysed")
    lines = ["  " + "  ".join([head, *job])]
    for entry in result.pages:
        lines.append(f"  page {entry.page}: " + ("  ".join(_page_parts(entry)) or "(no outputs)"))
    return lines


def _page_parts(page: ResultPage) -> list[str]:
    """``blank (ink 0.0004)`` for a blank page, then label and confidence, symbols present, embedding size
    of the analyses that ran on it (a blank page's: those of packages that analyse blank pages)."""
    parts = ["blank" + ("" if page.ink is None else f" (ink {page.ink:.4f})")] if page.blank else []
    outputs = page.outputs or {}
    classify = outputs.get("classify")
    if isinstance(classify, dict) and "label" in classify:
        confidence = classify.get("confidence", (classify.get("scores") or {}).get(classify["label"]))
        shown = f" ({confidence:.3f})" if isinstance(confidence, float) else ""
        parts.append(f"label={classify['label']}{shown}")
    symbols = outputs.get("symbols")
    if isinstance(symbols, dict) and isinstance(symbols.get("present"), list):
        parts.append("symbols=" + (",".join(map(str, symbols["present"])) or "none"))
    embed = outputs.get("embed")
    if isinstance(embed, dict) and isinstance(embed.get("embedding"), list):
        parts.append(f"embedding[{len(embed['embedding'])}]")
    return parts


def _job_parts(result: JobResult) -> list[str]:
    """The model that answered and the job's timings."""
    parts = []
    if result.model:
        parts.append(f"model={result.model.get('name')}:{result.model.get('version')}")
    timeline = result.timeline
    if "queue_wait_ms" in timeline:
        parts.append(f"queue_wait={timeline['queue_wait_ms']}ms inference={timeline.get('inference_ms')}ms")
    return parts


def error_json(exc: FleetError) -> dict[str, Any]:
    """``{code, message, problems?}`` of a fleet error, for ``--json`` output."""
    body: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    problems = getattr(exc, "problems", None)
    if problems:
        body["problems"] = list(problems)
    return body


def print_json(value: Any) -> None:
    """One compact JSON document per line on stdout (``--json``)."""
    print(json.dumps(value, indent=None, separators=(",", ":")), flush=True)


def err(message: str) -> None:
    """A line on stderr."""
    print(message, file=sys.stderr, flush=True)
