"""The Pub/Sub emulator's semantics, proved through the official google-cloud-pubsub client.

Subscriptions that must see deadlines expire or backoffs elapse carry the ``devstack-time-divisor`` label
(see the emulator docstring): the API still enforces the real 10-600 s ranges, the clock runs N times faster.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

pytestmark = pytest.mark.integration

SubscriptionFactory = Callable[..., tuple[str, str]]


def pull(subscriber: Any, subscription: str, *, max_messages: int = 10, wait: bool = False) -> list[Any]:
    response = subscriber.pull(
        request={"subscription": subscription, "max_messages": max_messages, "return_immediately": not wait},
        timeout=15,
    )
    return list(response.received_messages)


def pull_until(subscriber: Any, subscription: str, *, timeout_s: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        received = pull(subscriber, subscription, wait=True)
        if received:
            return received
    raise AssertionError(f"nothing delivered on {subscription} within {timeout_s} s")


def backoff(min_s: int, max_s: int) -> dict[str, Any]:
    return {
        "minimum_backoff": duration_pb2.Duration(seconds=min_s),
        "maximum_backoff": duration_pb2.Duration(seconds=max_s),
    }


# --- resource management and status codes ----------------------------------------------------------------
def test_topic_and_subscription_lifecycle_and_status_codes(
    stack: Any, publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    topic, sub = make_subscription(ack_deadline_seconds=30)
    assert publisher.get_topic(topic=topic).name == topic
    got = subscriber.get_subscription(subscription=sub)
    assert (got.topic, got.ack_deadline_seconds) == (topic, 30)
    project = f"projects/{stack.project}"
    assert topic in [t.name for t in publisher.list_topics(project=project)]
    assert sub in [s.name for s in subscriber.list_subscriptions(project=project)]
    assert sub in list(publisher.list_topic_subscriptions(topic=topic))

    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=topic)
    with pytest.raises(exceptions.AlreadyExists):
        subscriber.create_subscription(name=sub, topic=topic)
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=f"{project}/topics/no-such-topic")
    with pytest.raises(exceptions.NotFound):
        subscriber.create_subscription(
            name=f"{project}/subscriptions/orphan-sub", topic=f"{project}/topics/nope"
        )
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(name=f"{project}/topics/x")  # ids are 3-255 chars starting with a letter
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(name=f"{project}/topics/goog-reserved")
    with pytest.raises(exceptions.InvalidArgument):
        make_subscription(topic, ack_deadline_seconds=5)
    with pytest.raises(exceptions.InvalidArgument):
        make_subscription(topic, filter='attributes.a = "1" AND attributes.b = "2" OR attributes:c')
    with pytest.raises(exceptions.InvalidArgument):
        make_subscription(topic, dead_letter_policy={"dead_letter_topic": topic, "max_delivery_attempts": 3})
    with pytest.raises(exceptions.InvalidArgument):
        make_subscription(topic, retry_policy=backoff(10, 601))

    subscriber.delete_subscription(subscription=sub)
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(subscription=sub)
    with pytest.raises(exceptions.NotFound):
        subscriber.delete_subscription(subscription=sub)


def test_publish_sets_ids_and_limits_message_size(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    topic, sub = make_subscription()
    message_id = publisher.publish(topic, b"payload", job_id="j-1").result(timeout=10)
    (received,) = pull_until(subscriber, sub)
    assert received.message.message_id == message_id
    assert received.message.data == b"payload"
    assert dict(received.message.attributes) == {"job_id": "j-1"}
    assert received.message.publish_time.timestamp() > time.time() - 60
    assert received.delivery_attempt == 0  # no dead-letter policy, no delivery_attempt
    subscriber.acknowledge(subscription=sub, ack_ids=[received.ack_id])
    # Unknown (here: already used) ack ids are ignored like the real service; malformed ones are not.
    subscriber.acknowledge(subscription=sub, ack_ids=[received.ack_id])
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.acknowledge(subscription=sub, ack_ids=["not-an-ack-id"])

    with pytest.raises(exceptions.InvalidArgument):
        publisher.api.publish(topic=topic, messages=[{"data": b"x" * (10 * 1024 * 1024 + 1)}], retry=None)
    with pytest.raises(exceptions.InvalidArgument):
        publisher.api.publish(topic=topic, messages=[{}], retry=None)


# --- delivery semantics -----------------------------------------------------------------------------------
def test_message_is_redelivered_after_its_ack_deadline_expires(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    # 10 s deadline at divisor 20 = 0.5 s.
    topic, sub = make_subscription(ack_deadline_seconds=10, time_divisor=20)
    publisher.publish(topic, b"expire-me").result(timeout=10)
    (first,) = pull_until(subscriber, sub)
    assert pull(subscriber, sub) == []  # leased: not redelivered before the deadline
    time.sleep(0.8)
    (second,) = pull_until(subscriber, sub)
    assert second.message.message_id == first.message.message_id
    assert second.ack_id != first.ack_id
    subscriber.acknowledge(subscription=sub, ack_ids=[second.ack_id])
    time.sleep(0.8)
    assert pull(subscriber, sub) == []  # acked: gone for good


def test_nack_redelivers_after_exponential_retry_backoff(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    # retry_policy 10 s .. 600 s at divisor 10: first backoff 1.0 s, second 2.0 s.
    topic, sub = make_subscription(ack_deadline_seconds=60, retry_policy=backoff(10, 600), time_divisor=10)
    publisher.publish(topic, b"nack-me").result(timeout=10)
    (received,) = pull_until(subscriber, sub)
    gaps = []
    for _ in range(2):
        nacked_at = time.monotonic()
        subscriber.modify_ack_deadline(subscription=sub, ack_ids=[received.ack_id], ack_deadline_seconds=0)
        assert pull(subscriber, sub) == []  # backing off, not immediately redelivered
        received = pull_until(subscriber, sub)[0]
        gaps.append(time.monotonic() - nacked_at)
    assert 0.9 <= gaps[0] < 1.9, gaps
    assert 1.9 <= gaps[1] < 3.5, gaps
    subscriber.acknowledge(subscription=sub, ack_ids=[received.ack_id])


def test_dead_lettering_after_max_delivery_attempts(
    publisher: Any, subscriber: Any, make_topic: Callable[..., str], make_subscription: SubscriptionFactory
) -> None:
    dead_letter_topic = make_topic("dlq")
    _, dead_letter_sub = make_subscription(dead_letter_topic)
    topic, sub = make_subscription(
        retry_policy=backoff(0, 0),
        dead_letter_policy={"dead_letter_topic": dead_letter_topic, "max_delivery_attempts": 5},
    )
    publisher.publish(topic, b"poison", job_id="poison-1").result(timeout=10)
    attempts = []
    for _ in range(5):
        (received,) = pull_until(subscriber, sub)
        attempts.append(received.delivery_attempt)
        subscriber.modify_ack_deadline(subscription=sub, ack_ids=[received.ack_id], ack_deadline_seconds=0)
    assert attempts == [1, 2, 3, 4, 5]
    (dead,) = pull_until(subscriber, dead_letter_sub)
    assert dead.message.data == b"poison"
    attributes = dict(dead.message.attributes)
    assert attributes["job_id"] == "poison-1"
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == sub.rsplit("/", 1)[-1]
    assert pull(subscriber, sub) == []
    subscriber.acknowledge(subscription=dead_letter_sub, ack_ids=[dead.ack_id])


def test_filtered_subscriptions_route_by_priority_like_the_fleet_lanes(
    stack: Any,
    publisher: Any,
    subscriber: Any,
    make_topic: Callable[..., str],
    make_subscription: SubscriptionFactory,
) -> None:
    topic = make_topic("jobs")
    lanes = {lane.name: make_subscription(topic, filter=lane.filter)[1] for lane in stack.resources.lanes}
    _, prefixed = make_subscription(topic, filter='hasPrefix(attributes.job_id, "vip-") OR attributes:urgent')
    for job_id, attributes in [
        ("i-1", {"priority": "interactive"}),
        ("b-1", {"priority": "batch"}),
        ("n-1", {}),
        ("vip-1", {"priority": "batch"}),
        ("u-1", {"urgent": "yes"}),
    ]:
        publisher.publish(topic, job_id.encode(), job_id=job_id, **attributes).result(timeout=10)

    def drain(subscription: str) -> set[str]:
        seen: set[str] = set()
        while received := pull(subscriber, subscription, max_messages=100, wait=not seen):
            seen |= {r.message.attributes["job_id"] for r in received}
            subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in received])
        return seen

    assert drain(lanes["interactive"]) == {"i-1"}
    assert drain(lanes["batch"]) == {"b-1", "n-1", "vip-1", "u-1"}
    assert drain(prefixed) == {"vip-1", "u-1"}


def test_streaming_pull_never_exceeds_client_flow_control(
    stack: Any, publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    topic, sub = make_subscription(ack_deadline_seconds=60)
    total = 40
    for future in [publisher.publish(topic, str(i).encode()) for i in range(total)]:
        future.result(timeout=10)
    lock = threading.Lock()
    state = {"in_flight": 0, "max_in_flight": 0, "done": 0}
    finished = threading.Event()

    def callback(message: Any) -> None:
        with lock:
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        time.sleep(0.02)
        with lock:
            state["in_flight"] -= 1
            state["done"] += 1
            if state["done"] >= total:
                finished.set()
        message.ack()

    future = subscriber.subscribe(sub, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=3))
    try:
        assert finished.wait(30), state
    finally:
        future.cancel()
    stats = stack.pubsub_admin.stats()["subscriptions"][sub.rsplit("/", 1)[-1]]
    assert 1 <= stats["max_stream_outstanding"] <= 3, stats  # the server never leased more than asked
    assert state["max_in_flight"] <= 3


# --- fault injection --------------------------------------------------------------------------------------
def test_fault_drop_streams_now_and_at_a_rate_clients_recover(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory, pubsub_faults: Any
) -> None:
    topic, sub = make_subscription(ack_deadline_seconds=10, time_divisor=10)
    received: set[str] = set()
    lock = threading.Lock()

    def callback(message: Any) -> None:
        with lock:
            received.add(message.data.decode())
        message.ack()

    future = subscriber.subscribe(sub, callback)
    try:
        publisher.publish(topic, b"before").result(timeout=10)
        deadline = time.monotonic() + 10
        while "before" not in received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pubsub_faults.set_faults(drop_streams_now=True)["streams_dropped_now"] >= 1
        pubsub_faults.set_faults(stream_drop_rate=0.3)
        for future in [publisher.publish(topic, f"m{i}".encode()) for i in range(20)]:
            future.result(timeout=10)
        deadline = time.monotonic() + 30
        while len(received) < 21 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        future.cancel()
    assert received >= {"before", *(f"m{i}" for i in range(20))}
    assert pubsub_faults.stats()["streams_opened"] >= 2  # the client reconnected after the drops


def test_fault_latency_and_unavailable(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory, pubsub_faults: Any
) -> None:
    topic, sub = make_subscription()
    pubsub_faults.set_faults(latency_ms=300)
    started = time.monotonic()
    publisher.publish(topic, b"slow").result(timeout=10)
    assert time.monotonic() - started >= 0.3
    pubsub_faults.set_faults(latency_ms=0, unavailable_rate=1.0)
    with pytest.raises(exceptions.ServiceUnavailable):
        subscriber.pull(request={"subscription": sub, "max_messages": 1}, retry=None, timeout=10)
    assert pubsub_faults.stats()["unavailable_injected"] >= 1


def test_fault_redeliver_acked_messages(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory, pubsub_faults: Any
) -> None:
    topic, sub = make_subscription()
    publisher.publish(topic, b"twice").result(timeout=10)
    (first,) = pull_until(subscriber, sub)
    pubsub_faults.set_faults(redeliver_acked_rate=1.0)
    subscriber.acknowledge(subscription=sub, ack_ids=[first.ack_id])
    pubsub_faults.set_faults(redeliver_acked_rate=0.0)
    (again,) = pull_until(subscriber, sub)
    assert again.message.message_id == first.message.message_id
    subscriber.acknowledge(subscription=sub, ack_ids=[again.ack_id])
    stats = pubsub_faults.stats()["subscriptions"][sub.rsplit("/", 1)[-1]]
    assert stats["acked_redelivered"] == 1
    assert stats["deliveries_histogram"] == {"2": 1}


def test_fault_failed_acks_come_back_after_the_deadline(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory, pubsub_faults: Any
) -> None:
    topic, sub = make_subscription(ack_deadline_seconds=10, time_divisor=20)
    publisher.publish(topic, b"lost-ack").result(timeout=10)
    (first,) = pull_until(subscriber, sub)
    pubsub_faults.set_faults(ack_failure_rate=1.0)
    subscriber.acknowledge(subscription=sub, ack_ids=[first.ack_id])
    pubsub_faults.set_faults(ack_failure_rate=0.0)
    time.sleep(0.8)
    (again,) = pull_until(subscriber, sub)
    assert again.message.message_id == first.message.message_id
    subscriber.acknowledge(subscription=sub, ack_ids=[again.ack_id])
    assert pubsub_faults.stats()["subscriptions"][sub.rsplit("/", 1)[-1]]["acks_dropped"] == 1


def test_admin_pause_holds_a_subscriptions_messages_until_resumed(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory, pubsub_faults: Any
) -> None:
    topic, sub = make_subscription()
    # Given a paused subscription with messages published to it
    pubsub_faults.pause_delivery(sub)
    for index in range(3):
        publisher.publish(topic, f"held-{index}".encode()).result(timeout=10)
    # Then neither a plain Pull nor a long-poll delivers them
    assert pull(subscriber, sub) == []
    # When it is resumed while a long-poll waits
    waiting: list[Any] = []
    poller = threading.Thread(target=lambda: waiting.extend(pull(subscriber, sub, wait=True)))
    poller.start()
    time.sleep(0.3)
    assert poller.is_alive() and waiting == []
    pubsub_faults.pause_delivery(sub, paused=False)
    poller.join(timeout=10)
    # Then the waiting Pull gets them at once, nothing lost
    assert sorted(m.message.data for m in waiting) == [b"held-0", b"held-1", b"held-2"]
    subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in waiting])
    # and an unknown subscription is a clear error on the admin endpoint
    with pytest.raises(urllib.error.HTTPError) as failure:
        pubsub_faults.pause_delivery(f"{sub}-missing")
    assert failure.value.code == 400
    failure.value.close()
