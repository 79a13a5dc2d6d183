"""Resource names shared by the worker, the local stack, the tests and the Terraform module.

The single source of truth is ``terraform/fleet.json``; Terraform reads it with ``jsondecode`` and
``scripts/devstack`` creates the same topics, subscriptions and buckets locally. Set ``FLEET_CONFIG`` to
read another file (an installed worker in production gets every name from its environment instead).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Shipped as package data: a copy of terraform/fleet.json, which Terraform reads (a test keeps the two
# identical), so an installed client or worker has the names without the checkout.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "fleet.json"
TERRAFORM_CONFIG_PATH = Path(__file__).resolve().parents[2] / "terraform" / "fleet.json"


@dataclass(frozen=True)
class Lane:
    """One priority lane: a filtered subscription on the jobs topic."""

    name: str
    subscription: str
    filter: str
    ack_deadline_s: int
    retry_min_backoff_s: int
    retry_max_backoff_s: int
    max_delivery_attempts: int
    message_retention_s: int


@dataclass(frozen=True)
class FleetResources:
    """Short (unprefixed) names from the config, and helpers that expand them."""

    name_prefix: str
    jobs_topic: str
    results_topic: str
    dead_letter_topic: str
    dead_letter_subscription: str
    dead_letter_handler_subscription: str
    lanes: tuple[Lane, ...]
    inputs_bucket_suffix: str
    results_bucket_suffix: str
    results_prefix: str

    def full(self, short_name: str) -> str:
        """``jobs`` -> ``fleet-jobs``: the resource id used for topics and subscriptions."""
        return f"{self.name_prefix}-{short_name}"

    def bucket(self, project: str, suffix: str) -> str:
        """Bucket names are global, so they carry the project id."""
        return f"{project}-{self.name_prefix}-{suffix}"

    def inputs_bucket(self, project: str) -> str:
        return self.bucket(project, self.inputs_bucket_suffix)

    def results_bucket(self, project: str) -> str:
        return self.bucket(project, self.results_bucket_suffix)

    def lane(self, name: str) -> Lane:
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise KeyError(f"no lane named {name!r}; lanes are {[lane.name for lane in self.lanes]}")


def load_resources(path: Path | str | None = None) -> FleetResources:
    """Read the fleet config (``FLEET_CONFIG`` or ``terraform/fleet.json``)."""
    config_path = Path(path or os.environ.get("FLEET_CONFIG") or DEFAULT_CONFIG_PATH)
    raw: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    return FleetResources(
        name_prefix=raw["name_prefix"],
        jobs_topic=raw["topics"]["jobs"],
        results_topic=raw["topics"]["results"],
        dead_letter_topic=raw["topics"]["dead_letter"],
        dead_letter_subscription=raw["dead_letter_subscription"],
        dead_letter_handler_subscription=raw["dead_letter_handler_subscription"],
        lanes=tuple(Lane(**lane) for lane in raw["lanes"]),
        inputs_bucket_suffix=raw["buckets"]["inputs"],
        results_bucket_suffix=raw["buckets"]["results"],
        results_prefix=raw["results_prefix"],
    )
