"""``fleet submit|results|status``, ``fleet dlq list|replay``: the client on the command line.

Exit codes (``worker.shared.exit_codes``): 0 every job succeeded, 1 some job failed, expired or is still
pending (or the command failed), 2 usage error — bad input is reported with file and line and nothing is
published.

``worker.client.sdk`` (and with it the google clients) is imported inside each command, so registering these
sub-commands costs ``fleet worker`` nothing.
"""

# Imports inside functions are deliberate (see above): the CLI root imports this module for every command.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from worker.client import cli_output as output
from worker.shared import contracts
from worker.shared.errors import ClientInputInvalid, FleetError, PublishIncomplete
from worker.shared.exit_codes import FAILED as EXIT_FAILED
from worker.shared.exit_codes import OK as EXIT_OK
from worker.shared.exit_codes import USAGE as EXIT_USAGE

if TYPE_CHECKING:
    from worker.client.sdk import FleetClient

DEFAULT_WAIT_TIMEOUT_S = 3600.0
DEFAULT_RESULTS_IDLE_S = 5.0
#: A durable client id for every command of this shell (default: one per user and host).
CLIENT_ID_VARIABLE = "FLEET_CLIENT_ID"


def register(subparsers: Any) -> None:
    """Add the client's sub-commands to ``fleet``."""
    _register_submit(subparsers)
    _register_results(subparsers)
    _register_status(subparsers)
    _register_dlq(subparsers)


def _register_submit(subparsers: Any) -> None:
    submit = subparsers.add_parser(
        "submit",
        help="submit jobs: image files, directories, gs:// URIs or JSONL manifests",
        description="Upload local inputs to the inputs bucket (content-addressed, never twice), validate "
        "every job, then publish them. A manifest is JSONL, one job per line: "
        '{"job_id": "d-1", "input": "drawings/a.png"} or {"job_id": "d-2", "input_uri": "gs://b/o.png"}, '
        "optional priority, analyses, deadline, params, attributes. Re-submitting a manifest reports jobs "
        "that already have a result instead of running them again; a job_id whose result answers a "
        "different job is answered JOB_ID_CONFLICT.",
    )
    submit.add_argument("targets", nargs="+", metavar="PATH|gs://…|manifest.jsonl")
    submit.add_argument("--priority", choices=("interactive", "batch"), default="batch")
    submit.add_argument(
        "--analyses",
        help="comma list, e.g. classify,embed (default: the fleet's default, "
        f"{contracts.DEFAULT_ANALYSES_RULE}; a manifest line's own analyses win)",
    )
    submit.add_argument(
        "--pages",
        help="comma list of the 1-based pages of each document to analyse, e.g. 1,3 (default: every page; "
        "a manifest line's own pages win)",
    )
    submit.add_argument(
        "--schema-version",
        type=int,
        choices=sorted(contracts.SUPPORTED_SCHEMA_VERSIONS),
        help=f"job schema_version to publish (default {contracts.LATEST_SCHEMA_VERSION}); 1 for workers that "
        "predate pages (no --pages then)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for every job's result, with progress")
    submit.add_argument(
        "--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S, help="seconds to --wait (default 3600)"
    )
    _common(submit)
    _namespace(submit)
    submit.set_defaults(func=_guarded(cmd_submit))


def _register_results(subparsers: Any) -> None:
    results = subparsers.add_parser(
        "results",
        help="print result notifications for this client's jobs",
        description="Read this client's result subscription (jobs submitted without --wait by the same "
        "client id) and print each notification once.",
    )
    results.add_argument("--follow", action="store_true", help="keep reading until interrupted")
    results.add_argument(
        "--idle",
        type=float,
        default=DEFAULT_RESULTS_IDLE_S,
        help="without --follow, stop after this many seconds without a notification (default 5)",
    )
    results.add_argument("--limit", type=int, help="stop after this many notifications")
    _common(results)  # no --namespace: notifications carry their own result_uri
    results.set_defaults(func=_guarded(cmd_results))


def _register_status(subparsers: Any) -> None:
    status = subparsers.add_parser("status", help="show one job's status from its result object")
    status.add_argument("job_id")
    status.add_argument("--full", action="store_true", help="print the whole result object")
    _common(status, client_id=False)
    _namespace(status)
    status.set_defaults(func=_guarded(cmd_status))


