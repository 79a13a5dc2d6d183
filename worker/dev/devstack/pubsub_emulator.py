"""A protocol-level Pub/Sub emulator: ``google.pubsub.v1.Publisher`` and ``Subscriber`` over gRPC.

The official client reaches it through ``PUBSUB_EMULATOR_HOST``. Run it with
``python -m worker.dev.devstack.pubsub_emulator --port 0 --admin-port 0`` (it prints its ports as JSON).

Implemented, with the real service's documented semantics:

- Topics: Create/Get/List/Update(labels, retention)/Delete, ListTopicSubscriptions. Deleting a topic leaves
  its subscriptions attached to ``_deleted-topic_``.
- Subscriptions: Create/Get/List/Update/Delete with ``ack_deadline_seconds`` (10-600, 0 means 10),
  ``filter`` (the real attribute grammar; immutable; non-matching messages are acked on arrival),
  ``retry_policy`` (0-600 s, exponential backoff from minimum to maximum after a nack or an expired
  deadline), ``dead_letter_policy`` (``max_delivery_attempts`` 5-100; ``delivery_attempt`` is set on
  delivered messages only when a policy exists; after that many failed deliveries the message goes to the
  dead-letter topic with the ``CloudPubSubDeadLetterSource*`` attributes), ``message_retention_duration``
  (10 min - 7 days; older unacked messages are dropped), ``retain_acked_messages`` (acked messages are kept
  for Seek within the retention window; dead-lettered ones are not), labels.
- Seek to a time: retained messages published before it are marked acknowledged, those published at or
  after it unacknowledged, so acked ones are delivered again (``SeekRequest.time`` as documented).
- Publish: message_id, publish_time, attributes; INVALID_ARGUMENT for an empty message, a message or request
  over 10 MB, more than 100 attributes, keys over 256 bytes or values over 1024 bytes.
- Pull (unary, ``max_messages``; ``return_immediately=false`` waits up to ``--pull-wait-s`` for a message).
- StreamingPull: ``stream_ack_deadline_seconds`` (updatable on the stream), ack_ids, modify_deadline_*,
  server-side flow control: never more than ``max_outstanding_messages`` leased on a stream, nor more than
  ``max_outstanding_bytes`` (one message is always allowed so a large message cannot wedge a stream).
- Acknowledge (unknown or expired ack ids are ignored, malformed ones are INVALID_ARGUMENT),
  ModifyAckDeadline (0 = nack, which honours the retry policy; 0-600 s), redelivery when a deadline expires.
- Status codes: INVALID_ARGUMENT (bad names, bad settings, bad filter), NOT_FOUND, ALREADY_EXISTS,
  UNIMPLEMENTED (push/BigQuery/Cloud Storage subscriptions, exactly-once, ordering, snapshots, schemas).

Fault injection (CLI flags at start, ``POST /faults`` on the admin endpoint at run time): added latency,
UNAVAILABLE on a fraction of unary RPCs, dropping StreamingPull streams with UNAVAILABLE (per response
probability, or all now), redelivery of already-acked messages at a rate, silently lost acks at a rate.
``GET /stats`` counts publishes, deliveries, acks, nacks, expiries, dead-letters and deliveries per
message per subscription (``?messages=1`` lists them), so chaos tests can measure retry storms.
``POST /subscriptions/pause`` ``{"subscription": ..., "paused": true|false}`` stops and resumes delivery
from one subscription while its messages stay queued (a latency test makes a worker idle and busy again
with the same backlog waiting).

Time scale for tests: a subscription labelled ``devstack-time-divisor: "N"`` (or the whole emulator with
``--time-divisor N``) has every ack deadline, lease extension and retry backoff divided by N, so a test can
see a 10 s deadline expire in 0.5 s while the API still enforces the real 10-600 s ranges.

Not implemented (honest list): message ordering (``enable_message_ordering`` is rejected; ordering keys on
publish are stored but not honoured), exactly-once delivery, snapshots (and Seek to one), schemas, push /
BigQuery / Cloud Storage subscriptions, subscription ``expiration_policy`` (stored, never expires), topic
message retention (stored; a Seek replays only what the subscription itself retained), detached
subscriptions, IAM, message storage policy / KMS, the ``subscription_properties`` and ack confirmations of
StreamingPull responses, server-initiated stream closes every ~30 min, publish-side flow control and
quotas. State is in memory only.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import os
import random
import re
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import asdict, dataclass, fields
from typing import Any, NoReturn

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1 import types as pubsub_types

from worker.dev.devstack.admin_http import serve_admin
from worker.dev.devstack.pubsub_filter import FilterSyntaxError, compile_filter
from worker.dev.devstack.service import announce_and_wait

LOG = logging.getLogger("fleet.devstack.pubsub")

# The underlying protobuf classes of the proto-plus types: serialising through them directly is several
# times faster than proto-plus wrappers, which matters at thousands of messages per second.
PB: dict[str, Any] = {
    name: getattr(pubsub_types, name).pb()
    for name in (
        "Topic",
        "Subscription",
        "PubsubMessage",
        "PublishRequest",
        "PublishResponse",
        "GetTopicRequest",
        "UpdateTopicRequest",
        "ListTopicsRequest",
        "ListTopicsResponse",
        "ListTopicSubscriptionsRequest",
        "ListTopicSubscriptionsResponse",
        "DeleteTopicRequest",
        "GetSubscriptionRequest",
        "UpdateSubscriptionRequest",
        "ListSubscriptionsRequest",
        "ListSubscriptionsResponse",
        "DeleteSubscriptionRequest",
        "PullRequest",
        "PullResponse",
        "AcknowledgeRequest",
        "ModifyAckDeadlineRequest",
        "StreamingPullRequest",
        "StreamingPullResponse",
        "SeekRequest",
        "SeekResponse",
    )
}

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
DEFAULT_ACK_DEADLINE_S = 10
MIN_ACK_DEADLINE_S, MAX_ACK_DEADLINE_S = 10, 600
MAX_BACKOFF_S = 600
DEFAULT_MIN_BACKOFF_S, DEFAULT_MAX_BACKOFF_S = 10.0, 600.0
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100
DEFAULT_DELIVERY_ATTEMPTS = 5
MIN_RETENTION_S, MAX_RETENTION_S = 600, 7 * 24 * 3600
DEFAULT_RETENTION_S = 7 * 24 * 3600
MAX_STREAM_RESPONSE_MESSAGES = 1000
MAX_STREAM_RESPONSE_BYTES = 8 * 1024 * 1024
DELETED_TOPIC = "_deleted-topic_"
TIME_DIVISOR_LABEL = "devstack-time-divisor"

_RESOURCE_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_TOPIC_RE = re.compile(rf"^projects/([^/]+)/topics/({_RESOURCE_ID})$")
_SUBSCRIPTION_RE = re.compile(rf"^projects/([^/]+)/subscriptions/({_RESOURCE_ID})$")
_PROJECT_RE = re.compile(r"^projects/([^/]+)$")
_ACK_ID_RE = re.compile(r"^\d+\.\d+\.\d+$")


class ApiError(Exception):
    """An error answered to the client with a gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _not_found(what: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={what}).")


