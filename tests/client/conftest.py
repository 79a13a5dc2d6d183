"""Fixtures shared by the client's unit tests."""

from __future__ import annotations

import pytest

from worker.client import sdk
from worker.client.connections import Connections


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI must fail on bad input before it creates any subscription, publisher or storage client."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CLI reached the network on bad input")

    monkeypatch.setattr(sdk.FleetClient, "open", refuse)
    monkeypatch.setattr(Connections, "publisher", refuse)
    monkeypatch.setattr(Connections, "storage", refuse)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "local-project")
    monkeypatch.setenv("FLEET_DEVSTACK_ENV", "/nonexistent")
