"""Small fakes of the three Google clients for the client's unit tests: they record what was asked.

Integration tests (test_client_integration.py) use the real clients against the local stack.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from google.api_core import exceptions as gexc

from worker.client import sdk

SETTINGS = sdk.ClientSettings(
    project="p",
    jobs_topic="fleet-jobs",
    results_topic="fleet-results",
    dead_letter_hold_subscription="fleet-dead-letter-hold",
    input_bucket="p-fleet-inputs",
    results_bucket="p-fleet-results",
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


class FakePublisher:
    """Records publishes; the n-th publish (0-based) in ``fail_at`` gets a failed future."""

    def __init__(self, fail_at: frozenset[int] = frozenset()) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.fail_at = fail_at

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        future: Future[str] = Future()
        if len(self.published) in self.fail_at:
            future.set_exception(RuntimeError("publish refused"))
        else:
            future.set_result(str(len(self.published)))
        self.published.append((topic, data, attributes))
        return future


class FakeSubscriber:
    """Records subscriptions created and deleted, acks and nacks; every pull comes back empty."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.acked: list[str] = []
        self.nacked: list[str] = []

    def create_subscription(self, request: dict[str, Any]) -> None:
        self.created.append(request)

    def delete_subscription(self, request: dict[str, Any]) -> None:
        self.deleted.append(request["subscription"])

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        return SimpleNamespace(received_messages=[])

    def acknowledge(self, request: dict[str, Any]) -> None:
        self.acked.extend(request["ack_ids"])

    def modify_ack_deadline(self, request: dict[str, Any]) -> None:
        assert request["ack_deadline_seconds"] == 0
        self.nacked.extend(request["ack_ids"])


class NoStorage:
    def bucket(self, name: str) -> Any:
        raise AssertionError("storage must not be touched")


class FakeStorage:
    """Objects in memory, keyed ``bucket/name``; records every read."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self.reads: list[str] = []

    def bucket(self, name: str) -> Any:
        return SimpleNamespace(blob=lambda object_name: _FakeBlob(self, f"{name}/{object_name}"))


class _FakeBlob:
    def __init__(self, storage: FakeStorage, key: str) -> None:
        self._storage = storage
        self._key = key

    def download_as_bytes(self) -> bytes:
        self._storage.reads.append(self._key)
        if self._key not in self._storage.objects:
            raise gexc.NotFound(self._key)  # type: ignore[no-untyped-call]
        return self._storage.objects[self._key]

    def exists(self) -> bool:
        return self._key in self._storage.objects

    def upload_from_filename(self, filename: str, *, if_generation_match: int) -> None:
        if if_generation_match == 0 and self._key in self._storage.objects:
            raise gexc.PreconditionFailed(self._key)  # type: ignore[no-untyped-call]
        self._storage.objects[self._key] = Path(filename).read_bytes()


def fake_client(
    publisher: FakePublisher | None = None,
    subscriber: FakeSubscriber | None = None,
    *,
    settings: sdk.ClientSettings = SETTINGS,
    storage: Any = None,
) -> sdk.FleetClient:
    return sdk.FleetClient(
        settings,
        publisher=publisher or FakePublisher(),
        subscriber=subscriber or FakeSubscriber(),
        storage_client=storage or NoStorage(),
    )