@dataclass
class Faults:
    """Fault injection settings; every rate is a probability in [0, 1]."""

    latency_ms: float = 0.0  # added to every RPC and to every StreamingPull response
    unavailable_rate: float = 0.0  # unary Publish/Pull/Acknowledge/ModifyAckDeadline answered UNAVAILABLE
    stream_drop_rate: float = 0.0  # per StreamingPull response: the stream ends with UNAVAILABLE instead
    redeliver_acked_rate: float = 0.0  # an acked message is delivered again anyway (at-least-once)
    ack_failure_rate: float = 0.0  # an ack is silently lost; the message comes back after its deadline

    def update(self, values: dict[str, Any]) -> None:
        known = {field.name for field in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {sorted(known)}")
            number = float(value)
            if key.endswith("_rate") and not 0.0 <= number <= 1.0:
                raise ValueError(f"{key} must be within [0, 1]")
            if number < 0:
                raise ValueError(f"{key} must be >= 0")
            setattr(self, key, number)


def _parse_topic(name: str) -> str:
    match = _TOPIC_RE.match(name)
    if match is None or match.group(2).startswith("goog"):
        raise _invalid(f"Invalid [topics] name: ({name})")
    return name


def _parse_subscription(name: str) -> str:
    match = _SUBSCRIPTION_RE.match(name)
    if match is None or match.group(2).startswith("goog"):
        raise _invalid(f"Invalid [subscriptions] name: ({name})")
    return name


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _duration_s(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _validate_retry_policy(policy: Any) -> None:
    if not policy.HasField("minimum_backoff"):
        policy.minimum_backoff.seconds = int(DEFAULT_MIN_BACKOFF_S)
    if not policy.HasField("maximum_backoff"):
        policy.maximum_backoff.seconds = int(DEFAULT_MAX_BACKOFF_S)
    low, high = _duration_s(policy.minimum_backoff), _duration_s(policy.maximum_backoff)
    if not (0 <= low <= MAX_BACKOFF_S and 0 <= high <= MAX_BACKOFF_S and low <= high):
        raise _invalid("retry_policy backoffs must be within 0-600 s and minimum <= maximum")


def _validate_dead_letter_policy(policy: Any) -> None:
    _parse_topic(policy.dead_letter_topic)
    if policy.max_delivery_attempts == 0:
        policy.max_delivery_attempts = DEFAULT_DELIVERY_ATTEMPTS
    if not MIN_DELIVERY_ATTEMPTS <= policy.max_delivery_attempts <= MAX_DELIVERY_ATTEMPTS:
        raise _invalid("max_delivery_attempts must be between 5 and 100")


class _Message:
    __slots__ = ("attributes", "pb", "publish_ns", "publish_wall", "size")

    def __init__(self, pb: Any, publish_wall: float) -> None:
        self.pb = pb
        self.attributes: dict[str, str] = dict(pb.attributes)
        self.publish_wall = publish_wall
        # Seek compares against the client's Timestamp exactly, in integer nanoseconds as published.
        self.publish_ns: int = pb.publish_time.ToNanoseconds()
        self.size = pb.ByteSize()


READY, LEASED, DELAYED, DONE = 0, 1, 2, 3


class _SubMessage:
    """One message's state in one subscription."""

    __slots__ = (
        "ack_id",
        "attempts",
        "deadline",
        "message",
        "queued",
        "release_at",
        "seq",
        "state",
        "stream",
    )

    def __init__(self, message: _Message, seq: int) -> None:
        self.message = message
        self.seq = seq
        self.attempts = 0
        self.state = READY
        self.queued = True
        self.ack_id = ""
        self.deadline = 0.0
        self.release_at = 0.0
        self.stream: _Stream | None = None


class _Subscription:
    def __init__(self, uid: int, pb: Any, predicate: Callable[[dict[str, str]], bool], scale: float) -> None:
        self.uid = uid
        self.pb = pb
        self.name: str = pb.name
        self.predicate = predicate
        self.scale = scale
        self.ready: deque[_SubMessage] = deque()
        self.messages: dict[int, _SubMessage] = {}  # unacked, by seq
        self.retained: dict[
            int, _SubMessage
        ] = {}  # acked but kept for Seek (retain_acked_messages), ack order
        self.leases: dict[str, _SubMessage] = {}
        self.streams: set[_Stream] = set()
        self.deliveries: Counter[str] = Counter()  # message_id -> deliveries, kept after the ack
        self.counters: Counter[str] = Counter()
        self.deleted = False
        self.paused = False  # admin: deliver nothing (messages stay queued) until resumed
        self.cond: threading.Condition | None = None

    @property
    def ack_deadline_s(self) -> float:
        return float(self.pb.ack_deadline_seconds)

    @property
    def retention_s(self) -> float:
        return _duration_s(self.pb.message_retention_duration)

    def retain_acked(self, entry: _SubMessage, now_wall: float) -> None:
        """Keep an acked message for Seek while it is within the retention window; prune expired ones."""
        if not self.pb.retain_acked_messages:
            return
        self.retained[entry.seq] = entry
        # Oldest acks first: amortised O(1) per ack, so retained messages never outlive the window by much.
        while self.retained:
            oldest = next(iter(self.retained.values()))
            if now_wall - oldest.message.publish_wall <= self.retention_s:
                break
            del self.retained[oldest.seq]

    @property
    def max_attempts(self) -> int:
        return int(self.pb.dead_letter_policy.max_delivery_attempts) if self.has_dead_letter else 0

    @property
    def has_dead_letter(self) -> bool:
        return bool(self.pb.dead_letter_policy.dead_letter_topic)

    def backoff_s(self, attempts: int) -> float:
        if not self.pb.HasField("retry_policy"):
            return 0.0
        low = _duration_s(self.pb.retry_policy.minimum_backoff)
        high = _duration_s(self.pb.retry_policy.maximum_backoff)
        return float(min(high, low * (2.0 ** max(attempts - 1, 0))))


class _Stream:
    __slots__ = (
        "ack_deadline_s",
        "bytes",
        "closed",
        "count",
        "killed",
        "leased",
        "max_bytes",
        "max_messages",
        "subscription",
    )

    def __init__(self, subscription: _Subscription, request: Any) -> None:
        self.subscription = subscription
        self.ack_deadline_s = float(request.stream_ack_deadline_seconds or subscription.ack_deadline_s)
        self.max_messages = int(request.max_outstanding_messages)
        self.max_bytes = int(request.max_outstanding_bytes)
        self.count = 0
        self.bytes = 0
        self.leased: set[_SubMessage] = set()
        self.closed = False
        self.killed = False

    def allows(self, size: int) -> bool:
        if self.max_messages > 0 and self.count + 1 > self.max_messages:
            return False
        return not (self.max_bytes > 0 and self.count > 0 and self.bytes + size > self.max_bytes)


class PubSubCore:
    """The emulator's state machine, guarded by ONE lock; timers run on one scheduler thread."""

    def __init__(self, *, faults: Faults | None = None, time_divisor: float = 1.0, pull_wait_s: float = 3.0):
        self.lock = threading.Lock()
        self.faults = faults or Faults()
        self.time_divisor = time_divisor
        self.pull_wait_s = pull_wait_s
        self.topics: dict[str, Any] = {}  # name -> Topic pb
        self.topic_subscriptions: dict[str, set[str]] = {}
        self.subscriptions: dict[str, _Subscription] = {}
        self.counters: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._heap: list[tuple[float, int, int, _Subscription, _SubMessage]] = []
        self._heap_seq = itertools.count()
        self._timer_cond = threading.Condition(self.lock)
        self._running = True
        self._random = random.Random()
        self._timer = threading.Thread(target=self._run_timers, name="pubsub-timers", daemon=True)
        self._timer.start()

    def close(self) -> None:
        with self.lock:
            self._running = False
            self._timer_cond.notify_all()
            for sub in self.subscriptions.values():
                for stream in sub.streams:
                    stream.closed = True
                if sub.cond is not None:
                    sub.cond.notify_all()

    # --- faults -----------------------------------------------------------------------------------------
    def chance(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    def drop_streams(self) -> int:
        """End every open StreamingPull with UNAVAILABLE (the 'drop now' fault)."""
        with self.lock:
            dropped = 0
            for sub in self.subscriptions.values():
                for stream in sub.streams:
                    stream.killed = True
                    dropped += 1
                if sub.cond is not None:
                    sub.cond.notify_all()
            return dropped

    # --- topics -----------------------------------------------------------------------------------------
    def create_topic(self, topic: Any) -> Any:
        _parse_topic(topic.name)
        if topic.HasField("message_retention_duration"):
            retention = _duration_s(topic.message_retention_duration)
            if not MIN_RETENTION_S <= retention <= 31 * 24 * 3600:
                raise _invalid("message_retention_duration must be between 10 minutes and 31 days")
        if topic.schema_settings.schema:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "schemas are not implemented by the emulator")
        with self.lock:
            if topic.name in self.topics:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Resource already exists in the project")
            stored = PB["Topic"]()
            stored.CopyFrom(topic)
            self.topics[topic.name] = stored
            self.topic_subscriptions[topic.name] = set()
            return stored

    def get_topic(self, name: str) -> Any:
        _parse_topic(name)
        with self.lock:
            topic = self.topics.get(name)
            if topic is None:
                raise _not_found(name)
            return topic

    def update_topic(self, request: Any) -> Any:
        with self.lock:
            topic = self.topics.get(_parse_topic(request.topic.name))
            if topic is None:
                raise _not_found(request.topic.name)
            for path in request.update_mask.paths:
                if path == "labels":
                    topic.labels.clear()
                    topic.labels.update(request.topic.labels)
                elif path == "message_retention_duration":
                    topic.message_retention_duration.CopyFrom(request.topic.message_retention_duration)
                else:
                    raise _invalid(f"updating topic field {path!r} is not supported by the emulator")
            return topic

    def list_topics(self, project: str) -> list[Any]:
        if not _PROJECT_RE.match(project):
            raise _invalid(f"Invalid [projects] name: ({project})")
        with self.lock:
            return [self.topics[name] for name in sorted(self.topics) if name.startswith(project + "/")]

    def list_topic_subscriptions(self, topic: str) -> list[str]:
        _parse_topic(topic)
        with self.lock:
            if topic not in self.topics:
                raise _not_found(topic)
            return sorted(self.topic_subscriptions[topic])

    def delete_topic(self, name: str) -> None:
        _parse_topic(name)
        with self.lock:
            if name not in self.topics:
                raise _not_found(name)
            del self.topics[name]
            for sub_name in self.topic_subscriptions.pop(name):
                self.subscriptions[sub_name].pb.topic = DELETED_TOPIC

    # --- subscriptions ----------------------------------------------------------------------------------
    def _validate_subscription(self, pb: Any) -> Callable[[dict[str, str]], bool]:
        _parse_subscription(pb.name)
        if pb.ack_deadline_seconds == 0:
            pb.ack_deadline_seconds = DEFAULT_ACK_DEADLINE_S
        if not MIN_ACK_DEADLINE_S <= pb.ack_deadline_seconds <= MAX_ACK_DEADLINE_S:
            raise _invalid("The ack deadline must be between 10 and 600 seconds.")
        unsupported = {
            "push_config": bool(pb.push_config.push_endpoint),
            "bigquery_config": bool(pb.bigquery_config.table),
            "cloud_storage_config": bool(pb.cloud_storage_config.bucket),
            "enable_message_ordering": pb.enable_message_ordering,
            "enable_exactly_once_delivery": pb.enable_exactly_once_delivery,
        }
        for field_name, used in unsupported.items():
            if used:
                raise ApiError(
                    grpc.StatusCode.UNIMPLEMENTED, f"{field_name} is not implemented by the emulator"
                )
        if pb.HasField("message_retention_duration"):
            retention = _duration_s(pb.message_retention_duration)
            if not MIN_RETENTION_S <= retention <= MAX_RETENTION_S:
                raise _invalid("message_retention_duration must be between 10 minutes and 7 days")
        else:
            pb.message_retention_duration.seconds = DEFAULT_RETENTION_S
        if pb.HasField("retry_policy"):
            _validate_retry_policy(pb.retry_policy)
        if pb.HasField("dead_letter_policy") and pb.dead_letter_policy.dead_letter_topic:
            _validate_dead_letter_policy(pb.dead_letter_policy)
            if pb.dead_letter_policy.dead_letter_topic not in self.topics:
                raise _not_found(pb.dead_letter_policy.dead_letter_topic)
        try:
            return compile_filter(pb.filter)
        except FilterSyntaxError as exc:
            raise _invalid(f"Invalid filter: {exc}") from exc

    def _scale_of(self, pb: Any) -> float:
        raw = pb.labels.get(TIME_DIVISOR_LABEL, "")
        try:
            divisor = float(raw) if raw else 1.0
        except ValueError as exc:
            raise _invalid(f"label {TIME_DIVISOR_LABEL} must be a number") from exc
        if divisor <= 0:
            raise _invalid(f"label {TIME_DIVISOR_LABEL} must be > 0")
        return 1.0 / (divisor * self.time_divisor)

    def create_subscription(self, request: Any) -> Any:
        pb = PB["Subscription"]()
        pb.CopyFrom(request)
        _parse_subscription(pb.name)
        _parse_topic(pb.topic)
        with self.lock:
            predicate = self._validate_subscription(pb)
            scale = self._scale_of(pb)
            if pb.name in self.subscriptions:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Resource already exists in the project")
            if pb.topic not in self.topics:
                raise _not_found(pb.topic)
            sub = _Subscription(next(self._ids), pb, predicate, scale)
            sub.cond = threading.Condition(self.lock)
            self.subscriptions[pb.name] = sub
            self.topic_subscriptions[pb.topic].add(pb.name)
            return pb

    def _subscription(self, name: str) -> _Subscription:
        _parse_subscription(name)
        sub = self.subscriptions.get(name)
        if sub is None:
            raise _not_found(name)
        return sub

    def get_subscription(self, name: str) -> Any:
        with self.lock:
            return self._subscription(name).pb

    def update_subscription(self, request: Any) -> Any:
        with self.lock:
            sub = self._subscription(request.subscription.name)
            candidate = PB["Subscription"]()
            candidate.CopyFrom(sub.pb)
            if not request.update_mask.paths:
                raise _invalid("update_mask must name at least one field")
            for path in request.update_mask.paths:
                if path == "filter":
                    raise _invalid("a subscription's filter cannot be updated")
                if path not in (
                    "ack_deadline_seconds",
                    "retry_policy",
                    "dead_letter_policy",
                    "labels",
                    "message_retention_duration",
                    "expiration_policy",
                    "retain_acked_messages",
                ):
                    raise _invalid(f"updating subscription field {path!r} is not supported by the emulator")
                candidate.ClearField(path)
                if path == "labels":
                    candidate.labels.update(request.subscription.labels)
                elif path == "ack_deadline_seconds":
                    candidate.ack_deadline_seconds = request.subscription.ack_deadline_seconds
                elif path == "retain_acked_messages":
                    candidate.retain_acked_messages = request.subscription.retain_acked_messages
                elif request.subscription.HasField(path):
                    getattr(candidate, path).CopyFrom(getattr(request.subscription, path))
            self._validate_subscription(candidate)
            sub.scale = self._scale_of(candidate)
            sub.pb = candidate
            if not candidate.retain_acked_messages:
                sub.retained.clear()
            return candidate

    def list_subscriptions(self, project: str) -> list[Any]:
        if not _PROJECT_RE.match(project):
            raise _invalid(f"Invalid [projects] name: ({project})")
        with self.lock:
            return [
                self.subscriptions[name].pb
                for name in sorted(self.subscriptions)
                if name.startswith(project + "/")
            ]

    def delete_subscription(self, name: str) -> None:
        with self.lock:
            sub = self._subscription(name)
            del self.subscriptions[name]
            self.topic_subscriptions.get(sub.pb.topic, set()).discard(name)
            sub.deleted = True
            sub.messages.clear()
            sub.retained.clear()
            sub.ready.clear()
            sub.leases.clear()
            for stream in sub.streams:
                stream.closed = True
            if sub.cond is not None:
                sub.cond.notify_all()

    # --- publish ----------------------------------------------------------------------------------------
    def publish(self, topic_name: str, messages: list[Any]) -> list[str]:
        _parse_topic(topic_name)
        if not messages:
            raise _invalid("The request must contain at least one message.")
        total = 0
        for message in messages:
            size = message.ByteSize()
            total += size
            if not message.data and not message.attributes:
                raise _invalid("Some messages are empty: a message needs data or at least one attribute.")
            if size > MAX_MESSAGE_BYTES or total > MAX_MESSAGE_BYTES:
                raise _invalid("Request payload size exceeds the limit: 10485760 bytes.")
            if len(message.attributes) > MAX_ATTRIBUTES:
                raise _invalid(f"A message may carry at most {MAX_ATTRIBUTES} attributes.")
            for key, value in message.attributes.items():
                if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES:
                    raise _invalid("An attribute key is empty or longer than 256 bytes.")
                if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
                    raise _invalid("An attribute value is longer than 1024 bytes.")
        with self.lock:
            if topic_name not in self.topics:
                raise _not_found(topic_name)
            return [self._publish_locked(topic_name, message) for message in messages]

    def _publish_locked(self, topic_name: str, message: Any) -> str:
        wall = time.time()
        pb = PB["PubsubMessage"]()
        pb.CopyFrom(message)
        message_id = str(next(self._ids))
        pb.message_id = message_id
        pb.publish_time.FromNanoseconds(int(wall * 1e9))
        stored = _Message(pb, wall)
        self.counters["published"] += 1
        for sub_name in self.topic_subscriptions.get(topic_name, ()):
            sub = self.subscriptions[sub_name]
            if not sub.predicate(stored.attributes):
                sub.counters["filtered_out"] += 1
                continue
            entry = _SubMessage(stored, next(self._ids))
            sub.messages[entry.seq] = entry
            sub.ready.append(entry)
            if sub.cond is not None:
                sub.cond.notify_all()
        return message_id

    # --- delivery ---------------------------------------------------------------------------------------
    def _front_deliverable(self, sub: _Subscription, stream: _Stream | None) -> bool:
        """True when the head of the ready queue may be delivered (drops stale heads on the way)."""
        if sub.paused:
            return False
        while sub.ready:
            head = sub.ready[0]
            if head.state != READY or head.queued is False:
                sub.ready.popleft()
                head.queued = False
                continue
            return stream is None or stream.allows(head.message.size)
        return False

    def _take_locked(
        self, sub: _Subscription, max_messages: int, stream: _Stream | None, max_bytes: int = 0
    ) -> list[tuple[str, int, _SubMessage]]:
        now_wall, now = time.time(), time.monotonic()
        retention = _duration_s(sub.pb.message_retention_duration)
        lease_s = (stream.ack_deadline_s if stream is not None else sub.ack_deadline_s) * sub.scale
        taken: list[tuple[str, int, _SubMessage]] = []
        size_total = 0
        while len(taken) < max_messages and self._front_deliverable(sub, stream):
            entry = sub.ready.popleft()
            entry.queued = False
            if now_wall - entry.message.publish_wall > retention:
                entry.state = DONE
                sub.messages.pop(entry.seq, None)
                sub.counters["retention_dropped"] += 1
                continue
            if max_bytes and taken and size_total + entry.message.size > max_bytes:
                entry.queued = True
                sub.ready.appendleft(entry)
                break
            size_total += entry.message.size
            entry.attempts += 1
            entry.state = LEASED
            entry.ack_id = f"{sub.uid}.{entry.seq}.{entry.attempts}"
            entry.deadline = now + lease_s
            sub.leases[entry.ack_id] = entry
            self._schedule(entry.deadline, 0, sub, entry)
            if stream is not None:
                entry.stream = stream
                stream.count += 1
                stream.bytes += entry.message.size
                stream.leased.add(entry)
                # High-water mark, so tests can prove flow control was never exceeded.
                sub.counters["max_stream_outstanding"] = max(
                    sub.counters["max_stream_outstanding"], stream.count
                )
            sub.deliveries[entry.message.pb.message_id] += 1
            sub.counters["delivered"] += 1
            if entry.attempts > 1:
                sub.counters["redelivered"] += 1
            self.counters["delivered"] += 1
            taken.append((entry.ack_id, entry.attempts if sub.has_dead_letter else 0, entry))
        return taken

    def _end_lease(self, sub: _Subscription, entry: _SubMessage) -> None:
        sub.leases.pop(entry.ack_id, None)
        entry.ack_id = ""
        stream = entry.stream
        if stream is not None:
            entry.stream = None
            stream.count -= 1
            stream.bytes -= entry.message.size
            stream.leased.discard(entry)
        if sub.cond is not None:
            sub.cond.notify_all()

    def _settle_unacked(self, sub: _Subscription, entry: _SubMessage, now: float) -> None:
        """A nack or an expired deadline: dead-letter, back off, or make it ready again."""
        self._end_lease(sub, entry)
        if sub.has_dead_letter and entry.attempts >= sub.max_attempts:
            self._dead_letter(sub, entry)
            return
        delay = sub.backoff_s(entry.attempts) * sub.scale
        if delay > 0:
            entry.state = DELAYED
            entry.release_at = now + delay
            self._schedule(entry.release_at, 1, sub, entry)
        else:
            self._make_ready(sub, entry)

    def _make_ready(self, sub: _Subscription, entry: _SubMessage) -> None:
        entry.state = READY
        if not entry.queued:
            entry.queued = True
            sub.ready.append(entry)
        if sub.cond is not None:
            sub.cond.notify_all()

    def _dead_letter(self, sub: _Subscription, entry: _SubMessage) -> None:
        entry.state = DONE
        sub.messages.pop(entry.seq, None)
        sub.counters["dead_lettered"] += 1
        self.counters["dead_lettered"] += 1
        topic = sub.pb.dead_letter_policy.dead_letter_topic
        if topic not in self.topics:
            self.counters["dead_letter_topic_missing"] += 1
            return
        source = entry.message.pb
        forwarded = PB["PubsubMessage"]()
        forwarded.data = source.data
        forwarded.ordering_key = source.ordering_key
        forwarded.attributes.update(source.attributes)
        project = sub.name.split("/")[1]
        forwarded.attributes.update(
            {
                "CloudPubSubDeadLetterSourceDeliveryCount": str(entry.attempts),
                "CloudPubSubDeadLetterSourceSubscription": _short(sub.name),
                "CloudPubSubDeadLetterSourceSubscriptionProject": project,
                "CloudPubSubDeadLetterSourceTopicPublishTime": source.publish_time.ToJsonString(),
            }
        )
        self._publish_locked(topic, forwarded)

    def _schedule(self, when: float, kind: int, sub: _Subscription, entry: _SubMessage) -> None:
        if not self._heap or when < self._heap[0][0]:
            self._timer_cond.notify()
        heapq.heappush(self._heap, (when, next(self._heap_seq), kind, sub, entry))

    def _run_timers(self) -> None:
        with self.lock:
            while self._running:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    when, _, kind, sub, entry = heapq.heappop(self._heap)
                    if sub.deleted:
                        continue
                    if kind == 0 and entry.state == LEASED and entry.deadline == when:
                        sub.counters["expired"] += 1
                        self.counters["expired"] += 1
                        self._settle_unacked(sub, entry, now)
                    elif kind == 1 and entry.state == DELAYED and entry.release_at == when:
                        self._make_ready(sub, entry)
                timeout = min(self._heap[0][0] - now, 1.0) if self._heap else 1.0
                self._timer_cond.wait(max(timeout, 0.0))

    def pull(self, name: str, max_messages: int, return_immediately: bool) -> list[tuple[str, int, Any]]:
        if max_messages <= 0:
            raise _invalid("max_messages must be positive")
        with self.lock:
            sub = self._subscription(name)
            assert sub.cond is not None
            if not return_immediately:
                sub.cond.wait_for(lambda: sub.deleted or self._front_deliverable(sub, None), self.pull_wait_s)
            if sub.deleted:
                raise _not_found(name)
            taken = self._take_locked(sub, max_messages, None, MAX_STREAM_RESPONSE_BYTES)
            return [(ack_id, attempt, entry.message.pb) for ack_id, attempt, entry in taken]

    def _check_ack_ids(self, ack_ids: Any) -> None:
        for ack_id in ack_ids:
            if not _ACK_ID_RE.match(ack_id):
                raise _invalid(f"Invalid ack ID: {ack_id!r}")

    def acknowledge(self, name: str, ack_ids: Any) -> None:
        self._check_ack_ids(ack_ids)
        with self.lock:
            sub = self._subscription(name)
            self._ack_locked(sub, ack_ids)

    def _ack_locked(self, sub: _Subscription, ack_ids: Any) -> None:
        for ack_id in ack_ids:
            entry = sub.leases.get(ack_id)
            if entry is None:
                sub.counters["ack_ignored"] += 1
                continue
            if self.chance(self.faults.ack_failure_rate):
                sub.counters["acks_dropped"] += 1
                self.counters["acks_dropped"] += 1
                continue
            self._end_lease(sub, entry)
            sub.counters["acked"] += 1
            self.counters["acked"] += 1
            if self.chance(self.faults.redeliver_acked_rate):
                sub.counters["acked_redelivered"] += 1
                self.counters["acked_redelivered"] += 1
                self._make_ready(sub, entry)
                continue
            entry.state = DONE
            sub.messages.pop(entry.seq, None)
            sub.retain_acked(entry, time.time())

    def modify_ack_deadline(self, name: str, ack_ids: Any, seconds: int) -> None:
        self._check_ack_ids(ack_ids)
        if not 0 <= seconds <= MAX_ACK_DEADLINE_S:
            raise _invalid("The ack deadline must be between 0 and 600 seconds.")
        with self.lock:
            self._modack_locked(self._subscription(name), ack_ids, [seconds] * len(ack_ids))

    def _modack_locked(self, sub: _Subscription, ack_ids: Any, seconds: Any) -> None:
        now = time.monotonic()
        for ack_id, deadline_s in zip(ack_ids, seconds, strict=False):
            entry = sub.leases.get(ack_id)
            if entry is None:
                continue
            if deadline_s == 0:
                sub.counters["nacked"] += 1
                self.counters["nacked"] += 1
                self._settle_unacked(sub, entry, now)
                continue
            entry.deadline = now + min(max(deadline_s, 0), MAX_ACK_DEADLINE_S) * sub.scale
            self._schedule(entry.deadline, 0, sub, entry)

    # --- seek -----------------------------------------------------------------------------------------
    def seek(self, request: Any) -> None:
        """Seek to a time, as documented for ``SeekRequest.time``: retained messages published before it
        are marked acknowledged (unacked ones too: a seek forward purges), retained messages published at
        or after it unacknowledged (acked ones are delivered again). Only what the subscription retains
        counts: without ``retain_acked_messages`` nothing acked comes back, and the emulator has no topic
        retention to replay from. Snapshots are not implemented."""
        if request.snapshot:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "snapshots are not implemented by the emulator")
        if not request.HasField("time"):
            raise _invalid("Seek needs a time or a snapshot")
        target_ns = request.time.ToNanoseconds()
        with self.lock:
            sub = self._subscription(request.subscription)
            now_wall = time.time()
            purged = [entry for entry in sub.messages.values() if entry.message.publish_ns < target_ns]
            for entry in purged:
                if entry.state == LEASED:
                    self._end_lease(sub, entry)  # its ack id is now unknown, so a late ack is ignored
                entry.state = DONE  # a queued entry is dropped when it reaches the head of the queue
                del sub.messages[entry.seq]
                sub.retain_acked(entry, now_wall)
            replayed = sorted(
                (
                    entry
                    for entry in sub.retained.values()
                    if entry.message.publish_ns >= target_ns
                    and now_wall - entry.message.publish_wall <= sub.retention_s
                ),
                key=lambda entry: entry.seq,
            )
            for entry in replayed:
                del sub.retained[entry.seq]
                sub.messages[entry.seq] = entry
                self._make_ready(sub, entry)  # delivery_attempt keeps counting across seeks
            sub.counters["seeks"] += 1
            sub.counters["seek_acked"] += len(purged)
            sub.counters["seek_replayed"] += len(replayed)

    # --- streaming pull ---------------------------------------------------------------------------------
    def open_stream(self, request: Any) -> _Stream:
        if not request.subscription:
            raise _invalid("The first StreamingPull request must name a subscription.")
        if request.stream_ack_deadline_seconds and not (
            MIN_ACK_DEADLINE_S <= request.stream_ack_deadline_seconds <= MAX_ACK_DEADLINE_S
        ):
            raise _invalid("stream_ack_deadline_seconds must be between 10 and 600 seconds.")
        with self.lock:
            sub = self._subscription(request.subscription)
            stream = _Stream(sub, request)
            sub.streams.add(stream)
            self.counters["streams_opened"] += 1
            self._stream_request_locked(stream, request)
            return stream

    def stream_request(self, stream: _Stream, request: Any) -> None:
        with self.lock:
            if not stream.subscription.deleted:
                self._stream_request_locked(stream, request)

    def _stream_request_locked(self, stream: _Stream, request: Any) -> None:
        sub = stream.subscription
        if request.ack_ids:
            self._ack_locked(sub, [ack_id for ack_id in request.ack_ids if _ACK_ID_RE.match(ack_id)])
        if request.modify_deadline_ack_ids:
            self._modack_locked(sub, request.modify_deadline_ack_ids, request.modify_deadline_seconds)
        if request.stream_ack_deadline_seconds:
            stream.ack_deadline_s = float(
                min(max(request.stream_ack_deadline_seconds, MIN_ACK_DEADLINE_S), MAX_ACK_DEADLINE_S)
            )

    def close_stream(self, stream: _Stream) -> None:
        with self.lock:
            stream.closed = True
            sub = stream.subscription
            sub.streams.discard(stream)
            # Leases outlive the stream (the client may still ack them with unary calls), but they no
            # longer count against the closed stream's flow control.
            for entry in stream.leased:
                entry.stream = None
            stream.leased.clear()
            stream.count = stream.bytes = 0
            if sub.cond is not None:
                sub.cond.notify_all()

    def next_stream_batch(self, stream: _Stream, wait_s: float) -> list[tuple[str, int, Any]] | None:
        """Messages for the next StreamingPull response; [] after ``wait_s`` idle; None when closed."""
        sub = stream.subscription
        assert sub.cond is not None
        with self.lock:
            sub.cond.wait_for(
                lambda: stream.closed or stream.killed or sub.deleted or self._front_deliverable(sub, stream),
                wait_s,
            )
            if stream.killed:
                raise ApiError(grpc.StatusCode.UNAVAILABLE, "The service was unable to fulfill your request.")
            if sub.deleted:
                raise _not_found(sub.name)
            if stream.closed:
                return None
            if self._front_deliverable(sub, stream) and self.chance(self.faults.stream_drop_rate):
                self.counters["streams_dropped"] += 1
                raise ApiError(grpc.StatusCode.UNAVAILABLE, "The service was unable to fulfill your request.")
            taken = self._take_locked(sub, MAX_STREAM_RESPONSE_MESSAGES, stream, MAX_STREAM_RESPONSE_BYTES)
            return [(ack_id, attempt, entry.message.pb) for ack_id, attempt, entry in taken]

    # --- admin ------------------------------------------------------------------------------------------
    def stats(self, *, with_messages: bool = False) -> dict[str, Any]:
        with self.lock:
            subscriptions: dict[str, Any] = {}
            for sub in self.subscriptions.values():
                histogram = Counter(sub.deliveries.values())
                delayed = sum(1 for entry in sub.messages.values() if entry.state == DELAYED)
                entry_stats: dict[str, Any] = {
                    **{key: sub.counters[key] for key in sorted(sub.counters)},
                    "unacked": len(sub.messages),
                    "retained_acked": len(sub.retained),
                    "outstanding": len(sub.leases),
                    "backlog": len(sub.messages) - len(sub.leases),
                    "delayed": delayed,
                    "streams": len(sub.streams),
                    "messages_delivered": len(sub.deliveries),
                    "max_deliveries_per_message": max(sub.deliveries.values(), default=0),
                    "deliveries_histogram": {str(key): histogram[key] for key in sorted(histogram)},
                }
                if with_messages:
                    entry_stats["deliveries_per_message"] = dict(sub.deliveries)
                subscriptions[_short(sub.name)] = entry_stats
            return {
                **{key: self.counters[key] for key in sorted(self.counters)},
                "topics": len(self.topics),
                "subscriptions": subscriptions,
            }

    def pause_delivery(self, name: str, paused: bool) -> None:
        """Deliver nothing from ``name`` (Pull and StreamingPull) until resumed; messages stay queued and
        leases run on. A test's way to make a worker idle and busy again while a backlog waits."""
        with self.lock:
            sub = self._subscription(name)
            sub.paused = paused
            if sub.cond is not None:
                sub.cond.notify_all()

    def reset_stats(self) -> None:
        with self.lock:
            self.counters.clear()
            for sub in self.subscriptions.values():
                sub.counters.clear()
                sub.deliveries.clear()


# --- gRPC servicer ------------------------------------------------------------------------------------
def _abort(context: grpc.ServicerContext, error: ApiError) -> NoReturn:
    context.abort(error.code, str(error))
    raise AssertionError("unreachable")  # pragma: no cover - abort always raises


class PubSubServicer:
    """Maps the gRPC methods onto PubSubCore; applies the latency and UNAVAILABLE faults."""

    def __init__(self, core: PubSubCore) -> None:
        self.core = core

    def _before(self, context: grpc.ServicerContext, *, may_fail: bool) -> None:
        faults = self.core.faults
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000.0)
        if may_fail and self.core.chance(faults.unavailable_rate):
            with self.core.lock:
                self.core.counters["unavailable_injected"] += 1
            _abort(context, ApiError(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."))

    def unary(
        self,
        request_type: str,
        response_type: str | None,
        fn: Callable[[Any], Any],
        *,
        may_fail: bool = False,
    ) -> grpc.RpcMethodHandler:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            self._before(context, may_fail=may_fail)
            try:
                result = fn(request)
            except ApiError as exc:
                _abort(context, exc)
            return empty_pb2.Empty() if response_type is None else result

        response_serializer = (
            empty_pb2.Empty.SerializeToString
            if response_type is None
            else PB[response_type].SerializeToString
        )
        return grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=PB[request_type].FromString,
            response_serializer=response_serializer,
        )

    def _paged(self, items: list[Any], request: Any) -> tuple[list[Any], str]:
        start = int(request.page_token or 0)
        size = request.page_size or 1000
        return items[start : start + size], (str(start + size) if start + size < len(items) else "")

    # Publisher ------------------------------------------------------------------------------------------
    def publish(self, request: Any) -> Any:
        ids = self.core.publish(request.topic, list(request.messages))
        return PB["PublishResponse"](message_ids=ids)

    def list_topics(self, request: Any) -> Any:
        page, token = self._paged(self.core.list_topics(request.project), request)
        return PB["ListTopicsResponse"](topics=page, next_page_token=token)

    def list_topic_subscriptions(self, request: Any) -> Any:
        page, token = self._paged(self.core.list_topic_subscriptions(request.topic), request)
        return PB["ListTopicSubscriptionsResponse"](subscriptions=page, next_page_token=token)

    # Subscriber -----------------------------------------------------------------------------------------
    def list_subscriptions(self, request: Any) -> Any:
        page, token = self._paged(self.core.list_subscriptions(request.project), request)
        return PB["ListSubscriptionsResponse"](subscriptions=page, next_page_token=token)

    def pull(self, request: Any) -> Any:
        response = PB["PullResponse"]()
        for ack_id, attempt, message in self.core.pull(
            request.subscription, request.max_messages, request.return_immediately
        ):
            received = response.received_messages.add()
            received.ack_id = ack_id
            received.message.CopyFrom(message)
            received.delivery_attempt = attempt
        return response

    def seek(self, request: Any) -> Any:
        self.core.seek(request)
        return PB["SeekResponse"]()

    def streaming_pull(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        self._before(context, may_fail=False)
        try:
            stream = self.core.open_stream(first)
        except ApiError as exc:
            _abort(context, exc)
        context.add_callback(lambda: self.core.close_stream(stream))

        def read_requests() -> None:
            try:
                for request in request_iterator:
                    self.core.stream_request(stream, request)
            except (grpc.RpcError, ValueError):
                pass
            finally:
                self.core.close_stream(stream)

        threading.Thread(target=read_requests, name="streaming-pull-reader", daemon=True).start()
        try:
            while context.is_active():
                batch = self.core.next_stream_batch(stream, wait_s=1.0)
                if batch is None:
                    return
                if not batch:
                    continue
                if self.core.faults.latency_ms > 0:
                    time.sleep(self.core.faults.latency_ms / 1000.0)
                response = PB["StreamingPullResponse"]()
                for ack_id, attempt, message in batch:
                    received = response.received_messages.add()
                    received.ack_id = ack_id
                    received.message.CopyFrom(message)
                    received.delivery_attempt = attempt
                yield response
        except ApiError as exc:
            self.core.close_stream(stream)
            _abort(context, exc)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        core = self.core
        publisher = {
            "CreateTopic": self.unary("Topic", "Topic", core.create_topic),
            "GetTopic": self.unary("GetTopicRequest", "Topic", lambda r: core.get_topic(r.topic)),
            "UpdateTopic": self.unary("UpdateTopicRequest", "Topic", core.update_topic),
            "ListTopics": self.unary("ListTopicsRequest", "ListTopicsResponse", self.list_topics),
            "ListTopicSubscriptions": self.unary(
                "ListTopicSubscriptionsRequest",
                "ListTopicSubscriptionsResponse",
                self.list_topic_subscriptions,
            ),
            "DeleteTopic": self.unary("DeleteTopicRequest", None, lambda r: core.delete_topic(r.topic)),
            "Publish": self.unary("PublishRequest", "PublishResponse", self.publish, may_fail=True),
        }
        subscriber = {
            "CreateSubscription": self.unary("Subscription", "Subscription", core.create_subscription),
            "GetSubscription": self.unary(
                "GetSubscriptionRequest", "Subscription", lambda r: core.get_subscription(r.subscription)
            ),
            "UpdateSubscription": self.unary(
                "UpdateSubscriptionRequest", "Subscription", core.update_subscription
            ),
            "ListSubscriptions": self.unary(
                "ListSubscriptionsRequest", "ListSubscriptionsResponse", self.list_subscriptions
            ),
            "DeleteSubscription": self.unary(
                "DeleteSubscriptionRequest", None, lambda r: core.delete_subscription(r.subscription)
            ),
            "Pull": self.unary("PullRequest", "PullResponse", self.pull, may_fail=True),
            "Acknowledge": self.unary(
                "AcknowledgeRequest",
                None,
                lambda r: core.acknowledge(r.subscription, r.ack_ids),
                may_fail=True,
            ),
            "ModifyAckDeadline": self.unary(
                "ModifyAckDeadlineRequest",
                None,
                lambda r: core.modify_ack_deadline(r.subscription, r.ack_ids, r.ack_deadline_seconds),
                may_fail=True,
            ),
            "Seek": self.unary("SeekRequest", "SeekResponse", self.seek),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                self.streaming_pull,
                request_deserializer=PB["StreamingPullRequest"].FromString,
                response_serializer=PB["StreamingPullResponse"].SerializeToString,
            ),
        }
        return [
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
        ]


# --- process ------------------------------------------------------------------------------------------
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 2 * MAX_MESSAGE_BYTES + 1024 * 1024),
    ("grpc.max_send_message_length", 2 * MAX_MESSAGE_BYTES + 1024 * 1024),
    # The official client pings every 30 s; never answer its keepalives with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
]


