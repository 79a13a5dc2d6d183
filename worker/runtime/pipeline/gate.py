"""``InteractiveGate``: whether interactive work is in this worker; batch work yields to it, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

#: How long batch work waits for interactive work to leave the worker before starting its next stage,
#: and the longest the Batcher holds batch requests back for it.
BATCH_YIELD_MAX_S = 0.5


class InteractiveGate:
    """Whether interactive work is in this worker; batch work yields to it, bounded.

    Pipeline stages wait at most ``max_wait_s`` per wait for it to clear (``yield_to``); the Batcher
    holds batch requests back for at most ``max_wait_s`` from when it became present, however jobs
    overlap (``hold_left_s``), so a stream of interactive jobs slows batch work but cannot stop it.
    """

    def __init__(self, max_wait_s: float = BATCH_YIELD_MAX_S) -> None:
        self._max_wait_s = max_wait_s
        self._present = 0
        self._since = 0.0
        self._clear = asyncio.Event()
        self._clear.set()
        self._on_leave: list[Callable[[], None]] = []

    def on_leave(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever an interactive job leaves (a held Batcher re-checks its queue)."""
        self._on_leave.append(callback)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """An interactive job is in the worker for the duration of the block."""
        if not self._present:
            self._since = time.monotonic()
            self._clear.clear()
        self._present += 1
        try:
            yield
        finally:
            self._present -= 1
            if not self._present:
                self._clear.set()
            for callback in self._on_leave:
                callback()

    async def yield_to(self) -> None:
        """Wait (at most ``max_wait_s``) until no interactive job is in the worker."""
        if self._present:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._max_wait_s):  # no task per wait, unlike wait_for
                    await self._clear.wait()

    def hold_left_s(self) -> float:
        """How much longer batch requests may be held back for the interactive work present now."""
        if not self._present:
            return 0.0
        return max(0.0, self._max_wait_s - (time.monotonic() - self._since))
