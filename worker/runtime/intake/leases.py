"""The one lease owner: the deadlines of every held message renewed in batches while their jobs run."""

from __future__ import annotations

import asyncio
import time

from worker.runtime import policy
from worker.runtime.flusher import Background
from worker.runtime.intake.decisions import Extend
from worker.runtime.intake.settler import Settler
from worker.shared.contracts import Delivery


class Leases(Background):
    """The one lease owner: renews deadlines of every held message in batches while jobs run.

    Renewals go through the ``Settler`` (one modifyAckDeadline per subscription and deadline), every
    third of the ack deadline, until a message has been held ``max_processing_s`` (then the job's own
    timeout answers it).
    """

    def __init__(self, settler: Settler, *, ack_deadline_s: int, max_processing_s: float) -> None:
        self._settler = settler
        self._ack_deadline_s = ack_deadline_s
        self._max_processing_s = max_processing_s
        self._held: dict[str, tuple[str, float]] = {}

    def hold(self, delivery: Delivery) -> None:
        """Renew this message's lease from now on, until ``release``."""
        self._held[delivery.ack_id] = (delivery.subscription, time.monotonic())

    def release(self, ack_id: str) -> None:
        self._held.pop(ack_id, None)

    def held_ids(self) -> list[tuple[str, str]]:
        """(subscription, ack id) of every message still held: what a drain gives back."""
        return [(sub, ack_id) for ack_id, (sub, _) in self._held.items()]

    def renewals(self, now: float) -> list[Extend]:
        """Extensions due now (pure given ``now``): one per held message still within its budget."""
        out = []
        for ack_id, (subscription, since) in self._held.items():
            seconds = policy.lease_extension_s(
                held_s=now - since,
                max_processing_s=self._max_processing_s,
                ack_deadline_s=self._ack_deadline_s,
            )
            if seconds > 0:
                out.append(Extend(subscription, ack_id, seconds))
        return out

    async def run(self) -> None:
        interval = policy.extend_interval_s(ack_deadline_s=self._ack_deadline_s)
        while True:
            await asyncio.sleep(interval)
            self._settler.submit_many(self.renewals(time.monotonic()))
