"""``python -m worker.dev.harness gcs|profile|watchdog``: the harness's helper processes.

- ``gcs --ready-file F``: the GCS emulator with a write log (``gcs_write_log``), for ``PrivateStack``;
- ``profile --out F -- ARGS...``: ``fleet ARGS...`` under the all-threads sampler; with ``--cprofile``
  under cProfile on the main thread's CPU clock (``cpu_profile``; what ``bench --profile`` runs);
- ``watchdog --parent PID MARKER``: kills a dead harness's leftovers (``PrivateStack.start``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from worker.dev.harness.cpu_profile import profile_main_thread
from worker.dev.harness.gcs_write_log import serve_gcs_with_write_log
from worker.dev.harness.processes import watchdog
from worker.dev.harness.profiler import profile_worker


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the sub-command and run it; returns its exit code."""
    parser = argparse.ArgumentParser(prog="python -m worker.dev.harness")
    sub = parser.add_subparsers(dest="command", required=True)
    gcs = sub.add_parser("gcs", help="serve the GCS emulator with a write log")
    gcs.add_argument("--ready-file")
    prof = sub.add_parser("profile", help="run `fleet ARGS...` under the all-threads sampler")
    prof.add_argument("--out", required=True, help="write the report here")
    prof.add_argument("--cprofile", action="store_true", help="cProfile the main thread instead")
    prof.add_argument("fleet_args", nargs=argparse.REMAINDER)
    dog = sub.add_parser("watchdog", help="kill a dead harness's leftovers")
    dog.add_argument("--parent", type=int, required=True)
    dog.add_argument("marker", help="kill processes whose command line contains this (a work directory)")
    args = parser.parse_args(argv)
    if args.command == "watchdog":
        return watchdog(args.parent, args.marker)
    if args.command == "profile":
        fleet_args = [a for a in args.fleet_args if a != "--"]
        if args.cprofile:
            return profile_main_thread(fleet_args, args.out)
        return profile_worker(fleet_args, args.out)
    return serve_gcs_with_write_log(args.ready_file)


if __name__ == "__main__":
    sys.exit(main())