class PubSubEmulator:
    """The gRPC server plus its admin endpoint, in this process: ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int | None = 0,
        faults: Faults | None = None,
        time_divisor: float = 1.0,
        pull_wait_s: float = 3.0,
        max_workers: int = 128,
    ) -> None:
        self.core = PubSubCore(faults=faults, time_divisor=time_divisor, pull_wait_s=pull_wait_s)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers), options=SERVER_OPTIONS
        )
        self._server.add_generic_rpc_handlers(tuple(PubSubServicer(self.core).handlers()))
        self.host = host
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self._admin_port = admin_port
        self._admin: Any = None
        self.admin_port = 0

    def _admin_routes(
        self,
    ) -> dict[tuple[str, str], Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]]:
        core = self.core

        def get_faults(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
            return asdict(core.faults)

        def post_faults(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
            body = dict(body)
            dropped = 0
            if body.pop("reset", False):
                core.faults = Faults()
            if body.pop("drop_streams_now", False):
                dropped = core.drop_streams()
            candidate = Faults(**asdict(core.faults))
            candidate.update(body)
            core.faults = candidate
            LOG.info("faults now %s", asdict(candidate))
            return {**asdict(candidate), "streams_dropped_now": dropped}

        def get_stats(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
            return core.stats(with_messages=query.get("messages", "") not in ("", "0", "false"))

        def reset_stats(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
            core.reset_stats()
            return {"reset": True}

        def pause_delivery(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
            name, paused = body.get("subscription"), body.get("paused", True)
            if not isinstance(name, str) or not isinstance(paused, bool):
                raise ValueError('expected {"subscription": "projects/P/subscriptions/S", "paused": bool}')
            try:
                core.pause_delivery(name, paused)
            except ApiError as exc:
                raise ValueError(str(exc)) from exc
            return {"subscription": name, "paused": paused}

        return {
            ("GET", "/faults"): get_faults,
            ("POST", "/faults"): post_faults,
            ("GET", "/stats"): get_stats,
            ("POST", "/stats/reset"): reset_stats,
            ("POST", "/subscriptions/pause"): pause_delivery,
        }

    def start(self) -> None:
        self._server.start()
        if self._admin_port is not None:
            self._admin = serve_admin(self._admin_routes(), self.host, self._admin_port)
            self.admin_port = int(self._admin.server_address[1])

    def stop(self, grace_s: float = 1.0) -> None:
        self.core.close()
        self._server.stop(grace_s).wait(grace_s + 1)
        if self._admin is not None:
            self._admin.shutdown()
            self._admin.server_close()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"


def _build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Pub/Sub emulator (gRPC) with fault injection")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0 = pick a free one)")
    parser.add_argument("--admin-port", type=int, default=0, help="HTTP admin port (0 = pick a free one)")
    parser.add_argument("--ready-file", help="write {port, admin_port, pid} as JSON here once serving")
    parser.add_argument("--time-divisor", type=float, default=1.0, help="divide every deadline/backoff by N")
    parser.add_argument("--pull-wait-s", type=float, default=3.0, help="how long Pull waits for a message")
    parser.add_argument("--log-level", default="WARNING")
    for field in fields(Faults):
        parser.add_argument("--" + field.name.replace("_", "-"), type=float, default=0.0, dest=field.name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_arg_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    faults = Faults()
    faults.update({field.name: getattr(args, field.name) for field in fields(Faults)})
    emulator = PubSubEmulator(
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        faults=faults,
        time_divisor=args.time_divisor,
        pull_wait_s=args.pull_wait_s,
    )
    emulator.start()
    info = {"port": emulator.port, "admin_port": emulator.admin_port, "pid": os.getpid()}
    announce_and_wait(info, args.ready_file)
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
