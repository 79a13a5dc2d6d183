"""The dead-letter hold subscription: peek at what is held, replay it under new job ids.

The dead-letter handler already wrote a DEAD_LETTERED result for each held job, and results are write-once,
so a replay runs as ``<job_id>.replay-N`` (attribute ``replay_of`` names the original). Client attributes are
kept, so the original client's subscription gets the new answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from typing import Any

from google.api_core import exceptions as gexc

from worker.client.connections import Connections
from worker.client.ids import replay_job_id
from worker.client.records import DeadLetter, Replay
from worker.client.result_objects import ResultObjects
from worker.client.settings import ClientSettings
from worker.client.subscription import PULL_TIMEOUT_S
from worker.shared import contracts

log = logging.getLogger(__name__)

REPLAY_OF_ATTRIBUTE = "replay_of"
# Attributes Pub/Sub adds to a dead-lettered message; a replay must not carry them back to the jobs topic.
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"


class DeadLetterHold:
    """Pulls from the hold subscription; hands back what it does not consume."""

    def __init__(self, settings: ClientSettings, connections: Connections, results: ResultObjects) -> None:
        self._settings = settings
        self._connections = connections
        self._results = results
        self._path = settings.subscription_path(settings.dead_letter_hold_subscription)

    def peek(self, *, max_messages: int = 100) -> list[DeadLetter]:
        """Pull, then hand every message straight back."""
        received = self._pull(max_messages)
        self._release([r.ack_id for r in received])
        return [dead_letter_from(r) for r in received]

    def replay(self, job_ids: Collection[str] | None = None, *, max_messages: int = 100) -> list[Replay]:
        """Republish held dead letters (all, or those whose job id is listed) and ack them."""
        chosen: list[tuple[Any, DeadLetter]] = []
        others: list[str] = []
        for message in self._pull(max_messages):
            letter = dead_letter_from(message)
            if job_ids is None or letter.job_id in job_ids:
                chosen.append((message, letter))
            else:
                others.append(message.ack_id)
        self._release(others)
        replays: list[Replay] = []
        done_ack_ids: list[str] = []
        failed_ack_ids: list[str] = []
        for message, letter in chosen:
            replay = self._republish(letter)
            (failed_ack_ids if replay is None else done_ack_ids).append(message.ack_id)
            if replay is not None:
                replays.append(replay)
        if done_ack_ids:
            self._connections.subscriber().acknowledge(
                request={"subscription": self._path, "ack_ids": done_ack_ids}
            )
        self._release(failed_ack_ids)
        return replays

    def _republish(self, letter: DeadLetter) -> Replay | None:
        """Publish one dead letter to the jobs topic; None when the publish failed (it stays held)."""
        data, attributes, new_id = self._replay_message(letter)
        topic = self._settings.topic_path(self._settings.jobs_topic)
        try:
            future = self._connections.publisher().publish(topic, data, **attributes)
            future.result(timeout=self._settings.publish_timeout_s)
        except Exception as exc:
            log.warning("replay of %s failed: %s", letter.message_id, exc)
            return None
        return Replay(letter.message_id, letter.job_id, new_id)

    def _replay_message(self, letter: DeadLetter) -> tuple[bytes, dict[str, str], str | None]:
        """The message to publish: under the first unused ``.replay-N`` id when the body names a job."""
        attributes = {
            k: v for k, v in letter.attributes.items() if not k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)
        }
        try:
            body = json.loads(letter.data)
        except (UnicodeDecodeError, ValueError):
            return letter.data, attributes, None
        if not isinstance(body, dict) or not contracts.valid_job_id(body.get("job_id")):
            return letter.data, attributes, None
        original = str(body["job_id"])
        new_id = self._unused_replay_id(original, attributes.get(contracts.NAMESPACE_ATTRIBUTE))
        body["job_id"] = new_id
        attributes["job_id"] = new_id
        attributes[REPLAY_OF_ATTRIBUTE] = original
        return contracts.encode(body), attributes, new_id

    def _unused_replay_id(self, original: str, namespace: str | None) -> str:
        """The first ``<original>.replay-N`` without a result, in the held job's own namespace.

        The held message's namespace, not this client's: the replay's result lands where its owner looks.
        """
        scope = namespace if contracts.valid_namespace(namespace) else None
        attempt = 1
        while True:
            candidate = replay_job_id(original, attempt)
            name = contracts.result_object_name(self._settings.results_prefix, candidate, "", scope)
            if self._results.fetch_object(name) is None:
                return candidate
            attempt += 1

    def _pull(self, max_messages: int) -> list[Any]:
        subscriber = self._connections.subscriber()
        received: list[Any] = []
        while len(received) < max_messages:
            try:
                response = subscriber.pull(
                    request={"subscription": self._path, "max_messages": max_messages - len(received)},
                    # Not shorter than the server's own wait: a pull abandoned by the client can still
                    # lease a message on the server, hiding it for an ack deadline.
                    timeout=PULL_TIMEOUT_S,
                )
            except (gexc.DeadlineExceeded, gexc.RetryError):
                break
            if not response.received_messages:
                break
            received.extend(response.received_messages)
        return received

    def _release(self, ack_ids: Sequence[str]) -> None:
        if ack_ids:
            self._connections.subscriber().modify_ack_deadline(
                request={"subscription": self._path, "ack_ids": list(ack_ids), "ack_deadline_seconds": 0}
            )


def dead_letter_from(received: Any) -> DeadLetter:
    """A pulled ``ReceivedMessage`` from the hold -> a ``DeadLetter`` (job id from attributes or body)."""
    message = received.message
    attributes = dict(message.attributes)
    job_id = attributes.get("job_id")
    if job_id is None:
        try:
            body = json.loads(message.data)
            job_id = body.get("job_id") if isinstance(body, dict) else None
        except (UnicodeDecodeError, ValueError):
            job_id = None
    attempts_attr = attributes.get(f"{DEAD_LETTER_ATTRIBUTE_PREFIX}SourceDeliveryCount")
    attempts = int(attempts_attr) if attempts_attr and attempts_attr.isdigit() else None
    publish_time = message.publish_time
    return DeadLetter(
        message_id=message.message_id,
        job_id=job_id if isinstance(job_id, str) else None,
        publish_time=publish_time.isoformat() if hasattr(publish_time, "isoformat") else str(publish_time),
        delivery_attempts=attempts or (received.delivery_attempt or None),
        attributes=attributes,
        data=bytes(message.data),
    )
