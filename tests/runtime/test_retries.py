"""``with_retries`` (worker/runtime/pipeline/retries.py): bounded retries of transient errors only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from worker.runtime.pipeline import retries
from worker.runtime.pipeline.retries import with_retries
from worker.shared import errors


class Flaky:
    """A call that raises each of ``failures`` in turn, then returns ``"ok"``; counts its calls."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """No real sleeping; the attempt numbers the backoff was asked for, in order."""
    asked: list[int] = []

    def backoff_s(attempt: int) -> float:
        asked.append(attempt)
        return 0.0

    monkeypatch.setattr(retries, "retry_backoff_s", backoff_s)
    return asked


def run(call: Callable[[], Awaitable[str]], attempts: int) -> str:
    return asyncio.run(with_retries(call, attempts=attempts))


def test_given_a_call_that_succeeds_then_it_runs_once(pauses: list[int]) -> None:
    call = Flaky()
    assert run(call, attempts=3) == "ok"
    assert call.calls == 1 and pauses == []


def test_given_transient_errors_then_it_retries_with_backoff_until_success(pauses: list[int]) -> None:
    # Given a call that fails transiently twice
    call = Flaky(errors.StorageUnavailable("503"), errors.PubSubUnavailable("UNAVAILABLE"))
    # When retried with three attempts
    result = run(call, attempts=3)
    # Then the third attempt's result comes back, after a pause for attempts 1 and 2
    assert result == "ok" and call.calls == 3
    assert pauses == [1, 2]


def test_given_only_transient_errors_then_the_last_one_propagates_after_the_attempts(
    pauses: list[int],
) -> None:
    last = errors.StorageUnavailable("third")
    call = Flaky(errors.StorageUnavailable("first"), errors.StorageUnavailable("second"), last)
    with pytest.raises(errors.StorageUnavailable) as raised:
        run(call, attempts=3)
    assert raised.value is last and call.calls == 3


def test_given_a_permanent_error_then_it_is_not_retried(pauses: list[int]) -> None:
    call = Flaky(errors.InputNotFound("missing"))
    with pytest.raises(errors.InputNotFound):
        run(call, attempts=3)
    assert call.calls == 1 and pauses == []


def test_given_an_unexpected_error_then_it_is_not_retried(pauses: list[int]) -> None:
    call = Flaky(ValueError("bug"))
    with pytest.raises(ValueError, match="bug"):
        run(call, attempts=3)
    assert call.calls == 1


def test_given_one_attempt_then_a_transient_error_propagates_at_once(pauses: list[int]) -> None:
    call = Flaky(errors.StorageUnavailable("503"))
    with pytest.raises(errors.StorageUnavailable):
        run(call, attempts=1)
    assert call.calls == 1 and pauses == []


def test_the_default_backoff_grows_and_is_capped() -> None:
    # Jitter is +-50 %: attempt 1 is within 0.1..0.3 s, and no pause exceeds 1.5 x the 3 s cap.
    assert all(0.1 <= retries.retry_backoff_s(1) <= 0.3 for _ in range(50))
    assert all(retries.retry_backoff_s(10) <= 4.5 for _ in range(50))
    assert all(retries.retry_backoff_s(10) >= 1.5 for _ in range(50))
