"""The Google clients one ``FleetClient`` uses, created on first use and stopped on close.

Created lazily so a client that only reads results never builds a publisher (nor its batching thread).
Clients passed in (tests, or a caller sharing its own) are used as they are and never stopped here.
"""

from __future__ import annotations

from google.cloud import pubsub_v1, storage  # type: ignore[attr-defined]  # storage has no py.typed
from google.cloud.pubsub_v1 import types as pubsub_types

from worker.client.ports import Publisher, Storage, Subscriber

#: Bulk submits: up to 1,000 messages or 20 ms per Publish request.
BATCH_SETTINGS = pubsub_types.BatchSettings(max_messages=1000, max_bytes=4 * 1024 * 1024, max_latency=0.02)
# Interactive jobs are published on a publisher of their own whose window is 1 ms: the 20 ms window
# that makes bulk submits cheap was half of an interactive job's answer time on the local stack.
INTERACTIVE_BATCH_SETTINGS = pubsub_types.BatchSettings(
    max_messages=100, max_bytes=4 * 1024 * 1024, max_latency=0.001
)
#: Outstanding publishes a submit may hold before ``publish`` blocks.
FLOW_CONTROL = pubsub_types.PublishFlowControl(
    message_limit=20_000,
    byte_limit=64 * 1024 * 1024,
    limit_exceeded_behavior=pubsub_types.LimitExceededBehavior.BLOCK,
)


class Connections:
    """One bulk publisher, one interactive publisher, one subscriber and one storage client, on demand."""

    def __init__(
        self,
        project: str,
        *,
        publisher: Publisher | None = None,
        subscriber: Subscriber | None = None,
        storage_client: Storage | None = None,
    ) -> None:
        self._project = project
        self._publisher = publisher
        self._interactive_publisher = publisher  # an injected publisher serves both
        self._subscriber = subscriber
        self._storage = storage_client
        self._owned: list[object] = []  # what close() stops

    def publisher(self, *, interactive: bool = False) -> Publisher:
        """The publisher for a job of this lane (interactive jobs skip the bulk batching window)."""
        if interactive:
            if self._interactive_publisher is None:
                self._interactive_publisher = self._new_publisher(INTERACTIVE_BATCH_SETTINGS)
            return self._interactive_publisher
        if self._publisher is None:
            self._publisher = self._new_publisher(BATCH_SETTINGS)
        return self._publisher

    def subscriber(self) -> Subscriber:
        """The subscriber client (results subscription and the dead-letter hold)."""
        if self._subscriber is None:
            client = pubsub_v1.SubscriberClient()
            self._owned.append(client)
            self._subscriber = client
        return self._subscriber

    def storage(self) -> Storage:
        """The GCS client (uploads and result objects)."""
        if self._storage is None:
            self._storage = storage.Client(project=self._project)
        return self._storage

    def close(self) -> None:
        """Stop the Pub/Sub clients created here (the publishers flush what they still hold)."""
        for client in self._owned:
            stop = getattr(client, "stop", None) or getattr(client, "close", None)
            if stop is not None:
                stop()

    def _new_publisher(self, batch_settings: pubsub_types.BatchSettings) -> Publisher:
        publisher: Publisher = pubsub_v1.PublisherClient(
            batch_settings=batch_settings,
            publisher_options=pubsub_types.PublisherOptions(flow_control=FLOW_CONTROL),
        )
        self._owned.append(publisher)
        return publisher
