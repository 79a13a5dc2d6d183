"""Triton outages: ``Health`` as inference calls see it, and the ``OutageMonitor`` that waits one out.

An outage starts at the first batch that fails with a transient error. While it lasts, pulling stops
(``Health.recovered``), queued tensors fail at once (their jobs are given back), and the monitor probes
the model's readiness with backoff; past ``outage_exit_s`` it gives up so the process exits non-zero and
is restarted (exit code ``TRITON_OUTAGE``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from worker.runtime import policy
from worker.runtime.flusher import Background
from worker.runtime.telemetry import get_logger
from worker.shared import errors

log = get_logger(__name__)


class Readiness(Protocol):
    """What the monitor polls: the models' readiness (``models.ModelSet``: all of them)."""

    async def ready(self) -> bool: ...


#: How often the monitor looks at ``Health`` while Triton is up.
HEALTHY_CHECK_S = 0.5


class Health:
    """Triton health as seen by inference calls: an outage starts at the first failed batch."""

    def __init__(self) -> None:
        self.outage_since: float | None = None
        self.recovered = asyncio.Event()
        self.recovered.set()

    @property
    def outage(self) -> bool:
        return self.outage_since is not None

    def inference_failed(self) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self.recovered.clear()

    def inference_ok(self) -> None:
        if self.outage_since is not None:
            self.outage_since = None
            self.recovered.set()


class OutageMonitor(Background):
    """During an outage: fails queued work, probes readiness, calls ``on_give_up`` past the limit."""

    def __init__(
        self,
        health: Health,
        model: Readiness,
        *,
        fail_queued: Callable[[errors.FleetError], None],
        outage_exit_s: float,
        on_give_up: Callable[[], None],
    ) -> None:
        self._health = health
        self._model = model
        self._fail_queued = fail_queued
        self._outage_exit_s = outage_exit_s
        self._on_give_up = on_give_up

    async def run(self) -> None:
        attempt = 0
        while True:
            if not self._health.outage:
                attempt = 0
                await asyncio.sleep(HEALTHY_CHECK_S)
                continue
            self._fail_queued(errors.InferenceUnavailable("triton outage"))
            down_s = time.monotonic() - (self._health.outage_since or time.monotonic())
            if down_s >= self._outage_exit_s:
                log.error("triton outage too long; exiting for a restart", seconds=round(down_s, 1))
                self._on_give_up()
                return
            if await self._model.ready():
                log.info("triton recovered", seconds=round(down_s, 1))
                self._health.inference_ok()
                continue
            attempt += 1
            await asyncio.sleep(policy.backoff_s(attempt, base_s=0.25, cap_s=5.0))
