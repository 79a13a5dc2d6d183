"""Pub/Sub intake: unary Pull sized to free slots, one settler for acks/nacks/extensions, one lease owner.

Why unary Pull and not streaming pull: a streaming pull keeps a flow-controlled window of messages leased
to this process whether or not it can start them, so a second worker started during a backlog idles while
the first one hoards. A unary Pull asks for exactly the free pipeline slots.

Handlers never call Pub/Sub: they return decisions (``Ack``/``Nack``/``Extend``, immutable records); the
``Settler`` applies them in batches, and the ``Leases`` owner renews deadlines of held messages in batches.
This module never imports Triton.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple, Protocol

import grpc
from google.pubsub_v1 import types as pubsub_types

from worker.runtime import policy
from worker.runtime.flusher import Background, IntervalFlusher
from worker.runtime.telemetry import get_logger
from worker.shared import errors
from worker.shared.contracts import Delivery

log = get_logger("worker.runtime.intake")

MAX_IDS_PER_REQUEST = 1000  # Pub/Sub request size limit is 512 KB; ack ids are ~150-200 bytes.


class Ack(NamedTuple):
    """Done: the result is durable and the notification accepted."""

    subscription: str
    ack_id: str


class Nack(NamedTuple):
    """Give the message back now (deadline 0) so another worker or attempt takes it."""

    subscription: str
    ack_id: str


class Extend(NamedTuple):
    """Keep the lease: set the deadline to ``seconds`` from now."""

    subscription: str
    ack_id: str
    seconds: int


Decision = Ack | Nack | Extend


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


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Settler(IntervalFlusher):
    """The one owner of acks, nacks and deadline changes: collects decisions, applies them in batches."""

    def __init__(self, source: JobSource, *, interval_s: float, attempts: int = 3) -> None:
        super().__init__(interval_s=interval_s)
        self._source = source
        self._attempts = attempts
        self._pending: list[Decision] = []

    def submit(self, decision: Decision) -> None:
        """Queue one decision; it is applied with the others of its interval."""
        self._pending.append(decision)
        self._signal()

    def submit_many(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            self.submit(decision)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        acks: dict[str, list[str]] = defaultdict(list)
        deadlines: dict[tuple[str, int], list[str]] = defaultdict(list)
        for decision in pending:
            if isinstance(decision, Ack):
                acks[decision.subscription].append(decision.ack_id)
            elif isinstance(decision, Nack):
                deadlines[(decision.subscription, 0)].append(decision.ack_id)
            else:
                deadlines[(decision.subscription, decision.seconds)].append(decision.ack_id)
        calls = [
            self._apply_ack(sub, chunk)
            for sub, ids in acks.items()
            for chunk in _chunks(ids, MAX_IDS_PER_REQUEST)
        ]
        calls += [
            self._apply_deadline(sub, chunk, seconds)
            for (sub, seconds), ids in deadlines.items()
            for chunk in _chunks(ids, MAX_IDS_PER_REQUEST)
        ]
        await asyncio.gather(*calls)

    async def _apply_ack(self, subscription: str, ack_ids: list[str]) -> None:
        await self._retry(lambda: self._source.acknowledge(subscription, ack_ids), "acknowledge")

    async def _apply_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None:
        await self._retry(lambda: self._source.modify_ack_deadline(subscription, ack_ids, seconds), "modack")

    async def _retry(self, call: Callable[[], Awaitable[None]], what: str) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                await call()
                return
            except errors.FleetError as exc:
                if attempt == self._attempts:
                    # The message will be redelivered; the duplicate path answers it without rework.
                    log.warning("settle failed", operation=what, error_code=exc.code)
                    return
                await asyncio.sleep(policy.backoff_s(attempt, base_s=0.1, cap_s=1.0))


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
