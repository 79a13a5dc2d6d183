"""Drain triggers: SIGTERM/SIGINT and the GCE metadata server's ``instance/preempted`` flag.

Spot VMs get ~30 s between the preemption notice and hard-off; the flag turns ``TRUE`` at the notice. It is
watched with ``?wait_for_change=true`` (a hanging GET that returns when the value changes) on one daemon
thread, so no polling; the base URL comes from settings (``FLEET_METADATA_URL``) so tests serve it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from worker.runtime import policy
from worker.runtime.telemetry import get_logger

log = get_logger("worker.runtime.preemption")
HANG_TIMEOUT_S = 300  # the metadata server's own wait limit; the socket timeout sits above it


def install_signal_handlers(loop: asyncio.AbstractEventLoop, drain: Callable[[str], None]) -> None:
    """The one place signal handlers are installed: SIGTERM and SIGINT start a drain."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, drain, signal.Signals(signum).name.lower())


class PreemptionWatcher:
    """Calls ``on_preempted`` (from the event loop) once, when ``instance/preempted`` reads TRUE."""

    def __init__(
        self, base_url: str, loop: asyncio.AbstractEventLoop, on_preempted: Callable[[str], None]
    ) -> None:
        self._url = base_url.rstrip("/") + "/instance/preempted"
        self._loop = loop
        self._on_preempted = on_preempted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._thread = threading.Thread(target=self._watch, name="preemption-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _get(self, etag: str | None) -> tuple[str, str | None]:
        url = self._url
        if etag is not None:
            url += f"?wait_for_change=true&timeout_sec={HANG_TIMEOUT_S}&last_etag={etag}"
        request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(request, timeout=HANG_TIMEOUT_S + 10) as response:
            body = response.read(64).decode("ascii", "replace").strip()
            return body, response.headers.get("ETag")

    def _watch(self) -> None:
        etag: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                value, new_etag = self._get(etag)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                failures += 1
                if failures == 1:
                    log.info(
                        "metadata server unavailable; will retry", reason=type(exc).__name__, url=self._url
                    )
                self._stop.wait(policy.backoff_s(failures, base_s=1.0, cap_s=30.0))
                etag = None
                continue
            failures = 0
            if value.upper() == "TRUE":
                log.warning("instance preempted", reason="metadata")
                self._loop.call_soon_threadsafe(self._on_preempted, "preempted")
                return
            # Without an ETag the server cannot hang; an empty string still asks it to wait for a change.
            if new_etag is None:
                self._stop.wait(1.0)  # a server that cannot hang must not make this a busy loop
            etag = new_etag or ""
