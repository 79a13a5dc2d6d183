"""Where the client finds its project and resource names: the environment, then the local stack's file.

Every name comes from the ``FLEET_*`` variables that the worker, the local stack and Terraform share
(``worker.shared.environment``), falling back to ``fleet.json`` (package data, so an installed client
needs nothing from the checkout). Nothing here reads a path relative to the source tree: the only file
looked for is ``.devstack/env`` in the current directory or a parent, or the one ``FLEET_DEVSTACK_ENV``
names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from worker.shared import contracts, environment
from worker.shared.errors import ClientInputInvalid
from worker.shared.resources import FleetResources, load_resources

#: The file ``scripts/devstack up`` writes at the root of the checkout it runs in.
DEVSTACK_ENV_RELATIVE = Path(".devstack") / "env"
#: Read after ``GOOGLE_CLOUD_PROJECT``: the older name some gcloud setups still export.
LEGACY_PROJECT = "GCLOUD_PROJECT"


def find_devstack_env(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """``FLEET_DEVSTACK_ENV``, else ``.devstack/env`` in the current directory or its nearest parent."""
    env = os.environ if environ is None else environ
    explicit = env.get(environment.DEVSTACK_ENV)
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEVSTACK_ENV_RELATIVE
        if candidate.is_file():
            return candidate
    return None


def apply_devstack_env(
    environ: MutableMapping[str, str] | None = None, start: Path | None = None
) -> Path | None:
    """Fill variables missing from the environment from ``.devstack/env``; returns the file used, if any.

    Variables already set win. An environment that names another project than the file's
    (``GOOGLE_CLOUD_PROJECT``: a real project with ADC) does not take the file at all: filling in only the
    missing names would add the file's emulator hosts and send that project's jobs to a stale local
    emulator. The google clients read the emulator hosts from the process environment, which is why this
    writes there rather than into a settings object.
    """
    env = os.environ if environ is None else environ
    path = find_devstack_env(start, env)
    if path is None:
        return None
    values = environment.read_env_file(path)
    project = env.get("GOOGLE_CLOUD_PROJECT")
    if project and project != values.get("GOOGLE_CLOUD_PROJECT", project):
        return None
    for name, value in values.items():
        env.setdefault(name, value)
    return path


@dataclass(frozen=True)
class ClientSettings:
    """Names the client needs; ``from_env`` reads the same variables as the worker and the local stack.

    ``results_prefix`` and ``upload_prefix`` are object-name prefixes in the results and inputs buckets;
    ``publish_timeout_s`` bounds the wait for one publish future; ``storage_threads`` is how many GCS
    requests (uploads, result lookups) run at once. ``namespace`` (default None: ``results/<job_id>.json``)
    goes on every job as the ``namespace`` attribute and scopes its result path to
    ``results/<namespace>/<job_id>.json``, so this client's job ids never meet another namespace's.
    """

    project: str
    jobs_topic: str
    results_topic: str
    dead_letter_hold_subscription: str
    input_bucket: str
    results_bucket: str
    results_prefix: str = "results/"
    upload_prefix: str = "uploads/"
    publish_timeout_s: float = 120.0
    storage_threads: int = 8
    namespace: str | None = None

    def __post_init__(self) -> None:
        if self.namespace is not None and not contracts.valid_namespace(self.namespace):
            raise ClientInputInvalid(
                f"namespace {self.namespace[:70]!r} must match [a-z0-9][a-z0-9-]{{0,62}} "
                f"(--namespace or {environment.NAMESPACE})"
            )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        project: str | None = None,
        namespace: str | None = None,
        resources: FleetResources | None = None,
    ) -> ClientSettings:
        """``--project`` > ``GOOGLE_CLOUD_PROJECT``; ``--namespace`` > ``FLEET_NAMESPACE`` > none.

        Every other name defaults from ``fleet.json``.
        """
        env = os.environ if environ is None else environ
        res = resources or load_resources()
        project = project or env.get(environment.PROJECT) or env.get(LEGACY_PROJECT)
        if not project:
            raise ClientInputInvalid(f"no project: set {environment.PROJECT} or pass --project")
        defaults = environment.resource_environment(res, project)

        def name(variable: str) -> str:
            return env.get(variable) or defaults[variable]

        return cls(
            project=project,
            jobs_topic=name(environment.JOBS_TOPIC),
            results_topic=name(environment.RESULTS_TOPIC),
            dead_letter_hold_subscription=name(environment.DEAD_LETTER_SUBSCRIPTION),
            input_bucket=name(environment.INPUT_BUCKET),
            results_bucket=name(environment.RESULTS_BUCKET),
            results_prefix=res.results_prefix,
            namespace=namespace or env.get(environment.NAMESPACE) or None,
        )

    def topic_path(self, topic: str) -> str:
        """``fleet-jobs`` -> ``projects/<project>/topics/fleet-jobs``."""
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        """``fleet-dead-letter-hold`` -> ``projects/<project>/subscriptions/fleet-dead-letter-hold``."""
        return f"projects/{self.project}/subscriptions/{subscription}"

    def result_object(self, job_id: str) -> str:
        """The object name of the job's write-once result in the results bucket (in this namespace)."""
        return contracts.result_object_name(self.results_prefix, job_id, "", self.namespace)

    def rejected_object(self, message_id: str) -> str:
        """The result object of one published message that could not use its job's path (JOB_ID_CONFLICT)."""
        return contracts.rejected_object_name(self.results_prefix, message_id)

    def object_uri(self, name: str) -> str:
        """``gs://`` URI of an object in the results bucket."""
        return f"gs://{self.results_bucket}/{name}"

    def result_uri(self, job_id: str) -> str:
        """``gs://`` URI of the job's result object."""
        return self.object_uri(self.result_object(job_id))
