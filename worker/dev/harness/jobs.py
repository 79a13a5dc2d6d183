"""Job messages and publishing them: what a client does, with the attributes the harness counts by."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from google.cloud import pubsub_v1

#: Client attribute every harness job carries, so a run's notifications can be told from others'.
RUN_ATTRIBUTE = "loadgen_run"
#: Client attribute naming the case or job key, echoed on the notification (job_id may be unusable).
KEY_ATTRIBUTE = "loadgen_key"


def new_run_id() -> str:
    """A short random id naming one harness run (its topics, subscription and job ids)."""
    return uuid.uuid4().hex[:10]


class Message(NamedTuple):
    """One Pub/Sub message to publish: raw data and attributes (anything, including invalid data)."""

    key: str
    data: bytes
    attributes: dict[str, str]


def job_message(
    key: str,
    *,
    job_id: str,
    input_uri: str,
    run_id: str,
    priority: str = "batch",
    analyses: Sequence[str] | None = None,
    deadline: str | None = None,
    params: Mapping[str, Any] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Message:
    """A well-formed job message; the harness attributes let the collector find its notification."""
    body: dict[str, Any] = {
        "schema_version": 1,
        "job_id": job_id,
        "input_uri": input_uri,
        "priority": priority,
    }
    if analyses is not None:
        body["analyses"] = list(analyses)
    if deadline is not None:
        body["deadline"] = deadline
    if params is not None:
        body["params"] = dict(params)
    attrs = {"priority": priority, "job_id": job_id, RUN_ATTRIBUTE: run_id, KEY_ATTRIBUTE: key}
    attrs.update(attributes or {})
    return Message(key, json.dumps(body, separators=(",", ":")).encode(), attrs)


@dataclass
class Published:
    """What the publisher learned about one message."""

    message: Message
    message_id: str
    published_monotonic: float


def new_publisher() -> Any:
    """A PublisherClient that batches for throughput (the emulator honours PUBSUB_EMULATOR_HOST)."""
    settings = pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01, max_bytes=4 * 1024 * 1024)
    return pubsub_v1.PublisherClient(batch_settings=settings)


def publish_all(
    publisher: Any,
    topic_path: str,
    messages: Iterable[Message],
    *,
    rate_per_s: float | None = None,
    timeout_s: float = 120.0,
) -> list[Published]:
    """Publish ``messages`` (optionally paced at ``rate_per_s``) and wait for every message id."""
    pending: list[tuple[Message, float, Any]] = []
    start = time.monotonic()
    for index, message in enumerate(messages):
        if rate_per_s:
            due = start + index / rate_per_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        future = publisher.publish(topic_path, message.data, **message.attributes)
        pending.append((message, time.monotonic(), future))
    return [Published(m, str(f.result(timeout=timeout_s)), t) for m, t, f in pending]
