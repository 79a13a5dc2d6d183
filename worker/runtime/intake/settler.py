"""The one owner of acks, nacks and deadline changes: decisions collected, applied in batches, retried."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from worker.runtime import policy
from worker.runtime.flusher import IntervalFlusher
from worker.runtime.intake.decisions import Ack, Decision, Nack
from worker.runtime.telemetry import get_logger
from worker.shared import errors

if TYPE_CHECKING:
    from worker.runtime.intake.pubsub_source import JobSource

log = get_logger("worker.runtime.intake")

MAX_IDS_PER_REQUEST = 1000  # Pub/Sub request size limit is 512 KB; ack ids are ~150-200 bytes.


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Settler(IntervalFlusher):
    """The one owner of acks, nacks and deadline changes: collects decisions, applies them in batches."""

    def __init__(self, source: JobSource, *, interval_s: float, attempts: int = 3) -> None:
        super().__init__(interval_s=interval_s)
        self._source = source
        self._attempts = attempts
        self._pending: list[Decision] = []

    def submit(self, decision: Decision) -> None:
        """Queue one decision; it is applied with the others of its interval."""
        self._pending.append(decision)
        self._signal()

    def submit_many(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            self.submit(decision)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        acks: dict[str, list[str]] = defaultdict(list)
        deadlines: dict[tuple[str, int], list[str]] = defaultdict(list)
        for decision in pending:
            if isinstance(decision, Ack):
                acks[decision.subscription].append(decision.ack_id)
            elif isinstance(decision, Nack):
                deadlines[(decision.subscription, 0)].append(decision.ack_id)
            else:
                deadlines[(decision.subscription, decision.seconds)].append(decision.ack_id)
        calls = [
            self._apply_ack(sub, chunk)
            for sub, ids in acks.items()
            for chunk in _chunks(ids, MAX_IDS_PER_REQUEST)
        ]
        calls += [
            self._apply_deadline(sub, chunk, seconds)
            for (sub, seconds), ids in deadlines.items()
            for chunk in _chunks(ids, MAX_IDS_PER_REQUEST)
        ]
        await asyncio.gather(*calls)

    async def _apply_ack(self, subscription: str, ack_ids: list[str]) -> None:
        await self._retry(lambda: self._source.acknowledge(subscription, ack_ids), "acknowledge")

    async def _apply_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None:
        await self._retry(lambda: self._source.modify_ack_deadline(subscription, ack_ids, seconds), "modack")

    async def _retry(self, call: Callable[[], Awaitable[None]], what: str) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                await call()
                return
            except errors.FleetError as exc:
                if attempt == self._attempts:
                    # The message will be redelivered; the duplicate path answers it without rework.
                    log.warning("settle failed", operation=what, error_code=exc.code)
                    return
                await asyncio.sleep(policy.backoff_s(attempt, base_s=0.1, cap_s=1.0))
