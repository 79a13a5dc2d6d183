"""The notification collector: a subscription of the harness's own on the results topic, keyed by job."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.cloud import pubsub_v1

from worker.dev.harness.jobs import KEY_ATTRIBUTE, RUN_ATTRIBUTE
from worker.dev.harness.stack_env import StackEnv


@dataclass(frozen=True)
class Notification:
    """One notification as received from the results topic."""

    data: Mapping[str, Any]
    attributes: Mapping[str, str]
    message_id: str
    received_monotonic: float

    @property
    def key(self) -> str | None:
        return self.attributes.get(KEY_ATTRIBUTE)

    @property
    def status(self) -> str | None:
        value = self.data.get("status")
        return value if isinstance(value, str) else None

    @property
    def error_code(self) -> str | None:
        error = self.data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return code if isinstance(code, str) else None
        return None


class NotificationCollector:
    """Pulls the results topic through a subscription of its own, keyed by the harness attribute.

    Synchronous Pull in a thread keeps this independent of the streaming machinery under test. The
    subscription is created on start and deleted on close.
    """

    def __init__(
        self, stack: StackEnv, *, run_id: str, max_messages: int = 1000, filter_expression: str = ""
    ) -> None:
        """``filter_expression``: a Pub/Sub subscription filter, as a client collecting only its own
        results would use (e.g. ``attributes.priority = "interactive"``)."""
        self._stack = stack
        self._run_id = run_id
        self._filter = filter_expression
        self._max_messages = max_messages
        self._subscriber = pubsub_v1.SubscriberClient()
        self.subscription = stack.subscription_path(f"loadgen-results-{run_id}")
        self._lock = threading.Condition()
        self._by_key: dict[str, list[Notification]] = {}
        self.redelivered = 0
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> NotificationCollector:
        self._subscriber.create_subscription(
            request={
                "name": self.subscription,
                "topic": self._stack.topic_path(self._stack.results_topic),
                "ack_deadline_seconds": 60,
                "filter": self._filter,
            }
        )
        self._thread = threading.Thread(target=self._run, name="loadgen-collector", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": self._max_messages},
                    timeout=5.0,
                )
            except Exception:  # the emulator may be restarted or drop streams under chaos
                self._stop.wait(0.2)
                continue
            ack_ids = []
            now = time.monotonic()
            with self._lock:
                for received in response.received_messages:
                    ack_ids.append(received.ack_id)
                    self._record(received.message, now)
                self._lock.notify_all()
            if ack_ids:
                with contextlib.suppress(Exception):
                    self._subscriber.acknowledge(
                        request={"subscription": self.subscription, "ack_ids": ack_ids}
                    )
            elif not response.received_messages:
                self._stop.wait(0.05)

    def _record(self, message: Any, now: float) -> None:
        attributes = dict(message.attributes)
        if attributes.get(RUN_ATTRIBUTE) != self._run_id:  # another run's, on a shared topic
            return
        try:
            data = json.loads(bytes(message.data).decode("utf-8"))
        except ValueError:
            data = {"_undecodable": True}
        message_id = str(message.message_id)
        if message_id in self._seen:
            # The emulator's "redeliver acked" fault hits this subscription too: the same Pub/Sub message
            # again is not a second notification from the fleet, so it is not counted as one.
            self.redelivered += 1
            return
        self._seen.add(message_id)
        note = Notification(data, attributes, message_id, now)
        self._by_key.setdefault(attributes.get(KEY_ATTRIBUTE, ""), []).append(note)

    def snapshot(self) -> dict[str, list[Notification]]:
        with self._lock:
            return {k: list(v) for k, v in self._by_key.items()}

    def wait_for(self, keys: Iterable[str], *, timeout_s: float, poll_s: float = 0.5) -> set[str]:
        """Wait until every key has at least one notification; return the keys still missing."""
        missing = set(keys)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                missing = {k for k in missing if k not in self._by_key}
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0:
                    return missing
                self._lock.wait(min(poll_s, remaining))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._subscriber.delete_subscription(request={"subscription": self.subscription})
        with contextlib.suppress(Exception):
            self._subscriber.close()
