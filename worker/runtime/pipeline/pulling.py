"""Pulling both lanes at the worker's own pace: never more messages than free slots.

Two loops share the slots. The main loop polls (``return_immediately``) the interactive lane first,
then the batch lane, for exactly the free slots, pauses with hysteresis when the worker is full
(``policy.next_load_state``) and backs off while both lanes are empty. The interactive loop keeps one
long-poll Pull of one interactive message standing whenever a slot is free, and reserves that slot while
the Pull hangs, so an interactive job is leased the moment it is published and the two loops together
never lease more than the slots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from worker.runtime import policy
from worker.runtime.intake import JobSource
from worker.runtime.pipeline.dispatcher import Dispatcher
from worker.runtime.pipeline.outage import Health
from worker.runtime.settings import WorkerSettings
from worker.runtime.telemetry import get_logger
from worker.shared import errors
from worker.shared.contracts import Delivery

log = get_logger(__name__)
#: A long-poll Pull that comes back empty sooner than this waits the rest (a server that cannot hang).
MIN_LONG_POLL_S = 0.05
#: The shortest idle pause of the main loop; it doubles up to ``idle_poll_max_ms``.
MIN_IDLE_S = 0.005


class Puller:
    """Leases jobs into the ``Dispatcher`` until ``stopping`` is set; pauses during a Triton outage."""

    def __init__(
        self,
        settings: WorkerSettings,
        source: JobSource,
        dispatcher: Dispatcher,
        health: Health,
        *,
        stopping: asyncio.Event,
    ) -> None:
        self._s = settings
        self._source = source
        self._dispatcher = dispatcher
        self._health = health
        self._stopping = stopping
        self._reserved = 0  # slots promised to an outstanding interactive long-poll

    async def run(self) -> None:
        """Pull until stopping; returns once no Pull is outstanding."""
        pullers = [self._pull_loop()]
        if self._s.pipeline_slots > 1:
            # With a single slot the standing interactive Pull would hold it for ever and the batch
            # lane would never be pulled (the one-at-a-time baseline); the main loop then polls the
            # interactive lane first on its own.
            pullers.append(self._interactive_pull_loop())
        await asyncio.gather(*pullers)

    def _taken(self) -> int:
        return self._dispatcher.in_flight + self._reserved

    async def _pull_loop(self) -> None:
        state = policy.LoadState()
        idle_s = 0.0
        while not self._stopping.is_set():
            if self._health.outage:
                await self._wait_any(self._health.recovered.wait())
                continue
            in_flight = self._taken()
            state = policy.next_load_state(state, in_flight=in_flight, slots=self._s.pipeline_slots)
            got = 0
            if not state.paused:
                free = policy.pull_size(in_flight=in_flight, slots=self._s.pipeline_slots)
                try:
                    got = await self._pull(self._s.interactive_subscription, free)
                    if got < free and not self._stopping.is_set():
                        got += await self._pull(self._s.batch_subscription, free - got)
                except errors.TransientError as exc:
                    log.warning("pull failed", error_code=exc.code)
                    idle_s = self._s.idle_poll_max_ms / 1000.0
            if got:
                idle_s = 0.0
                continue
            if state.paused:
                await self._wait_for_slot()
            else:
                # Both lanes empty: back off from 5 ms up to idle_poll_max_ms; a job finishing or a
                # drain request wakes the loop early.
                idle_s = min(self._s.idle_poll_max_ms / 1000.0, max(MIN_IDLE_S, idle_s * 2))
                await self._wait_any(asyncio.sleep(idle_s))

    async def _interactive_pull_loop(self) -> None:
        """A standing long-poll Pull of one interactive message whenever a slot is free.

        The main loop polls with an idle backoff and, when every slot is busy, waits for the
        hysteresis; an interactive job must not wait for either.
        """
        while not self._stopping.is_set():
            if self._health.outage:
                await self._wait_any(self._health.recovered.wait())
                continue
            if self._taken() >= self._s.pipeline_slots:
                await self._wait_for_slot()
                continue
            began = time.monotonic()
            deliveries = await self._long_poll()
            if deliveries is None:
                return
            if deliveries:
                self._dispatcher.start(deliveries)
                continue
            rest = MIN_LONG_POLL_S - (time.monotonic() - began)
            if rest > 0:
                await self._wait_any(asyncio.sleep(rest))

    async def _long_poll(self) -> list[Delivery] | None:
        """One long-poll Pull on a reserved slot; None when a drain ended it (stop pulling)."""
        self._reserved += 1
        pull = asyncio.ensure_future(self._source.pull(self._s.interactive_subscription, 1, wait=True))
        try:
            await self._wait_any(asyncio.shield(pull))
            if not pull.done():
                pull.cancel()  # draining: a message leased meanwhile comes back after its deadline
                await asyncio.gather(pull, return_exceptions=True)
                return None
            return pull.result()
        except errors.TransientError as exc:
            log.warning("pull failed", error_code=exc.code)
            return []
        finally:
            self._reserved -= 1

    async def _wait_for_slot(self) -> None:
        self._dispatcher.slot_freed.clear()
        await self._wait_any(self._dispatcher.slot_freed.wait())

    async def _wait_any(self, awaitable: Awaitable[Any]) -> None:
        """Wait for ``awaitable`` or a drain request, whichever comes first."""
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()

    async def _pull(self, subscription: str, max_messages: int) -> int:
        if max_messages <= 0:
            return 0
        deliveries = await self._source.pull(subscription, max_messages)
        self._dispatcher.start(deliveries)
        return len(deliveries)
