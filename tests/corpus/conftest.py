"""The harness stack: the session's shared ``stack`` fixture when tests/conftest.py provides one, else a
private stack (own emulators and tritonserver on free ports) started once for this directory's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import storage

from worker import loadgen


@pytest.fixture(scope="session")
def harness_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[loadgen.StackEnv]:
    try:
        stack = request.getfixturevalue("stack")
    except pytest.FixtureLookupError:
        stack = None
    if stack is not None:
        yield loadgen.StackEnv(dict(stack.env))
        return
    with loadgen.private_stack(tmp_path_factory.mktemp("harness-stack")) as env:
        yield env


@pytest.fixture(scope="session")
def harness_storage(harness_env: loadgen.StackEnv) -> Any:
    return storage.Client(project=harness_env.project)
