"""Background components: ``Background`` (one ``run()`` loop with its own start and close) and
``IntervalFlusher`` (gather work for an interval after the first item, then hand it on in one go).

Each long-lived part of the worker (the settler, the lease keeper, the batcher, the outage monitor, the
notifier) owns its start and its stop, as Celery's bootsteps do, so whoever wires them starts and closes
them without knowing how they work. The ``Settler`` (acks, nacks, deadline changes) and the
``PubSubNotifier`` (notification publishes) batch their Pub/Sub calls the same way; each implements
``flush``.
"""

from __future__ import annotations

import asyncio


class Background:
    """A component whose work is one ``run()`` loop: ``start()`` runs it as a task, ``close()`` ends it."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Run ``run()`` as a task (once); the caller may watch the task for a crash."""
        if self._task is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._task = asyncio.create_task(self.run(), name=type(self).__name__)
        return self._task

    async def run(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Cancel the loop and wait for it to end."""
        await self._join(cancel=True)

    async def _join(self, *, cancel: bool) -> None:
        task = self._task
        if task is None:
            return
        if cancel:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class IntervalFlusher(Background):
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
        """Let a flush under way finish (cancelling it would drop its work), then flush what is left."""
        self._closed = True
        self._wake.set()
        await self._join(cancel=False)
        await self.flush()

    async def flush(self) -> None:
        raise NotImplementedError
