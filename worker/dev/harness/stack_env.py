"""The local stack's environment as the harness reads it: ``.devstack/env`` values with typed accessors."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from worker.shared import environment
from worker.shared.resources import load_resources


@functools.cache
def _defaults(project: str) -> Mapping[str, str]:
    # The names `scripts/devstack up` and Terraform create: a variable left unset falls back to them.
    return environment.resource_environment(load_resources(), project)


@dataclass(frozen=True)
class StackEnv:
    """The ``.devstack/env`` variables; resource names default to ``fleet.json``'s for the project."""

    values: Mapping[str, str]

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def _resource(self, name: str) -> str:
        return self.values[name] if name in self.values else _defaults(self.project)[name]

    @property
    def project(self) -> str:
        return self.values.get(environment.PROJECT, "local-project")

    @property
    def jobs_topic(self) -> str:
        return self._resource(environment.JOBS_TOPIC)

    @property
    def results_topic(self) -> str:
        return self._resource(environment.RESULTS_TOPIC)

    @property
    def input_bucket(self) -> str:
        return self._resource(environment.INPUT_BUCKET)

    @property
    def results_bucket(self) -> str:
        return self._resource(environment.RESULTS_BUCKET)

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def process_env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` + the stack variables + ``extra``: the environment of a child process."""
        env = dict(os.environ)
        env.update(self.values)
        env.update(extra)
        return env
