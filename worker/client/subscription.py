"""This client's own results subscription: a filter on its ``client_id``, created before the first publish.

A durable client id keeps its subscription across runs (``fleet results`` reads it later); an ephemeral one
deletes it on close. Either way it carries an expiration policy, so one left behind by a crash is collected
by Pub/Sub.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from google.api_core import exceptions as gexc

from worker.client.connections import Connections
from worker.client.ids import CLIENT_ID_ATTRIBUTE
from worker.client.outcomes import outcome_from_notification
from worker.client.records import JobOutcome
from worker.client.settings import ClientSettings

log = logging.getLogger(__name__)

PULL_BATCH = 1000
#: The wait of one pull; never cut short (see ``ResultsSubscription.pull``).
PULL_TIMEOUT_S = 5.0
SUBSCRIPTION_TTL_S = 24 * 3600  # the shortest expiration Pub/Sub accepts
SUBSCRIPTION_ACK_DEADLINE_S = 60
#: An empty pull answered faster than this came back at once (an emulator may); wait before the next.
EMPTY_PULL_FAST_S = 0.05
EMPTY_PULL_PAUSE_S = 0.2

#: One pulled notification: its ack id and its outcome (None when it names no usable job).
Pulled = tuple[str, JobOutcome | None]


class ResultsSubscription:
    """Create, pull, ack/nack and delete ``<results topic>-client-<client id>``."""

    def __init__(
        self, settings: ClientSettings, connections: Connections, client_id: str, *, ephemeral: bool
    ) -> None:
        self._settings = settings
        self._connections = connections
        self.client_id = client_id
        self.ephemeral = ephemeral
        self.id = f"{settings.results_topic}-client-{client_id}"
        self.path = settings.subscription_path(self.id)

    def create(self) -> None:
        """Create the filtered subscription; a durable client id finds and reuses its own."""
        request = {
            "name": self.path,
            "topic": self._settings.topic_path(self._settings.results_topic),
            "filter": f'attributes.{CLIENT_ID_ATTRIBUTE} = "{self.client_id}"',
            "ack_deadline_seconds": SUBSCRIPTION_ACK_DEADLINE_S,
            "expiration_policy": {"ttl": {"seconds": SUBSCRIPTION_TTL_S}},
        }
        with contextlib.suppress(gexc.AlreadyExists):
            self._connections.subscriber().create_subscription(request=request)

    def delete_if_ephemeral(self) -> None:
        """Delete an ephemeral subscription; one that cannot be deleted is left to its expiration policy."""
        if not self.ephemeral:
            return
        try:
            self._connections.subscriber().delete_subscription(request={"subscription": self.path})
        except gexc.NotFound:
            pass
        except gexc.GoogleAPICallError as exc:
            log.warning("could not delete subscription %s: %s", self.path, exc)

    def pull(self, timeout_s: float) -> list[Pulled]:
        """One pull: (ack id, parsed notification or None when it names no job) per message."""
        started = time.monotonic()
        try:
            response = self._connections.subscriber().pull(
                request={"subscription": self.path, "max_messages": PULL_BATCH},
                timeout=max(timeout_s, 0.1),
            )
        except (gexc.DeadlineExceeded, gexc.RetryError, gexc.ServiceUnavailable):
            return []
        if not response.received_messages and time.monotonic() - started < EMPTY_PULL_FAST_S:
            time.sleep(EMPTY_PULL_PAUSE_S)  # do not spin on an emulator's instant empty answers
        return [
            (r.ack_id, outcome_from_notification(r.message.data, dict(r.message.attributes)))
            for r in response.received_messages
        ]

    def settle(self, ack_ids: Sequence[str], nack_ids: Sequence[str]) -> None:
        """Ack what was taken; hand the rest back at once (ack deadline 0)."""
        subscriber = self._connections.subscriber()
        if ack_ids:
            subscriber.acknowledge(request={"subscription": self.path, "ack_ids": list(ack_ids)})
        if nack_ids:
            subscriber.modify_ack_deadline(
                request={"subscription": self.path, "ack_ids": list(nack_ids), "ack_deadline_seconds": 0}
            )
