"""The Pub/Sub Subscriber adapter: the ``JobSource`` port and its implementation over plain gRPC stubs.

Why unary Pull and not streaming pull: a streaming pull keeps a flow-controlled window of messages leased
to this process whether or not it can start them, so a second worker started during a backlog idles while
the first one hoards. A unary Pull asks for exactly the free pipeline slots.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

import grpc
from google.pubsub_v1 import types as pubsub_types

from worker.runtime import policy
from worker.shared import errors
from worker.shared.contracts import Delivery


class JobSource(Protocol):
    """The port the pipeline pulls from and settles to."""

    async def pull(self, subscription: str, max_messages: int, *, wait: bool = False) -> list[Delivery]:
        """Up to ``max_messages``; ``wait``: long-poll (the server holds the call until one arrives)."""
        ...

    async def acknowledge(self, subscription: str, ack_ids: list[str]) -> None: ...

    async def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None: ...


#: Pub/Sub's service, and the scopes its client library asks for.
PUBSUB_TARGET = "pubsub.googleapis.com:443"
PUBSUB_SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/pubsub")
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
_PullRequest = pubsub_types.PullRequest.pb()
_AckRequest = pubsub_types.AcknowledgeRequest.pb()
_ModAckRequest = pubsub_types.ModifyAckDeadlineRequest.pb()
_SUBSCRIBER = "/google.pubsub.v1.Subscriber/"


def pubsub_channel() -> grpc.aio.Channel:
    """One asyncio gRPC channel to Pub/Sub for the subscriber and the notifier: plaintext to
    ``PUBSUB_EMULATOR_HOST`` when set, else TLS with Application Default Credentials."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if host:
        return grpc.aio.insecure_channel(host, options=_CHANNEL_OPTIONS)
    from google.api_core import grpc_helpers_async  # noqa: PLC0415 (only production loads credentials)

    channel: grpc.aio.Channel = grpc_helpers_async.create_channel(
        PUBSUB_TARGET, default_scopes=PUBSUB_SCOPES, options=_CHANNEL_OPTIONS
    )
    return channel


def rpc_code(exc: grpc.RpcError) -> str:
    """``UNAVAILABLE`` for a failed call (the name of its status code)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    return policy.grpc_code_name(code) if code is not None else type(exc).__name__


class PubSubSource:
    """``JobSource`` over the Pub/Sub Subscriber API (real service or emulator).

    Calls the service's three methods on plain gRPC stubs with raw protobuf messages: the generated
    client's proto-plus marshalling, request wrapping and the logging interceptor it adds to the channel
    (one more task per call) cost more CPU per job than the calls themselves (docs/performance.md).
    """

    def __init__(self, channel: grpc.aio.Channel, project: str, *, timeout_s: float) -> None:
        self._project = project
        self._timeout_s = timeout_s
        self._paths: dict[str, str] = {}
        self._pull = channel.unary_unary(
            _SUBSCRIBER + "Pull",
            request_serializer=_PullRequest.SerializeToString,
            response_deserializer=pubsub_types.PullResponse.pb().FromString,
        )
        self._ack = channel.unary_unary(
            _SUBSCRIBER + "Acknowledge", request_serializer=_AckRequest.SerializeToString
        )
        self._modack = channel.unary_unary(
            _SUBSCRIBER + "ModifyAckDeadline", request_serializer=_ModAckRequest.SerializeToString
        )

    def _path(self, subscription: str) -> str:
        path = self._paths.get(subscription)
        if path is None:
            path = self._paths[subscription] = (
                subscription
                if subscription.startswith("projects/")
                else f"projects/{self._project}/subscriptions/{subscription}"
            )
        return path

    async def pull(self, subscription: str, max_messages: int, *, wait: bool = False) -> list[Delivery]:
        """Up to ``max_messages``; without ``wait`` an empty list at once when the lane is empty, with it
        the server holds the call until a message arrives or its own wait ends (empty list)."""
        request = _PullRequest(
            subscription=self._path(subscription), max_messages=max_messages, return_immediately=not wait
        )
        try:
            raw = await self._pull(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            if rpc_code(exc) == "DEADLINE_EXCEEDED":
                return []
            raise errors.PubSubUnavailable(f"pull {subscription}: {rpc_code(exc)}") from exc
        leased_at = time.time()
        out: list[Delivery] = []
        for received in raw.received_messages:
            message = received.message
            stamp = message.publish_time
            out.append(
                Delivery(
                    ack_id=received.ack_id,
                    subscription=subscription,
                    message_id=message.message_id,
                    data=message.data,
                    attributes=dict(message.attributes),
                    publish_time=stamp.seconds + stamp.nanos / 1e9 if stamp.seconds else leased_at,
                    delivery_attempt=received.delivery_attempt,
                    leased_at=leased_at,
                )
            )
        return out

    async def acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        request = _AckRequest(subscription=self._path(subscription), ack_ids=ack_ids)
        try:
            await self._ack(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise errors.PubSubUnavailable(f"acknowledge: {rpc_code(exc)}") from exc

    async def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None:
        request = _ModAckRequest(
            subscription=self._path(subscription), ack_ids=ack_ids, ack_deadline_seconds=seconds
        )
        try:
            await self._modack(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise errors.PubSubUnavailable(f"modify_ack_deadline: {rpc_code(exc)}") from exc
