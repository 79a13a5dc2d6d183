"""The one way a local-stack service process announces itself and waits to be stopped."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any


def announce_and_wait(info: Mapping[str, Any], ready_file: str | None, *, echo: bool = True) -> None:
    """Write ``info`` (ports, pid) to ``ready_file`` atomically and to stdout, then block until SIGTERM or
    SIGINT. The caller stops its servers after this returns."""
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    if ready_file:
        # Written then renamed, so a reader polling for the file never sees half of it.
        with open(ready_file + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(dict(info), handle)
        os.replace(ready_file + ".tmp", ready_file)
    if echo:
        sys.stdout.write(json.dumps(dict(info)) + "\n")
        sys.stdout.flush()
    while not stopped.wait(0.5):
        pass
