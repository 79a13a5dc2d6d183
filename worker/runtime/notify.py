"""Result notifications: batched publishes to the results topic; a caller awaits its message's acceptance.

The pipeline acks a job only after ``publish`` returns (the notification is accepted by Pub/Sub), so a
crash between write and publish leads to a redelivery whose duplicate path re-publishes. Publishes from
many jobs are gathered for ``interval_s`` into one Publish request (one RPC, one serialisation).
"""

from __future__ import annotations

import asyncio
import os

import grpc
from google.api_core import exceptions as gexc
from google.pubsub_v1 import types as pubsub_types
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports.grpc_asyncio import PublisherGrpcAsyncIOTransport

from worker.runtime.flusher import IntervalFlusher
from worker.shared import errors
from worker.shared.contracts import INTERACTIVE, Notification

MAX_MESSAGES_PER_PUBLISH = 500
_MessagePb = pubsub_types.PubsubMessage.pb()
_PublishRequestPb = pubsub_types.PublishRequest.pb()


def publisher_client() -> PublisherAsyncClient:
    """An asyncio Publisher client; plaintext to ``PUBSUB_EMULATOR_HOST`` when set."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if host:
        return PublisherAsyncClient(
            transport=PublisherGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(host))
        )
    return PublisherAsyncClient()


class PubSubNotifier(IntervalFlusher):
    """``Notifier`` port over the Publisher API; batch notifications go out in one Publish per interval."""

    def __init__(
        self, client: PublisherAsyncClient, topic_path: str, *, interval_s: float, timeout_s: float
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._client = client
        self._topic = topic_path
        self._timeout_s = timeout_s
        self._pending: list[tuple[object, asyncio.Future[str]]] = []

    async def publish(self, notification: Notification) -> str:
        """Queue one notification; returns its message id once Pub/Sub accepted it.

        An interactive notification is sent at once in a Publish of its own: it waits neither for the
        batching window nor for a batch Publish already in flight.
        """
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        message = _MessagePb(data=notification.data, attributes=notification.attributes)
        if notification.attributes.get("priority") == INTERACTIVE:
            await self._send([(message, future)])
        else:
            self._pending.append((message, future))
            self._signal()
        return await future

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = (
                self._pending[:MAX_MESSAGES_PER_PUBLISH],
                self._pending[MAX_MESSAGES_PER_PUBLISH:],
            )
            await self._send(batch)

    async def _send(self, batch: list[tuple[object, asyncio.Future[str]]]) -> None:
        request = pubsub_types.PublishRequest.wrap(
            _PublishRequestPb(topic=self._topic, messages=[message for message, _ in batch])
        )
        try:
            response = await self._client.publish(request=request, retry=None, timeout=self._timeout_s)
        except (gexc.GoogleAPICallError, grpc.RpcError, OSError) as exc:
            failure = errors.PubSubUnavailable(f"publish: {getattr(exc, 'code', type(exc).__name__)}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        ids = list(pubsub_types.PublishResponse.pb(response).message_ids)
        for index, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(ids[index] if index < len(ids) else "")