def _register_dlq(subparsers: Any) -> None:
    dlq = subparsers.add_parser("dlq", help="inspect or replay dead-lettered jobs (the hold subscription)")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="{list,replay}")
    dlq.set_defaults(func=lambda args: _usage(dlq, "choose 'list' or 'replay'"))
    dlq_list = dlq_sub.add_parser("list", help="list held dead letters without consuming them")
    dlq_list.add_argument("--max", type=int, default=100, dest="max_messages")
    _common(dlq_list, client_id=False)
    dlq_list.set_defaults(func=_guarded(cmd_dlq_list))
    dlq_replay = dlq_sub.add_parser(
        "replay",
        help="republish held dead letters to the jobs topic (as <job_id>.replay-N) and ack them",
    )
    dlq_replay.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    dlq_replay.add_argument("--all", action="store_true", help="replay every held dead letter")
    dlq_replay.add_argument("--max", type=int, default=100, dest="max_messages")
    _common(dlq_replay, client_id=False)
    dlq_replay.set_defaults(func=_guarded(lambda args: cmd_dlq_replay(args, dlq_replay)))


def _common(parser: argparse.ArgumentParser, *, client_id: bool = True) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--project", help="Google Cloud project (default: GOOGLE_CLOUD_PROJECT)")
    if client_id:
        parser.add_argument(
            "--client-id",
            help="durable client id whose results subscription is kept (default: FLEET_CLIENT_ID, else "
            "one per user and host; --wait uses a fresh ephemeral id)",
        )


def _namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        help="scope job ids to results/<namespace>/<job_id>.json, so other clients' job ids never meet "
        "yours ([a-z0-9][a-z0-9-]{0,62}; default: FLEET_NAMESPACE, else none)",
    )


# --- commands -------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from worker.client import sdk

    started = time.monotonic()
    requests = sdk.requests_from_targets(
        args.targets, priority=args.priority, analyses=_analyses(args.analyses)
    )
    # submit() opens the results subscription itself, after validating every job
    with (
        _client(args, ephemeral_when_waiting=args.wait, results=False) as client,
        output.progress_bars(args) as progress,
    ):
        upload_task = None

        def on_upload(done: int, total: int) -> None:
            nonlocal upload_task
            if progress is not None:
                if upload_task is None:
                    upload_task = progress.add_task("uploading inputs", total=total)
                progress.update(upload_task, completed=done)

        receipt = client.submit(
            requests, pages=_pages(args.pages), schema_version=args.schema_version, on_upload=on_upload
        )
        outcomes = output.wait_with_progress(client, receipt, args.timeout, progress) if args.wait else None
    return output.report_submit(args, receipt, outcomes, time.monotonic() - started)


def cmd_results(args: argparse.Namespace) -> int:
    counts: Counter[str] = Counter()
    with _client(args, ephemeral_when_waiting=False) as client:
        idle = None if args.follow else args.idle
        try:
            for outcome in client.results(idle_timeout_s=idle):
                counts[outcome.status] += 1
                if args.json:
                    output.print_json(outcome.to_json())
                else:
                    print(output.outcome_line(outcome), flush=True)
                if args.limit is not None and sum(counts.values()) >= args.limit:
                    break
        except KeyboardInterrupt:  # --follow ends with Ctrl-C; what was printed was acked
            pass
    if not args.json and not counts:
        output.err("no new results")
    return EXIT_OK if set(counts) <= {"succeeded"} else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    if not contracts.valid_job_id(args.job_id):
        raise ClientInputInvalid(f"job id {args.job_id!r} must match [A-Za-z0-9._-]{{1,128}}")
    with _client(args, ephemeral_when_waiting=False, results=False) as client:
        result = client.result(args.job_id)
    if result is None:
        if args.json:
            output.print_json({"job_id": args.job_id, "status": "pending", "result_uri": None, "error": None})
        else:
            print(f"{args.job_id}: pending (no result object yet)")
        return EXIT_FAILED
    if args.json:
        output.print_json(result.document if args.full else result.to_json())
    elif args.full:
        print(json.dumps(result.document, indent=2))
    else:
        print(output.outcome_line(result.outcome))
        print("\n".join(output.result_lines(result)))
    return EXIT_OK if result.outcome.succeeded else EXIT_FAILED


