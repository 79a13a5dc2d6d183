"""Pub/Sub emulator: ``retain_acked_messages`` and ``Seek`` to a time, through the official client.

Seek semantics as documented for ``SeekRequest.time``: retained messages published before the time are
marked acknowledged, retained messages published at or after it unacknowledged (acked ones come back).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions
from google.protobuf import field_mask_pb2

pytestmark = pytest.mark.integration

SubscriptionFactory = Callable[..., tuple[str, str]]
RETENTION = {"seconds": 900}


def pull(subscriber: Any, subscription: str, *, max_messages: int = 10) -> list[Any]:
    """What is deliverable right now (no long poll, so "nothing" costs no wait)."""
    request = {"subscription": subscription, "max_messages": max_messages, "return_immediately": True}
    return list(subscriber.pull(request=request, timeout=15).received_messages)


def publish(publisher: Any, topic: str, *names: str) -> None:
    for name in names:
        publisher.publish(topic, name.encode()).result(timeout=10)


def drain(subscriber: Any, subscription: str) -> dict[str, Any]:
    """Pull and ack everything deliverable now; ``{data: publish_time}``."""
    seen: dict[str, Any] = {}
    while received := pull(subscriber, subscription):
        subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in received])
        seen.update({r.message.data.decode(): r.message.publish_time for r in received})
    return seen


def seek(subscriber: Any, subscription: str, when: datetime.datetime) -> None:
    subscriber.seek(request={"subscription": subscription, "time": when})


def test_seek_to_a_time_redelivers_retained_acked_messages(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    topic, sub = make_subscription(retain_acked_messages=True, message_retention_duration=RETENTION)
    settings = subscriber.get_subscription(subscription=sub)
    assert settings.retain_acked_messages
    assert settings.message_retention_duration.total_seconds() == RETENTION["seconds"]

    publish(publisher, topic, "before")
    assert set(drain(subscriber, sub)) == {"before"}
    publish(publisher, topic, "window-1", "window-2")
    acked = drain(subscriber, sub)
    assert set(acked) == {"window-1", "window-2"}
    assert pull(subscriber, sub) == []  # retained is not redelivered

    # The window starts at its first message's publish time exactly (the boundary is inclusive).
    seek(subscriber, sub, min(acked.values()))
    assert set(drain(subscriber, sub)) == {"window-1", "window-2"}

    # Seeks repeat, and further back brings back everything retained.
    seek(subscriber, sub, datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5))
    assert set(drain(subscriber, sub)) == {"before", "window-1", "window-2"}


def test_seek_forward_acks_the_backlog_and_nothing_acked_returns_without_retention(
    publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    topic, sub = make_subscription()
    publish(publisher, topic, "acked")
    assert set(drain(subscriber, sub)) == {"acked"}
    publish(publisher, topic, "backlog-1", "backlog-2")
    leased = pull(subscriber, sub, max_messages=1)
    assert len(leased) == 1

    # Forward to now: the backlog and the outstanding lease are acknowledged (a purge).
    seek(subscriber, sub, datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1))
    assert pull(subscriber, sub) == []
    subscriber.modify_ack_deadline(subscription=sub, ack_ids=[leased[0].ack_id], ack_deadline_seconds=0)
    assert pull(subscriber, sub) == []  # its ack id died with the seek: a nack brings nothing back

    # Back to the past: without retain_acked_messages nothing acked was kept, so nothing returns.
    seek(subscriber, sub, datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5))
    assert pull(subscriber, sub) == []
    publish(publisher, topic, "after")
    assert set(drain(subscriber, sub)) == {"after"}


def test_retention_switched_on_by_update_and_seek_errors(
    stack: Any, publisher: Any, subscriber: Any, make_subscription: SubscriptionFactory
) -> None:
    topic, sub = make_subscription()
    subscriber.update_subscription(
        request={
            "subscription": {"name": sub, "retain_acked_messages": True},
            "update_mask": field_mask_pb2.FieldMask(paths=["retain_acked_messages"]),
        }
    )
    assert subscriber.get_subscription(subscription=sub).retain_acked_messages
    publish(publisher, topic, "kept")
    started = drain(subscriber, sub)["kept"]
    seek(subscriber, sub, started)
    assert set(drain(subscriber, sub)) == {"kept"}

    with pytest.raises(exceptions.MethodNotImplemented):
        subscriber.seek(
            request={"subscription": sub, "snapshot": f"projects/{stack.project}/snapshots/snap-1"}
        )
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.seek(request={"subscription": sub})
    with pytest.raises(exceptions.NotFound):
        seek(subscriber, f"projects/{stack.project}/subscriptions/no-such-sub", started)
