"""Worker settings: one frozen object, read once from the environment (and flags), validated at start.

Every field carries its unit in its name. ``fleet worker --help`` is generated from ``FIELDS`` below, so
the help text, the environment variable and the default cannot drift apart.

Two homes: the names of the fleet's topics, subscriptions and buckets, their ``FLEET_*`` variables and
their defaults come from ``worker.shared.environment`` (``fleet.json``, which Terraform reads too); the
worker's own tuning knobs (``FLEET_PIPELINE_SLOTS`` ...) and their defaults live here.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.shared import environment
from worker.shared.resources import DEFAULT_CONFIG_PATH, load_resources

DEFAULT_METADATA_URL = "http://metadata.google.internal/computeMetadata/v1"
#: The project of the local stack, when ``GOOGLE_CLOUD_PROJECT`` is not set.
DEFAULT_PROJECT = "local-project"
#: Settings fields that name a fleet resource -> their ``FLEET_*`` variable (worker.shared.environment).
RESOURCE_FIELDS: dict[str, str] = {
    "results_topic": environment.RESULTS_TOPIC,
    "interactive_subscription": environment.INTERACTIVE_SUBSCRIPTION,
    "batch_subscription": environment.BATCH_SUBSCRIPTION,
    "dead_letter_handler_subscription": environment.DEAD_LETTER_HANDLER_SUBSCRIPTION,
    "input_bucket": environment.INPUT_BUCKET,
    "results_bucket": environment.RESULTS_BUCKET,
}
_SHIPPED = load_resources(DEFAULT_CONFIG_PATH)
_RESOURCES = environment.resource_environment(_SHIPPED, DEFAULT_PROJECT)


@dataclass(frozen=True)
class Option:
    """One setting: its field, environment variable, default and a one-line help with the unit."""

    field: str
    env: str
    help: str


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker and the dead-letter handler need; build with ``from_env()``."""

    project: str = DEFAULT_PROJECT
    results_topic: str = _RESOURCES[environment.RESULTS_TOPIC]
    interactive_subscription: str = _RESOURCES[environment.INTERACTIVE_SUBSCRIPTION]
    batch_subscription: str = _RESOURCES[environment.BATCH_SUBSCRIPTION]
    dead_letter_handler_subscription: str = _RESOURCES[environment.DEAD_LETTER_HANDLER_SUBSCRIPTION]
    input_bucket: str = _RESOURCES[environment.INPUT_BUCKET]
    results_bucket: str = _RESOURCES[environment.RESULTS_BUCKET]
    results_prefix: str = _SHIPPED.results_prefix
    allowed_input_buckets: tuple[str, ...] = ()
    triton_grpc_url: str = "127.0.0.1:8001"
    models_dir: str = ""
    pipeline_slots: int = 32
    worker_processes: int = 1
    worker_process_label: str = ""
    max_batch_size: int = 16
    max_batch_delay_ms: float = 5.0
    triton_batch_requests: int = 1
    preprocess_processes: int = 1
    batch_preprocess_nice: int = 10
    max_processing_s: float = 600.0
    ack_deadline_s: int = 60
    drain_budget_s: float = 20.0
    metadata_url: str = DEFAULT_METADATA_URL
    watch_metadata: bool = True
    instance_name: str = ""
    triton_outage_exit_s: float = 120.0
    triton_timeout_s: float = 30.0
    triton_ready_timeout_s: float = 120.0
    storage_timeout_s: float = 30.0
    pubsub_timeout_s: float = 30.0
    transient_retries: int = 3
    max_input_bytes: int = 20 * 1024 * 1024
    max_message_bytes: int = 64 * 1024
    idle_poll_max_ms: float = 100.0
    settle_interval_ms: float = 50.0
    log_level: str = "INFO"
    metrics_export: bool = False
    metrics_interval_s: float = 60.0
    monitoring_endpoint: str = ""
    instance_group: str = ""
    stats_file: str = ""
    one_at_a_time: bool = False

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
        for name in ("max_batch_delay_ms", "drain_budget_s", "triton_outage_exit_s", "idle_poll_max_ms"):
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
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for option in FIELDS:
            raw = env.get(option.env)
            if raw is None or raw == "":
                continue
            values[option.field] = _convert(str(types[option.field]), raw, option.env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        project = values.get("project") or DEFAULT_PROJECT
        resources = load_resources(env.get("FLEET_CONFIG") or DEFAULT_CONFIG_PATH)
        named = environment.resource_environment(resources, project)
        for field_name, variable in RESOURCE_FIELDS.items():
            values.setdefault(field_name, named[variable])
        return cls(**values)


def _convert(type_name: str, raw: str, env_name: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{env_name}={raw!r} is not a valid {type_name}") from exc
    return raw


FIELDS: tuple[Option, ...] = (
    Option("project", environment.PROJECT, "Google Cloud project id"),
    Option("results_topic", environment.RESULTS_TOPIC, "topic id for result notifications"),
    Option(
        "interactive_subscription", environment.INTERACTIVE_SUBSCRIPTION, "interactive lane subscription id"
    ),
    Option("batch_subscription", environment.BATCH_SUBSCRIPTION, "batch lane subscription id"),
    Option(
        "dead_letter_handler_subscription",
        environment.DEAD_LETTER_HANDLER_SUBSCRIPTION,
        "dead-letter subscription the dlq-handler answers from",
    ),
    Option(
        "input_bucket", environment.INPUT_BUCKET, "bucket for job inputs (default <project>-fleet-inputs)"
    ),
    Option(
        "results_bucket", environment.RESULTS_BUCKET, "bucket for results (default <project>-fleet-results)"
    ),
    Option("results_prefix", "FLEET_RESULTS_PREFIX", "object prefix of result objects"),
    Option(
        "allowed_input_buckets",
        "FLEET_ALLOWED_INPUT_BUCKETS",
        "comma list of buckets jobs may read (default: the input bucket)",
    ),
    Option("triton_grpc_url", environment.TRITON_GRPC_URL, "tritonserver gRPC host:port"),
    Option(
        "models_dir",
        "FLEET_MODELS_DIR",
        "folder of model packages to serve (default: the packages bundled with the worker)",
    ),
    Option("pipeline_slots", "FLEET_PIPELINE_SLOTS", "jobs leased at once (count); pull never exceeds it"),
    Option(
        "worker_processes",
        "FLEET_WORKER_PROCESSES",
        "worker processes on this VM (count); above 1 a supervisor splits the slots and decode processes "
        "between them",
    ),
    Option(
        "worker_process_label",
        "FLEET_WORKER_PROCESS_LABEL",
        "which of the VM's worker processes this is (set by the supervisor; suffix of the metrics' node id)",
    ),
    Option("max_batch_size", "FLEET_MAX_BATCH_SIZE", "images per Triton request (count)"),
    Option("max_batch_delay_ms", "FLEET_MAX_BATCH_DELAY_MS", "longest wait to fill a batch (ms)"),
    Option(
        "triton_batch_requests",
        "FLEET_TRITON_BATCH_REQUESTS",
        "batch requests in flight to Triton (count); keep below the model's instances: interactive "
        "requests use the one left",
    ),
    Option(
        "preprocess_processes",
        "FLEET_PREPROCESS_PROCESSES",
        "batch decode/preprocess processes (count); interactive jobs have one more of their own",
    ),
    Option(
        "batch_preprocess_nice",
        "FLEET_BATCH_PREPROCESS_NICE",
        "CPU niceness of the batch decode processes (0..19): interactive work wins the CPU",
    ),
    Option(
        "max_processing_s", "FLEET_MAX_PROCESSING_S", "lease extended up to this; then PROCESSING_TIMEOUT (s)"
    ),
    Option("ack_deadline_s", "FLEET_ACK_DEADLINE_S", "deadline requested on each lease extension (s)"),
    Option(
        "drain_budget_s", "FLEET_DRAIN_BUDGET_S", "time to finish in-flight jobs on SIGTERM/preemption (s)"
    ),
    Option("metadata_url", "FLEET_METADATA_URL", "GCE metadata server base URL"),
    Option(
        "watch_metadata", "FLEET_WATCH_METADATA", "watch instance/preempted on the metadata server (bool)"
    ),
    Option("instance_name", "FLEET_INSTANCE_NAME", "instance name in results and logs (default hostname)"),
    Option(
        "triton_outage_exit_s",
        "FLEET_TRITON_OUTAGE_EXIT_S",
        "exit non-zero after Triton is down this long (s)",
    ),
    Option("triton_timeout_s", "FLEET_TRITON_TIMEOUT_S", "timeout of each Triton call (s)"),
    Option("triton_ready_timeout_s", "FLEET_TRITON_READY_TIMEOUT_S", "wait for model readiness at start (s)"),
    Option("storage_timeout_s", "FLEET_STORAGE_TIMEOUT_S", "timeout of each GCS call (s)"),
    Option("pubsub_timeout_s", "FLEET_PUBSUB_TIMEOUT_S", "timeout of each Pub/Sub call (s)"),
    Option(
        "transient_retries",
        "FLEET_TRANSIENT_RETRIES",
        "in-process attempts on transient errors before nack (count)",
    ),
    Option("max_input_bytes", "FLEET_MAX_INPUT_BYTES", "largest input object read (bytes)"),
    Option("max_message_bytes", "FLEET_MAX_MESSAGE_BYTES", "largest job message data (bytes)"),
    Option(
        "idle_poll_max_ms",
        "FLEET_IDLE_POLL_MAX_MS",
        "longest pause between pulls when both lanes are empty (ms)",
    ),
    Option(
        "settle_interval_ms",
        "FLEET_SETTLE_INTERVAL_MS",
        "acks/nacks/publishes are batched over this window (ms)",
    ),
    Option("log_level", "FLEET_LOG_LEVEL", "log level (DEBUG, INFO, WARNING, ERROR)"),
    Option("metrics_export", "FLEET_METRICS_EXPORT", "export metrics to Cloud Monitoring (bool)"),
    Option("metrics_interval_s", "FLEET_METRICS_INTERVAL_S", "metric export interval (s)"),
    Option(
        "monitoring_endpoint", "FLEET_MONITORING_ENDPOINT", "insecure host:port of a MetricService (tests)"
    ),
    Option(
        "instance_group", "FLEET_INSTANCE_GROUP", "managed instance group name, label of per-group metrics"
    ),
    Option("stats_file", "FLEET_STATS_FILE", "write the final CPU/RSS stats JSON here on exit (path)"),
    Option("one_at_a_time", "FLEET_ONE_AT_A_TIME", "naive mode: one job at a time, no batching (bool)"),
)


def describe_options() -> list[tuple[Option, Any]]:
    """(option, default) pairs for the CLI help."""
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerSettings)}
    return [(option, defaults[option.field]) for option in FIELDS]
