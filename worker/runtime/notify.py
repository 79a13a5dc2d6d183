"""Result notifications: batched publishes to the results topic; a caller awaits its message's acceptance.

The pipeline acks a job only after ``publish`` returns (the notification is accepted by Pub/Sub), so a
crash between write and publish leads to a redelivery whose duplicate path re-publishes. Publishes from
many jobs are gathered for ``interval_s`` into one Publish request (one RPC, one serialisation).
"""

from __future__ import annotations

import asyncio

import grpc
from google.pubsub_v1 import types as pubsub_types

from worker.runtime.flusher import IntervalFlusher
from worker.runtime.intake import rpc_code
from worker.shared import errors
from worker.shared.contracts import INTERACTIVE, Notification

MAX_MESSAGES_PER_PUBLISH = 500
_MessagePb = pubsub_types.PubsubMessage.pb()
_PublishRequestPb = pubsub_types.PublishRequest.pb()
_PublishResponsePb = pubsub_types.PublishResponse.pb()


class PubSubNotifier(IntervalFlusher):
    """``Notifier`` port over the Publisher API; batch notifications go out in one Publish per interval.

    Publish is called on a plain gRPC stub with raw protobuf messages (``intake.pubsub_channel``; why:
    ``intake.PubSubSource``).
    """

    def __init__(
        self, channel: grpc.aio.Channel, topic_path: str, *, interval_s: float, timeout_s: float
    ) -> None:
        super().__init__(interval_s=interval_s)
        self._publish = channel.unary_unary(
            "/google.pubsub.v1.Publisher/Publish",
            request_serializer=_PublishRequestPb.SerializeToString,
            response_deserializer=_PublishResponsePb.FromString,
        )
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
        request = _PublishRequestPb(topic=self._topic, messages=[message for message, _ in batch])
        try:
            response = await self._publish(request, timeout=self._timeout_s)
        except Exception as exc:  # anything: an escaped error would end the flusher, leaving every
            # later publish (and its job) waiting for an answer that never comes
            code = rpc_code(exc) if isinstance(exc, grpc.RpcError) else type(exc).__name__
            failure = errors.PubSubUnavailable(f"publish: {code}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        ids = list(response.message_ids)
        for index, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(ids[index] if index < len(ids) else "")
