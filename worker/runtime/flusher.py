"""``IntervalFlusher``: gather work for an interval after the first item, then hand it on in one go.

The ``Settler`` (acks, nacks, deadline changes) and the ``PubSubNotifier`` (notification publishes) batch
their Pub/Sub calls the same way; each implements ``flush``.
"""

from __future__ import annotations

import asyncio


class IntervalFlusher:
    """``run()`` flushes ``interval_s`` after work is signalled with ``_signal()``, until ``close()``."""

    def __init__(self, *, interval_s: float) -> None:
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self._closed = False

    def _signal(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            if self._interval_s > 0:
                await asyncio.sleep(self._interval_s)
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await self.flush()

    async def flush(self) -> None:
        raise NotImplementedError