def cmd_dlq_list(args: argparse.Namespace) -> int:
    with _client(args, ephemeral_when_waiting=False, results=False) as client:
        letters = client.dead_letters(max_messages=args.max_messages)
    if args.json:
        output.print_json([letter.to_json() for letter in letters])
        return EXIT_OK
    if not letters:
        print("the dead-letter hold is empty")
    for letter in letters:
        attempts = "?" if letter.delivery_attempts is None else str(letter.delivery_attempts)
        owner = letter.attributes.get("client_id", "-")
        print(f"{letter.job_id or '(no job id)'}  attempts={attempts}  client={owner}  {letter.publish_time}")
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.all and not args.job_ids:
        return _usage(parser, "name JOB_IDs to replay, or pass --all")
    if args.all and args.job_ids:
        return _usage(parser, "pass JOB_IDs or --all, not both")
    wanted = None if args.all else set(args.job_ids)
    with _client(args, ephemeral_when_waiting=False, results=False) as client:
        replays = client.replay_dead_letters(wanted, max_messages=args.max_messages)
    missing = sorted((wanted or set()) - {r.original_job_id for r in replays})
    if args.json:
        output.print_json(
            {
                "replayed": [
                    {"message_id": r.message_id, "original_job_id": r.original_job_id, "job_id": r.job_id}
                    for r in replays
                ],
                "not_found": missing,
            }
        )
    else:
        for replay in replays:
            print(f"replayed {replay.original_job_id} as {replay.job_id}")
        for job_id in missing:
            output.err(f"{job_id}: not in the dead-letter hold")
        if not replays and not missing:
            print("the dead-letter hold is empty")
    return EXIT_FAILED if missing else EXIT_OK


# --- helpers --------------------------------------------------------------------------------------------


@contextmanager
def _client(
    args: argparse.Namespace, *, ephemeral_when_waiting: bool, results: bool = True
) -> Iterator[FleetClient]:
    """The client for one command: ``--wait`` gets a fresh ephemeral id, other commands the durable one."""
    from worker.client import sdk

    sdk.apply_devstack_env()
    settings = sdk.ClientSettings.from_env(project=args.project, namespace=getattr(args, "namespace", None))
    client_id = getattr(args, "client_id", None)
    if ephemeral_when_waiting and not client_id:
        client = sdk.FleetClient(settings)
    else:
        client = sdk.FleetClient(settings, client_id=client_id or default_client_id(), ephemeral=False)
    try:
        yield client.open() if results else client
    finally:
        client.close()


def default_client_id() -> str:
    """``FLEET_CLIENT_ID``, else one durable id per user and host (its subscription collects results)."""
    explicit = os.environ.get(CLIENT_ID_VARIABLE)
    if explicit:
        return explicit
    user = re.sub(r"[^a-z0-9-]", "-", getpass.getuser().lower())[:24].strip("-") or "user"
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"cli-{user}-{host}"


def _analyses(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    if not names:
        raise ClientInputInvalid("--analyses needs at least one name")
    return names


def _pages(raw: str | None) -> tuple[int, ...] | None:
    """``--pages 1,3`` -> (1, 3); the numbers' rule (INVALID_PAGES) is the worker's parser's, in submit."""
    if raw is None:
        return None
    try:
        return tuple(int(part) for part in raw.split(","))
    except ValueError:
        message = f"--pages {raw[:40]!r} must be a comma list of page numbers, e.g. 1,3"
        raise ClientInputInvalid(message) from None


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map errors to exit codes in one place: bad input 2, everything else that went wrong 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ClientInputInvalid as exc:
            return _fail(args, exc, EXIT_USAGE)
        except PublishIncomplete as exc:
            if args.json:
                output.print_json(
                    {
                        "error": output.error_json(exc),
                        "published": exc.published,
                        "unpublished": exc.unpublished,
                    }
                )
            else:
                output.err(f"error: {exc}")
                output.err("published: " + (" ".join(exc.published) or "(none)"))
                output.err("not published: " + " ".join(exc.unpublished))
            return EXIT_FAILED
        except FleetError as exc:
            return _fail(args, exc, EXIT_FAILED)
        except Exception as exc:
            if not type(exc).__module__.startswith("google."):
                raise
            # a Google API error (unreachable emulator, permission, missing topic): say what, not a traceback
            output.err(f"error: {type(exc).__name__}: {exc}")
            return EXIT_FAILED

    return run


def _usage(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    output.err(f"{parser.prog}: error: {message}")
    return EXIT_USAGE


def _fail(args: argparse.Namespace, exc: FleetError, code: int) -> int:
    if getattr(args, "json", False):
        output.print_json({"error": output.error_json(exc)})
    else:
        output.err(f"error: {exc}")
    return code


__all__: Sequence[str] = ("default_client_id", "register")
