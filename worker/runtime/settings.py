"""Worker settings: one frozen object, read once from the environment (and flags), validated at start.

Each setting is declared once, as a field of ``WorkerSettings``: its default, its one-line help (with
the unit) and, where it is not ``FLEET_`` + the field's name in capitals, its environment variable.
The variable names (``FIELDS``), ``from_env`` and ``fleet worker --help`` are derived from the fields,
so the help text, the environment variable and the default cannot drift apart. Every field carries its
unit in its name.

Two homes: the names of the fleet's topics, subscriptions and buckets, their ``FLEET_*`` variables and
their defaults come from ``worker.shared.environment`` (``fleet.json``, which Terraform reads too); the
worker's own tuning knobs (``FLEET_PIPELINE_SLOTS`` ...) and their defaults live here.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from worker.shared import environment
from worker.shared.resources import DEFAULT_CONFIG_PATH, load_resources

DEFAULT_METADATA_URL = "http://metadata.google.internal/computeMetadata/v1"
#: The project of the local stack, when ``GOOGLE_CLOUD_PROJECT`` is not set.
DEFAULT_PROJECT = "local-project"
#: Threads for batch jobs' GCS calls, and so how many batch input reads run at once (none waits for a
#: thread); interactive jobs' calls have ``INTERACTIVE_STORAGE_THREADS`` of their own.
BATCH_STORAGE_THREADS: Final = 8
INTERACTIVE_STORAGE_THREADS: Final = 2
_SHIPPED = load_resources(DEFAULT_CONFIG_PATH)
_RESOURCES = environment.resource_environment(_SHIPPED, DEFAULT_PROJECT)
_ENV_PREFIX = "FLEET_"


def _setting(default: Any, help: str, *, env: str | None = None) -> Any:
    """A settings field: its default, its one-line help with the unit, its variable when not derived."""
    return dataclasses.field(default=default, metadata={"help": help, "env": env})


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker and the dead-letter handler need; build with ``from_env()``."""

    project: str = _setting(DEFAULT_PROJECT, "Google Cloud project id", env=environment.PROJECT)
    results_topic: str = _setting(_RESOURCES[environment.RESULTS_TOPIC], "topic id for result notifications")
    interactive_subscription: str = _setting(
        _RESOURCES[environment.INTERACTIVE_SUBSCRIPTION], "interactive lane subscription id"
    )
    batch_subscription: str = _setting(
        _RESOURCES[environment.BATCH_SUBSCRIPTION], "batch lane subscription id"
    )
    dead_letter_handler_subscription: str = _setting(
        _RESOURCES[environment.DEAD_LETTER_HANDLER_SUBSCRIPTION],
        "dead-letter subscription the dlq-handler answers from",
    )
    input_bucket: str = _setting(
        _RESOURCES[environment.INPUT_BUCKET], "bucket for job inputs (default <project>-fleet-inputs)"
    )
    results_bucket: str = _setting(
        _RESOURCES[environment.RESULTS_BUCKET], "bucket for results (default <project>-fleet-results)"
    )
    results_prefix: str = _setting(_SHIPPED.results_prefix, "object prefix of result objects")
    allowed_input_buckets: tuple[str, ...] = _setting(
        (), "comma list of buckets jobs may read (default: the input bucket)"
    )
    triton_grpc_url: str = _setting(
        "127.0.0.1:8001", "tritonserver gRPC host:port", env=environment.TRITON_GRPC_URL
    )
    models_dir: str = _setting(
        "", "folder of model packages to serve (default: the packages bundled with the worker)"
    )
    pipeline_slots: int = _setting(32, "jobs leased at once (count); pull never exceeds it")
    worker_processes: int = _setting(
        1,
        "worker processes on this VM (count); above 1 a supervisor splits the slots and decode processes "
        "between them",
    )
    worker_process_label: str = _setting(
        "",
        "which of the VM's worker processes this is (set by the supervisor; suffix of the metrics' node id)",
    )
    # 16: the bundled packages' preferred_batch_size; a package's own caps it (pipeline.models).
    max_batch_size: int = _setting(16, "images per Triton request (count)")
    max_batch_delay_ms: float = _setting(5.0, "longest wait to fill a batch (ms)")
    triton_batch_requests: int = _setting(
        1,
        "batch requests in flight to Triton (count); keep below the model's instances: interactive "
        "requests use the one left",
    )
    preprocess_processes: int = _setting(
        1, "batch decode/preprocess processes (count); interactive jobs have one more of their own"
    )
    batch_preprocess_nice: int = _setting(
        10, "CPU niceness of the batch decode processes (0..19): interactive work wins the CPU"
    )
    max_processing_s: float = _setting(600.0, "lease extended up to this; then PROCESSING_TIMEOUT (s)")
    ack_deadline_s: int = _setting(60, "deadline requested on each lease extension (s)")
    drain_budget_s: float = _setting(20.0, "time to finish in-flight jobs on SIGTERM/preemption (s)")
    metadata_url: str = _setting(DEFAULT_METADATA_URL, "GCE metadata server base URL")
    watch_metadata: bool = _setting(True, "watch instance/preempted on the metadata server (bool)")
    instance_name: str = _setting("", "instance name in results and logs (default hostname)")
    triton_outage_exit_s: float = _setting(120.0, "exit non-zero after Triton is down this long (s)")
    triton_timeout_s: float = _setting(30.0, "timeout of each Triton call (s)")
    triton_shared_memory_min_bytes: int = _setting(
        1 << 20,
        "a Triton request whose inputs reach this size has its tensors in system shared memory, when "
        "Triton can map the worker's (bytes; 0: always gRPC)",
    )
    triton_ready_timeout_s: float = _setting(120.0, "wait for model readiness at start (s)")
    storage_timeout_s: float = _setting(30.0, "timeout of each GCS call (s)")
    pubsub_timeout_s: float = _setting(30.0, "timeout of each Pub/Sub call (s)")
    transient_retries: int = _setting(3, "in-process attempts on transient errors before nack (count)")
    max_input_bytes: int = _setting(20 * 1024 * 1024, "largest input object read (bytes)")
    max_message_bytes: int = _setting(64 * 1024, "largest job message data (bytes)")
    idle_poll_max_ms: float = _setting(100.0, "longest pause between pulls when both lanes are empty (ms)")
    settle_interval_ms: float = _setting(50.0, "acks/nacks/publishes are batched over this window (ms)")
    log_level: str = _setting("INFO", "log level (DEBUG, INFO, WARNING, ERROR)")
    metrics_export: bool = _setting(False, "export metrics to Cloud Monitoring (bool)")
    metrics_interval_s: float = _setting(60.0, "metric export interval (s)")
    monitoring_endpoint: str = _setting("", "insecure host:port of a MetricService (tests)")
    instance_group: str = _setting("", "managed instance group name, label of per-group metrics")
    stats_file: str = _setting("", "write the final CPU/RSS stats JSON here on exit (path)")
    one_at_a_time: bool = _setting(False, "naive mode: one job at a time, no batching (bool)")

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "pipeline_slots",
            "worker_processes",
            "max_batch_size",
            "preprocess_processes",
            "triton_batch_requests",
            "ack_deadline_s",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.worker_processes > self.pipeline_slots:
            problems.append("worker_processes must be <= pipeline_slots (the slots are split between them)")
        if not 10 <= self.ack_deadline_s <= 600:
            problems.append("ack_deadline_s must be within 10..600 (Pub/Sub limits)")
        for name in (
            "max_batch_delay_ms",
            "drain_budget_s",
            "triton_outage_exit_s",
            "idle_poll_max_ms",
            "triton_shared_memory_min_bytes",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if not 0 <= self.batch_preprocess_nice <= 19:
            problems.append("batch_preprocess_nice must be within 0..19")
        if self.max_processing_s <= 0:
            problems.append("max_processing_s must be > 0")
        if not self.results_prefix.endswith("/"):
            problems.append("results_prefix must end with '/'")
        if problems:
            raise ValueError("invalid worker settings: " + "; ".join(problems))

    @property
    def allowed_buckets(self) -> frozenset[str]:
        """Buckets a job may read from: the configured list, else just the input bucket."""
        return frozenset(self.allowed_input_buckets or (self.input_bucket,))

    @property
    def instance(self) -> str:
        """The name results and logs carry: ``instance_name``, else the host name."""
        return self.instance_name or socket.gethostname()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WorkerSettings:
        """Read ``FLEET_*`` and the emulator/stack variables; ``overrides`` (flags) win.

        Resource names not set default to what ``fleet.json`` (``FLEET_CONFIG``, else the shipped copy)
        gives them in the project, as for every other reader (``environment.resource_environment``).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for option in FIELDS:
            raw = env.get(option.env)
            if raw is None or raw == "":
                continue
            try:
                values[option.field] = option.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{option.env}={raw!r} is not a valid {option.kind}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        project = values.get("project") or DEFAULT_PROJECT
        resources = load_resources(env.get("FLEET_CONFIG") or DEFAULT_CONFIG_PATH)
        named = environment.resource_environment(resources, project)
        for field_name, variable in RESOURCE_FIELDS.items():
            values.setdefault(field_name, named[variable])
        return cls(**values)


def parse_bool(raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); anything else is a ValueError."""
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def parse_list(raw: str) -> tuple[str, ...]:
    """A comma list, items stripped, empty items dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": parse_bool,
    "str": str,
    "tuple[str, ...]": parse_list,
}


@dataclass(frozen=True)
class Option:
    """One setting as the environment and the CLI see it: field, variable, help, value type and parser."""

    field: str
    env: str
    help: str
    kind: str
    parse: Callable[[str], Any]


def _option(f: dataclasses.Field[Any]) -> Option:
    kind = str(f.type)
    return Option(
        field=f.name,
        env=f.metadata["env"] or _ENV_PREFIX + f.name.upper(),
        help=f.metadata["help"],
        kind=kind,
        parse=_PARSERS[kind],
    )


#: Every setting, in declaration order (``fleet worker --help``, the supervisor's child environments).
FIELDS: tuple[Option, ...] = tuple(_option(f) for f in dataclasses.fields(WorkerSettings))
#: Settings fields that name a fleet resource -> their ``FLEET_*`` variable (worker.shared.environment).
RESOURCE_FIELDS: dict[str, str] = {
    option.field: option.env for option in FIELDS if option.env in environment.RESOURCE_VARIABLES
}


def describe_options() -> list[tuple[Option, Any]]:
    """(option, default) pairs for the CLI help."""
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerSettings)}
    return [(option, defaults[option.field]) for option in FIELDS]
