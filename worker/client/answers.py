"""Answers for this client's jobs: from its notifications, and from result objects where none came.

Notifications are the fast path; the result object is the truth. ``wait`` therefore reads result objects
for jobs this client did not publish (their notifications went elsewhere or came before the subscription)
and again whenever answers stop arriving for a while, so a job that is answered never makes it hang.
For a job this client submitted, a result object counts only if it answers that job (``JobIdentity``):
a job id that another job already used is answered by the worker's JOB_ID_CONFLICT, never by the other
job's result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence

from worker.client.prepare import PreparedJob
from worker.client.records import STATUS_PENDING, JobIdentity, JobOutcome
from worker.client.result_objects import ResultObjects
from worker.client.subscription import PULL_TIMEOUT_S, ResultsSubscription

OutcomeCallback = Callable[[JobOutcome], None]

SWEEP_AFTER_QUIET_S = 10.0  # read result objects of pending jobs after this long without an answer
SWEEP_MAX_INTERVAL_S = 60.0  # the quiet period doubles after each sweep that found nothing, up to this


class _Waiting:
    """The jobs one ``wait`` still waits for; tells the caller's callback of each answer once."""

    def __init__(self, pending: set[str], on_answer: OutcomeCallback | None) -> None:
        self.pending = pending
        self._on_answer = on_answer

    def settle(self, outcomes: Iterable[JobOutcome]) -> int:
        """Count (and report) the outcomes that answer a pending job."""
        settled = 0
        for outcome in outcomes:
            if outcome.job_id in self.pending:
                self.pending.discard(outcome.job_id)
                settled += 1
                if self._on_answer is not None:
                    self._on_answer(outcome)
        return settled


class Answers:
    """Every answer this client has seen, and the ways to wait for more."""

    def __init__(
        self,
        subscription: ResultsSubscription,
        results: ResultObjects,
        published: Collection[str],
        message_ids: Mapping[str, str],
    ) -> None:
        self._subscription = subscription
        self._results = results
        self._published = published  # job ids this client published: their notifications come here
        self._message_ids = message_ids  # job id -> message id of its latest publish
        self._identities: dict[str, JobIdentity] = {}  # the jobs this client was asked to submit
        self._outcomes: dict[str, JobOutcome] = {}

    def expect(self, jobs: Sequence[PreparedJob]) -> None:
        """Jobs about to be submitted: an answer counts only if it answers them; earlier answers are dropped.

        Dropping matters when one client submits a job id twice with different bodies: the first job's
        answer must not be taken for the second's.
        """
        for job in jobs:
            self._identities[job.job_id] = job.identity
            self._outcomes.pop(job.job_id, None)

    def lookup(self, job_ids: Sequence[str]) -> dict[str, JobOutcome]:
        """Read result objects for ``job_ids``; returns (and remembers) the answered ones.

        A job this client was asked to submit is answered only by a result that answers it; any other job
        id by whatever is stored under it.
        """
        found = self._results.answered(job_ids, self._identities, self._message_ids)
        self._outcomes.update(found)
        return found

    def wait(
        self, job_ids: Iterable[str], timeout_s: float, *, on_answer: OutcomeCallback | None = None
    ) -> dict[str, JobOutcome]:
        """Block until every job is answered or ``timeout_s`` passes; the rest come back ``pending``."""
        order = list(dict.fromkeys(job_ids))
        waiting = _Waiting({job_id for job_id in order if job_id not in self._outcomes}, on_answer)
        deadline = time.monotonic() + timeout_s
        for job_id in order:
            if job_id not in waiting.pending and on_answer is not None:
                on_answer(self._outcomes[job_id])
        unknown = [job_id for job_id in waiting.pending if job_id not in self._published]
        waiting.settle(self.lookup(unknown).values())
        self._follow(waiting, deadline)
        return {job_id: self._outcomes.get(job_id, JobOutcome(job_id, STATUS_PENDING)) for job_id in order}

    def _follow(self, waiting: _Waiting, deadline: float) -> None:
        """Pull notifications until nothing is pending or the deadline; sweep GCS when they stop coming."""
        last_answer = time.monotonic()
        quiet_s = SWEEP_AFTER_QUIET_S
        while waiting.pending and (remaining := deadline - time.monotonic()) > 0:
            settled = waiting.settle(self._pull_outcomes(min(remaining, PULL_TIMEOUT_S)))
            now = time.monotonic()
            if settled:
                last_answer, quiet_s = now, SWEEP_AFTER_QUIET_S
            elif waiting.pending and now - last_answer >= quiet_s:
                waiting.settle(self.lookup(sorted(waiting.pending)).values())
                last_answer, quiet_s = now, min(quiet_s * 2, SWEEP_MAX_INTERVAL_S)

    def _pull_outcomes(self, timeout_s: float) -> list[JobOutcome]:
        """One pull; every message is remembered and acked at once. Returns the answers not seen before."""
        batch = self._subscription.pull(timeout_s)
        fresh: list[JobOutcome] = []
        for _, outcome in batch:
            if outcome is not None and self._answers_ours(outcome):
                if outcome.job_id not in self._outcomes:
                    fresh.append(outcome)
                self._outcomes[outcome.job_id] = outcome
        self._subscription.settle([ack_id for ack_id, _ in batch], [])
        return fresh

    def _answers_ours(self, outcome: JobOutcome) -> bool:
        """False for a notification that names another request than the job this client submitted under
        that id (a stale one, of an earlier job that used the same job_id): it is acked and ignored."""
        identity = self._identities.get(outcome.job_id)
        return identity is None or outcome.fingerprint is None or identity.named_by(outcome.fingerprint)

    def stream(
        self, *, idle_timeout_s: float | None = None, timeout_s: float | None = None
    ) -> Generator[JobOutcome, None, None]:
        """Notifications for this client's jobs, as they arrive, each once (see ``FleetClient.results``)."""
        start = last = time.monotonic()
        while True:
            now = time.monotonic()
            if timeout_s is not None and now - start >= timeout_s:
                return
            if idle_timeout_s is not None and now - last >= idle_timeout_s:
                return
            # Always the full pull wait, even near the idle limit (overshooting it by up to PULL_TIMEOUT_S):
            # a pull the client abandons early can still lease a notification on the server, which would
            # then reach this durable subscription again only after the ack deadline.
            batch = self._subscription.pull(PULL_TIMEOUT_S)
            if batch:
                last = time.monotonic()
            taken: list[str] = []
            try:
                for ack_id, outcome in batch:
                    taken.append(ack_id)  # before the yield: a consumer that stops here has taken it
                    if (
                        outcome is not None
                        and outcome.job_id not in self._outcomes
                        and self._answers_ours(outcome)
                    ):
                        self._outcomes[outcome.job_id] = outcome
                        yield outcome
            finally:
                self._subscription.settle(taken, [ack_id for ack_id, _ in batch[len(taken) :]])
