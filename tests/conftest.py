"""Session fixtures shared by the whole suite: ONE local stack per pytest session and the official clients.

- ``stack``: starts ``worker.dev.devstack.stack.up`` in a private temporary work dir (so a developer's own
  ``scripts/devstack up`` is untouched), exports its env into ``os.environ`` for the session, and stops
  every process at the end. Attributes: ``env``, ``project``, ``resources``, ``pubsub_admin``,
  ``gcs_admin``. When the stack cannot start, integration tests FAIL if ``CI`` is set, otherwise skip.
- ``publisher`` / ``subscriber``: ``google.cloud.pubsub_v1`` clients; ``storage_client``: GCS client.
- ``make_topic`` / ``make_subscription``: per-test resources with unique names, deleted afterwards. The
  stack is shared by every test of the session: use these (or the fleet resources with care), and reset
  any fault you set (``pubsub_faults`` / ``gcs_faults`` do it for you).
- ``unique_name(prefix)``: a resource id that no other test uses.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import pubsub_v1, storage  # type: ignore[attr-defined]  # storage has no py.typed

from worker.dev import harness
from worker.dev.devstack.admin_http import AdminClient
from worker.dev.devstack.pubsub_emulator import TIME_DIVISOR_LABEL
from worker.dev.devstack.stack import Stack, down, up


def unique_name(prefix: str = "t") -> str:
    """A Pub/Sub-valid resource id unique to this call (starts with a letter, 3-255 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work_dir = tmp_path_factory.mktemp("devstack")
    try:
        running = up(work_dir=work_dir)
    except Exception as exc:  # any failure to start is reported the same way
        message = f"the local stack could not start: {type(exc).__name__}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    saved = {key: os.environ.get(key) for key in running.env}
    os.environ.update(running.env)
    try:
        yield running
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        down(work_dir=work_dir)


@pytest.fixture(scope="session")
def publisher(stack: Stack) -> Iterator[Any]:
    client = pubsub_v1.PublisherClient()
    yield client
    client.stop()


@pytest.fixture(scope="session")
def subscriber(stack: Stack) -> Iterator[Any]:
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


@pytest.fixture(scope="session")
def storage_client(stack: Stack) -> Any:
    return storage.Client(project=stack.project)


@pytest.fixture
def make_topic(stack: Stack, publisher: Any) -> Iterator[Callable[..., str]]:
    """``make_topic(prefix="t") -> topic path``; deleted after the test."""
    created: list[str] = []

    def _make(prefix: str = "topic") -> str:
        path = str(publisher.topic_path(stack.project, unique_name(prefix)))
        publisher.create_topic(name=path)
        created.append(path)
        return path

    yield _make
    for path in created:
        with contextlib.suppress(Exception):  # already deleted by the test
            publisher.delete_topic(topic=path)


@pytest.fixture
def make_subscription(
    stack: Stack, subscriber: Any, make_topic: Callable[..., str]
) -> Iterator[Callable[..., tuple[str, str]]]:
    """``make_subscription(topic=None, time_divisor=None, **fields) -> (topic path, subscription path)``.

    ``fields`` are ``google.pubsub_v1.types.Subscription`` fields (``ack_deadline_seconds``, ``filter``,
    ``retry_policy``, ``dead_letter_policy``...). ``time_divisor=N`` labels the subscription so the
    emulator divides its deadlines and backoffs by N (tests see a 10 s deadline expire in 10/N s).
    """
    created: list[str] = []

    def _make(
        topic: str | None = None, *, time_divisor: float | None = None, **fields: Any
    ) -> tuple[str, str]:
        topic_path = topic or make_topic()
        path = str(subscriber.subscription_path(stack.project, unique_name("sub")))
        labels = dict(fields.pop("labels", {}))
        if time_divisor is not None:
            labels[TIME_DIVISOR_LABEL] = str(time_divisor)
        subscriber.create_subscription(
            request={"name": path, "topic": topic_path, "labels": labels, **fields}
        )
        created.append(path)
        return topic_path, path

    yield _make
    for path in created:
        with contextlib.suppress(Exception):  # already deleted by the test
            subscriber.delete_subscription(subscription=path)


@pytest.fixture
def pubsub_faults(stack: Stack) -> Iterator[AdminClient]:
    """The Pub/Sub emulator's admin client; every fault is cleared after the test."""
    admin = stack.pubsub_admin
    admin.clear_faults()
    yield admin
    admin.clear_faults()


@pytest.fixture
def gcs_faults(stack: Stack) -> Iterator[AdminClient]:
    """The GCS emulator's admin client; every fault is cleared after the test."""
    admin = stack.gcs_admin
    admin.clear_faults()
    yield admin
    admin.clear_faults()


@pytest.fixture(scope="session")
def harness_env(stack: Stack) -> harness.StackEnv:
    """The session stack's environment in the load generator's form (corpus, security and soak tests)."""
    return harness.StackEnv(dict(stack.env))


@pytest.fixture(scope="session")
def harness_storage(storage_client: Any) -> Any:
    """The official storage client the harness tests read results with (the session's own)."""
    return storage_client
