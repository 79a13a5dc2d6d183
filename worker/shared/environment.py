"""The environment contract shared by clients, workers, the local stack and Terraform: one home.

``RESOURCE_VARIABLES`` are the ``FLEET_*`` names of the fleet's topics, subscriptions and buckets;
``resource_environment`` gives their values for a project from ``fleet.json`` (the same names Terraform
creates), so every reader falls back to the same defaults. The worker's own tuning knobs
(``FLEET_PIPELINE_SLOTS`` ...) live with their defaults in ``worker.runtime.settings``. ``read_env_file``
parses the ``.devstack/env`` file that ``scripts/devstack up`` writes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Final

from worker.shared.resources import FleetResources

PROJECT: Final = "GOOGLE_CLOUD_PROJECT"
PUBSUB_EMULATOR_HOST: Final = "PUBSUB_EMULATOR_HOST"
STORAGE_EMULATOR_HOST: Final = "STORAGE_EMULATOR_HOST"
TRITON_GRPC_URL: Final = "TRITON_GRPC_URL"
TRITON_HTTP_URL: Final = "TRITON_HTTP_URL"

JOBS_TOPIC: Final = "FLEET_JOBS_TOPIC"
RESULTS_TOPIC: Final = "FLEET_RESULTS_TOPIC"
DEAD_LETTER_TOPIC: Final = "FLEET_DEAD_LETTER_TOPIC"
INTERACTIVE_SUBSCRIPTION: Final = "FLEET_INTERACTIVE_SUBSCRIPTION"
BATCH_SUBSCRIPTION: Final = "FLEET_BATCH_SUBSCRIPTION"
DEAD_LETTER_SUBSCRIPTION: Final = "FLEET_DEAD_LETTER_SUBSCRIPTION"
DEAD_LETTER_HANDLER_SUBSCRIPTION: Final = "FLEET_DEAD_LETTER_HANDLER_SUBSCRIPTION"
INPUT_BUCKET: Final = "FLEET_INPUT_BUCKET"
RESULTS_BUCKET: Final = "FLEET_RESULTS_BUCKET"
#: The local stack's fault-injection endpoints (dev only).
PUBSUB_ADMIN_URL: Final = "FLEET_PUBSUB_ADMIN_URL"
GCS_ADMIN_URL: Final = "FLEET_GCS_ADMIN_URL"
#: Where the client looks for the local stack's env file before ``.devstack/env`` up the tree.
DEVSTACK_ENV: Final = "FLEET_DEVSTACK_ENV"
#: The client's namespace: the ``namespace`` attribute of every job it publishes, which scopes the result path
#: (``results/<namespace>/<job_id>.json``); unset keeps ``results/<job_id>.json``.
NAMESPACE: Final = "FLEET_NAMESPACE"

RESOURCE_VARIABLES: Final = (
    JOBS_TOPIC,
    RESULTS_TOPIC,
    DEAD_LETTER_TOPIC,
    INTERACTIVE_SUBSCRIPTION,
    BATCH_SUBSCRIPTION,
    DEAD_LETTER_SUBSCRIPTION,
    DEAD_LETTER_HANDLER_SUBSCRIPTION,
    INPUT_BUCKET,
    RESULTS_BUCKET,
)

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def resource_environment(resources: FleetResources, project: str) -> dict[str, str]:
    """Every ``RESOURCE_VARIABLES`` name with the value that ``fleet.json`` gives it in ``project``."""
    return {
        JOBS_TOPIC: resources.full(resources.jobs_topic),
        RESULTS_TOPIC: resources.full(resources.results_topic),
        DEAD_LETTER_TOPIC: resources.full(resources.dead_letter_topic),
        INTERACTIVE_SUBSCRIPTION: resources.full(resources.lane("interactive").subscription),
        BATCH_SUBSCRIPTION: resources.full(resources.lane("batch").subscription),
        DEAD_LETTER_SUBSCRIPTION: resources.full(resources.dead_letter_subscription),
        DEAD_LETTER_HANDLER_SUBSCRIPTION: resources.full(resources.dead_letter_handler_subscription),
        INPUT_BUCKET: resources.inputs_bucket(project),
        RESULTS_BUCKET: resources.results_bucket(project),
    }


def read_env_file(path: Path | str) -> dict[str, str]:
    """Parse ``export NAME=VALUE`` / ``NAME=VALUE`` lines (shell quoting and comments allowed).

    Lines that are not assignments are ignored, so a hand-edited file with other shell in it still reads.
    """
    values: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            parts = shlex.split(line, comments=True)
        except ValueError:  # unbalanced quotes: not an assignment we wrote
            continue
        if parts and parts[0] == "export":
            parts = parts[1:]
        if len(parts) != 1:  # a command, or several words: not one assignment
            continue
        name, sep, value = parts[0].partition("=")
        if sep and _NAME_RE.fullmatch(name):
            values[name] = value
    return values


def render_env_file(env: dict[str, str]) -> str:
    """The inverse of ``read_env_file``: ``export NAME=VALUE`` lines, shell-quoted."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
