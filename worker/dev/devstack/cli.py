"""``fleet devstack up|down|status`` (also ``scripts/devstack``): the local stack from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from worker.shared import exit_codes

# `fleet` builds every sub-command's parser on each start (`fleet worker` included), so the stack, its
# emulators and the Google clients are imported only when a devstack command runs.


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--work-dir", default=None, help="where env, state and logs go (default: .devstack in the checkout)"
    )


def register(subparsers: Any) -> None:
    """Add ``devstack`` with ``up``, ``down`` and ``status`` to the ``fleet`` command."""
    parser = subparsers.add_parser("devstack", help="local stack: Pub/Sub + GCS emulators and tritonserver")
    commands = parser.add_subparsers(dest="devstack_command", metavar="up|down|status", required=True)
    up = commands.add_parser("up", help="start the stack in the background and write .devstack/env")
    _add_common(up)
    up.add_argument("--pubsub", choices=("builtin", "gcloud"), default="builtin", help="Pub/Sub emulator")
    up.add_argument(
        "--models",
        metavar="DIR",
        help="serve the model packages in DIR (default $FLEET_MODELS_DIR, else the bundled packages)",
    )
    up.add_argument("--model-repository", help="serve this ready Triton model repository instead")
    up.set_defaults(func=cmd_up)
    down = commands.add_parser("down", help="stop what `up` started (by pid)")
    _add_common(down)
    down.set_defaults(func=cmd_down)
    status = commands.add_parser("status", help="report the stack's services")
    _add_common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)


def cmd_up(args: argparse.Namespace) -> int:
    from google.api_core.exceptions import GoogleAPIError  # noqa: PLC0415

    from worker.dev.devstack import stack  # noqa: PLC0415
    from worker.dev.devstack.tritonserver import TritonError  # noqa: PLC0415

    started = time.monotonic()
    try:
        running = stack.up(
            work_dir=args.work_dir or stack.DEFAULT_WORK_DIR,
            pubsub=args.pubsub,
            model_repository=args.model_repository,
            models_dir=args.models,
        )
    except (stack.StackError, TritonError, GoogleAPIError, OSError) as exc:
        print(f"devstack up failed: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    elapsed = time.monotonic() - started
    print(f"devstack up in {elapsed:.1f} s; env written to {running.work_dir / 'env'}")
    for name, pid in running.pids.items():
        print(f"  {name:7s} pid {pid}")
    print(f"  pubsub  {running.env['PUBSUB_EMULATOR_HOST']}   gcs {running.env['STORAGE_EMULATOR_HOST']}")
    print(f"  triton  grpc {running.env['TRITON_GRPC_URL']}  http {running.env['TRITON_HTTP_URL']}")
    print(f"use it with:  source {running.work_dir / 'env'}")
    return exit_codes.OK


def cmd_down(args: argparse.Namespace) -> int:
    from worker.dev.devstack import stack  # noqa: PLC0415

    outcome = stack.down(work_dir=args.work_dir or stack.DEFAULT_WORK_DIR)
    if not outcome:
        print("devstack down: nothing was running")
    for name, what in outcome.items():
        print(f"devstack down: {name}: {what}")
    return exit_codes.OK


def cmd_status(args: argparse.Namespace) -> int:
    from worker.dev.devstack import stack  # noqa: PLC0415

    report = stack.status(work_dir=args.work_dir or stack.DEFAULT_WORK_DIR)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return exit_codes.OK if report["up"] else exit_codes.FAILED
    print(f"devstack is {'up' if report['up'] else 'down'}")
    for name, svc in report["services"].items():
        state = "running" if svc["running"] else "NOT running"
        port = f" port {svc['port']}" if svc.get("port") else ""
        print(f"  {name:7s} pid {svc['pid']} {state}{port}")
    if report["up"]:
        for key, value in report["env"].items():
            print(f"  {key}={value}")
    return exit_codes.OK if report["up"] else exit_codes.FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    subparsers = parser.add_subparsers(dest="command")
    register(subparsers)
    args = parser.parse_args(["devstack", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
