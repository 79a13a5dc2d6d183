"""The three Google clients the SDK talks to, as the few methods it calls (``typing.Protocol``).

``google.cloud.pubsub_v1``'s clients and ``google.cloud.storage.Client`` satisfy them as they are; unit
tests pass small fakes of the same shape.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol


class Publisher(Protocol):
    """``pubsub_v1.PublisherClient``: one future per message, resolved when the server has it."""

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]: ...


class Subscriber(Protocol):
    """``pubsub_v1.SubscriberClient``: the unary calls the SDK makes (no streaming pull)."""

    def create_subscription(self, request: dict[str, Any]) -> Any: ...

    def delete_subscription(self, request: dict[str, Any]) -> Any: ...

    def pull(self, request: dict[str, Any], timeout: float) -> Any: ...

    def acknowledge(self, request: dict[str, Any]) -> Any: ...

    def modify_ack_deadline(self, request: dict[str, Any]) -> Any: ...


class Storage(Protocol):
    """``storage.Client``: buckets by name (blobs are the library's own objects)."""

    def bucket(self, name: str, /) -> Any: ...
