"""The Settler and the lease keeper (worker/runtime/intake/), with a small in-memory JobSource."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.runtime import intake, policy
from worker.runtime.intake import Ack, Extend, Leases, Nack, Settler
from worker.shared import errors
from worker.shared.contracts import Delivery

from .worker_fakes import delivery


class RecordingSource:
    """Records every settle request; ``failures`` makes that many calls raise PubSubUnavailable first."""

    def __init__(self, failures: int = 0) -> None:
        self.acks: list[tuple[str, list[str]]] = []
        self.deadlines: list[tuple[str, list[str], int]] = []
        self.calls = 0
        self.failures = failures

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise errors.PubSubUnavailable("fake UNAVAILABLE")

    async def acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        self._maybe_fail()
        self.acks.append((subscription, list(ack_ids)))

    async def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None:
        self._maybe_fail()
        self.deadlines.append((subscription, list(ack_ids), seconds))

    async def pull(self, subscription: str, max_messages: int, *, wait: bool = False) -> list[Delivery]:
        raise AssertionError("the settler never pulls")


def test_given_mixed_decisions_when_flushed_then_one_request_per_subscription_and_deadline() -> None:
    source = RecordingSource()
    settler = Settler(source, interval_s=0)
    # Given acks on two subscriptions, nacks and extensions of two lengths
    settler.submit_many(
        [
            Ack("a", "1"),
            Ack("b", "2"),
            Ack("a", "3"),
            Nack("a", "4"),
            Extend("a", "5", 60),
            Extend("a", "6", 60),
            Extend("a", "7", 30),
        ]
    )
    # When it flushes
    asyncio.run(settler.flush())
    # Then acks are grouped by subscription, a nack is a zero deadline, extensions are grouped by length
    assert sorted(source.acks) == [("a", ["1", "3"]), ("b", ["2"])]
    assert sorted(source.deadlines) == [("a", ["4"], 0), ("a", ["5", "6"], 60), ("a", ["7"], 30)]


def test_given_more_ids_than_one_request_takes_then_they_are_split() -> None:
    source = RecordingSource()
    settler = Settler(source, interval_s=0)
    # Given more acks than one Acknowledge request may carry
    count = intake.MAX_IDS_PER_REQUEST * 2 + 5
    settler.submit_many(Ack("a", str(i)) for i in range(count))
    # When flushed
    asyncio.run(settler.flush())
    # Then every id is acked once, in requests no larger than the limit
    sizes = [len(ids) for _, ids in source.acks]
    assert sizes == [intake.MAX_IDS_PER_REQUEST, intake.MAX_IDS_PER_REQUEST, 5]
    assert sorted(int(i) for _, ids in source.acks for i in ids) == list(range(count))


def test_given_nothing_pending_when_flushed_then_no_request() -> None:
    source = RecordingSource()
    asyncio.run(Settler(source, interval_s=0).flush())
    assert source.calls == 0


def test_given_a_transient_failure_then_the_request_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "backoff_s", lambda attempt, **_: 0.0)
    # Given a source whose first call fails
    source = RecordingSource(failures=1)
    settler = Settler(source, interval_s=0, attempts=3)
    settler.submit(Ack("a", "1"))
    # When flushed
    asyncio.run(settler.flush())
    # Then the second attempt acks it
    assert source.calls == 2 and source.acks == [("a", ["1"])]


def test_given_failures_past_the_attempts_then_the_settler_gives_up_without_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policy, "backoff_s", lambda attempt, **_: 0.0)
    # Given a source that fails every call
    source = RecordingSource(failures=100)
    settler = Settler(source, interval_s=0, attempts=3)
    settler.submit(Ack("a", "1"))
    # When flushed, then it stops after its attempts (the message is redelivered later) and does not raise
    asyncio.run(settler.flush())
    assert source.calls == 3 and source.acks == []


def test_when_started_then_decisions_are_applied_after_the_interval_and_close_flushes_the_rest() -> None:
    async def scenario() -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
        source = RecordingSource()
        settler = Settler(source, interval_s=0.01)
        settler.start()
        # Given a decision submitted to the running settler
        settler.submit(Ack("a", "1"))
        # When the interval passes, then it is applied without an explicit flush
        async with asyncio.timeout(2):
            while not source.acks:
                await asyncio.sleep(0.005)
        applied = list(source.acks)
        # and a decision submitted just before close is applied by close
        settler.submit(Ack("a", "2"))
        await settler.close()
        return applied, source.acks

    applied, after_close = asyncio.run(scenario())
    assert applied == [("a", ["1"])]
    assert after_close == [("a", ["1"]), ("a", ["2"])]


def test_a_settler_starts_once() -> None:
    async def scenario() -> None:
        settler = Settler(RecordingSource(), interval_s=0)
        settler.start()
        try:
            with pytest.raises(RuntimeError, match="already started"):
                settler.start()
        finally:
            await settler.close()

    asyncio.run(scenario())


# --- the lease keeper --------------------------------------------------------------------------------


class CollectingSettler:
    """Stands in for the Settler: keeps what the lease keeper submits."""

    def __init__(self) -> None:
        self.submitted: list[intake.Decision] = []

    def submit_many(self, decisions: list[intake.Decision]) -> None:
        self.submitted.extend(decisions)


def leases(settler: object, *, ack_deadline_s: int = 60, max_processing_s: float = 600.0) -> Leases:
    return Leases(settler, ack_deadline_s=ack_deadline_s, max_processing_s=max_processing_s)  # type: ignore[arg-type]


def test_given_held_messages_then_renewals_extend_each_by_the_ack_deadline() -> None:
    keeper = leases(CollectingSettler(), ack_deadline_s=60)
    # Given two held messages on two subscriptions
    first, second = (
        delivery({"job_id": "a"}),
        delivery({"job_id": "b"}, subscription="fleet-jobs-interactive"),
    )
    keeper.hold(first)
    keeper.hold(second)
    # When renewals are due a little later
    due = keeper.renewals(time.monotonic() + 5)
    # Then each gets one extension of the ack deadline on its own subscription
    assert sorted(due) == sorted(
        [Extend(first.subscription, first.ack_id, 60), Extend(second.subscription, second.ack_id, 60)]
    )


def test_given_a_message_near_its_processing_limit_then_it_is_extended_only_to_the_limit() -> None:
    keeper = leases(CollectingSettler(), ack_deadline_s=60, max_processing_s=100)
    held = delivery({"job_id": "a"})
    keeper.hold(held)
    now = time.monotonic()
    # When it has been held 80 s of its 100 s (+ one 10 s minimum deadline to answer the timeout)
    (extension,) = keeper.renewals(now + 80)
    # Then it is extended by what is left, not by the full ack deadline
    assert extension.seconds == 30
    # and once past the limit it is not extended at all
    assert keeper.renewals(now + 111) == []


def test_given_a_released_message_then_it_is_neither_renewed_nor_given_back() -> None:
    keeper = leases(CollectingSettler())
    kept, done = delivery({"job_id": "a"}), delivery({"job_id": "b"})
    keeper.hold(kept)
    keeper.hold(done)
    # When one job ends
    keeper.release(done.ack_id)
    keeper.release("never-held")  # releasing twice or unknown ids is harmless
    # Then only the other is renewed and would be given back by a drain
    assert [e.ack_id for e in keeper.renewals(time.monotonic())] == [kept.ack_id]
    assert keeper.held_ids() == [(kept.subscription, kept.ack_id)]


def test_when_running_then_renewals_are_submitted_to_the_settler_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policy, "extend_interval_s", lambda **_: 0.01)

    async def scenario() -> list[intake.Decision]:
        settler = CollectingSettler()
        keeper = leases(settler)
        # Given a held message and a running lease keeper
        held = delivery({"job_id": "a"})
        keeper.hold(held)
        keeper.start()
        # When a few intervals pass
        async with asyncio.timeout(2):
            while len(settler.submitted) < 2:
                await asyncio.sleep(0.005)
        await keeper.close()
        return settler.submitted

    submitted = asyncio.run(scenario())
    # Then every submission is an extension of that message
    assert {type(d) for d in submitted} == {Extend}
    assert {d.ack_id for d in submitted} == {submitted[0].ack_id}
