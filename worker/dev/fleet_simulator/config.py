"""Inputs of the fleet simulation: service times, VM boot timeline, prices, environment, policies.

Every default here is an *input* with a stated source or assumption (see docs/capacity.md); override them
from the command line (``scripts/simulate --help``) or by building the dataclasses yourself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from worker.dev.capacity import PRICE_SOURCE as CAPACITY_PRICE_SOURCE
from worker.dev.capacity import Projection
from worker.dev.fleet_simulator.cron import ScalingSchedule

SECONDS_PER_HOUR = 3600.0
_Z95 = 1.6448536269514722  # standard normal quantile at 0.95


@dataclass(frozen=True)
class ServiceModel:
    """How fast one worker VM turns jobs into results.

    A VM has ``slots`` jobs in progress at once (the worker's pipeline slots); each job holds a slot for a
    service time drawn from ``distribution`` with mean ``mean_service_s``, so one VM completes
    ``slots / mean_service_s`` jobs per second at saturation.
    """

    # The dataclass defaults are a small generic VM for the engine's tests and what-ifs; scripts/simulate
    # builds its service model with ``from_capacity`` (the capacity projection of the deployed machine type).
    slots: int = 4
    mean_service_s: float = 0.8
    distribution: Literal["lognormal", "exponential", "constant"] = "lognormal"
    sigma: float = 0.42  # log-space standard deviation for the lognormal
    source: str = "generic: 4 slots x 0.8 s = 5 jobs/s per VM (engine tests and what-ifs)"

    @property
    def throughput_per_vm(self) -> float:
        """Jobs per second one VM completes when every slot is busy."""
        return self.slots / self.mean_service_s

    @classmethod
    def from_capacity(
        cls, projection: Projection, *, job_latency_s: float = 0.1, sigma: float = 0.42
    ) -> ServiceModel:
        """A VM at the projection's ``jobs_per_s`` whose jobs each take about ``job_latency_s`` (the bench's
        sub-saturation p50, ~100 ms): slots from Little's law (throughput x latency), then the mean service
        time that makes slots / mean equal the projected throughput exactly."""
        slots = max(1, round(projection.jobs_per_s * job_latency_s))
        return cls(
            slots=slots,
            mean_service_s=slots / projection.jobs_per_s,
            sigma=sigma,
            source=f"capacity projection (worker.dev.capacity) for {projection.machine_type}: "
            f"{projection.jobs_per_s:.0f} jobs/s ({projection.bottleneck} saturates first, "
            f"{projection.worker_processes} worker process(es)); ~{job_latency_s * 1000:.0f} ms per job",
        )

    @classmethod
    def from_bench(cls, bench: dict[str, Any], *, source: str = "bench JSON") -> ServiceModel:
        """Derive the model from ``scripts/bench``'s last-line JSON (issue 8).

        ``e2e_jobs_per_s`` is the VM's throughput; ``latency_ms`` p50/p95 fix a lognormal's shape
        (median = p50, sigma = ln(p95/p50)/z95); the slot count follows from Little's law
        (slots = throughput x mean service time, at least 1) and the mean is then set so that
        slots / mean equals the measured throughput exactly.
        """
        throughput = float(bench["e2e_jobs_per_s"])
        latency = bench.get("latency_ms") or {}
        p50_s = float(latency.get("p50", 0.0)) / 1000.0
        p95_s = float(latency.get("p95", 0.0)) / 1000.0
        if throughput <= 0:
            raise ValueError("bench e2e_jobs_per_s must be positive")
        if p50_s <= 0:
            p50_s = 1.0 / throughput
        sigma = math.log(p95_s / p50_s) / _Z95 if p95_s > p50_s else 0.0
        mean = p50_s * math.exp(sigma * sigma / 2.0)
        slots = max(1, round(throughput * mean))
        return cls(
            slots=slots,
            mean_service_s=slots / throughput,
            distribution="lognormal" if sigma > 0 else "constant",
            sigma=sigma,
            source=f"{source}: {throughput:.2f} jobs/s, latency p50 {p50_s * 1000:.0f} ms, "
            f"p95 {p95_s * 1000:.0f} ms",
        )

    @classmethod
    def from_bench_file(cls, path: Path | str) -> ServiceModel:
        """Read the benchmark output: a JSON file, or a log whose last non-empty line is the JSON."""
        text = Path(path).read_text(encoding="utf-8").strip()
        try:
            bench = json.loads(text)
        except json.JSONDecodeError:
            bench = json.loads(text.splitlines()[-1])
        return cls.from_bench(bench, source=str(path))


@dataclass(frozen=True)
class BootStep:
    """One step between 'the MIG creates a VM' and 'the worker pulls its first job'.

    Three columns: a VM booting the stock image (``unbaked``), a new VM booting the Packer image
    (``baked``, a cold boot), and a stopped VM of a standby pool started again (``restart``: its disk has
    the images, the pulled worker image and the blocks already read)."""

    name: str
    seconds_unbaked: float
    seconds_baked: float
    source: str
    seconds_restart: float | None = None  # None: as long as the baked cold boot

    @property
    def restart_s(self) -> float:
        return self.seconds_baked if self.seconds_restart is None else self.seconds_restart


DEFAULT_BOOT_STEPS: tuple[BootStep, ...] = (
    BootStep(
        "VM create (spot capacity found) + guest OS boot",
        45,
        45,
        "estimate: typical GPU VM create and OS boot; a spot stock-out adds unbounded time (not modelled)",
        40,
    ),
    BootStep(
        "first reads of the image's blocks on the new boot disk",
        0,
        60,
        "estimate: a disk created from an image fetches each block on first read, and the start touches "
        "~10-20 GB of Triton and worker layers; a standby VM's disk was read when it initialised; the "
        "stock image pulls its layers instead (next steps)",
        0,
    ),
    BootStep("NVIDIA driver install", 210, 0, "CONTEXT.md: ~3.5 min, baked into the Packer image", 0),
    BootStep("docker engine install/start", 40, 5, "assumption: apt install vs systemd start", 5),
    BootStep("Triton container image pull", 210, 0, "CONTEXT.md: ~3.5 min, image pre-pulled by Packer", 0),
    BootStep(
        "worker image pull (Artifact Registry)",
        15,
        15,
        "estimate: ~0.5 GB over Private Google Access; already on a standby VM's disk",
        2,
    ),
    BootStep(
        "model packages + engines from the GCS cache",
        10,
        10,
        "estimate: cache hit; a miss builds and measures each precision for 5-15 min (not in this timeline)",
        10,
    ),
    BootStep("Triton model load + warm-up", 30, 30, "assumption: TensorRT engine load", 30),
    BootStep("worker ready (subscribe, first pull)", 10, 10, "assumption", 10),
)


@dataclass(frozen=True)
class BootTimeline:
    """The itemised boot timeline; ``baked`` picks the Packer-image column."""

    steps: tuple[BootStep, ...] = DEFAULT_BOOT_STEPS
    baked: bool = True

    @property
    def total_s(self) -> float:
        return sum(s.seconds_baked if self.baked else s.seconds_unbaked for s in self.steps)

    @property
    def restart_s(self) -> float:
        """A stopped standby VM started again (the Packer image, its disk already warm)."""
        return sum(s.restart_s for s in self.steps)

    def with_total(self, total_s: float, *, restart_s: float | None = None) -> BootTimeline:
        """A single-step timeline of ``total_s`` seconds (for tests and what-ifs)."""
        return replace(self, steps=(BootStep("boot", total_s, total_s, "override", restart_s),))


@dataclass(frozen=True)
class Prices:
    """Per-VM-hour prices (USD). Inputs: check the current price lists before trusting a total."""

    on_demand_per_h: float = 0.7068
    spot_per_h: float = 0.2800
    machine: str = "g2-standard-4 (4 vCPU, 16 GB, 1x NVIDIA L4), us-central1"
    as_of: str = "2025-06 (approximate list prices, not fetched live)"
    source: str = (
        "cloud.google.com/compute/vm-instance-pricing and cloud.google.com/spot-vms/pricing; "
        "spot prices change up to once a day and run 60-91% below on-demand"
    )
    billing_minimum_s: float = 60.0  # GCE bills a minimum of 1 minute, then per second
    # A stopped VM bills only its disks: the 100 GB pd-balanced boot disk at ~$0.10/GB-month (730 h)
    stopped_vm_per_h: float = 100 * 0.10 / 730

    @classmethod
    def for_machine(cls, projection: Projection) -> Prices:
        """The machine type's prices from the capacity table (same sources, same caveats)."""
        return cls(
            on_demand_per_h=projection.on_demand_per_h,
            spot_per_h=projection.spot_per_h,
            machine=f"{projection.machine_type} ({projection.vcpus} vCPU, 1x {projection.gpu}), us-central1",
            source=f"worker.dev.capacity: {CAPACITY_PRICE_SOURCE}",
        )


@dataclass(frozen=True)
class Environment:
    """Behaviour of Pub/Sub, GCE and the worker that the policy does not choose."""

    metric_period_s: float = 60.0  # Pub/Sub metrics are sampled every 60 s
    metric_delay_s: tuple[float, float] = (0.0, 120.0)  # ... and visible up to 120 s later (uniform)
    eval_interval_s: float = 15.0  # how often the simulated autoscaler recomputes its recommendation
    preemptions_per_vm_hour: float = 1.0 / 24.0  # assumption: one preemption per spot VM-day on average
    preemption_drain_s: float = 30.0  # spot: 30 s between ACPI soft-off and hard-off
    scale_in_drain_s: float = 20.0  # the worker's FLEET_DRAIN_BUDGET_S default
    # Longest run of back-to-back start instants one slot commits to under a backlog (saves events only:
    # see engine.py for why the queueing model is the one of a slot pulling one job at a time)
    chunk_max_s: float = 8.0
    redelivery_delay_s: dict[str, float] = field(default_factory=dict)  # per lane; else retry_min_backoff


BACKLOG_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
BACKLOG_BY_REGION_METRIC = "pubsub.googleapis.com/subscription/num_unacked_messages_by_region"
AGE_METRIC = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
AGE_BY_REGION_METRIC = "pubsub.googleapis.com/subscription/oldest_unacked_message_age_by_region"
WORK_SECONDS_METRIC = "custom.googleapis.com/inference_fleet/work_seconds"  # a what-if, not exported


@dataclass(frozen=True)
class Signal:
    """One autoscaling signal: a per-group metric with ``single_instance_assignment``.

    ``kind`` ``lane_backlog``: the messages of one lane's subscription not yet acked (queued + leased +
    awaiting redelivery), what ``num_undelivered_messages`` and ``num_unacked_messages_by_region`` (summed
    over regions; one region here) both count.
    ``kind`` ``lane_oldest_age``: seconds since the oldest of those was published
    (``oldest_unacked_message_age``), zero when there is none.
    ``kind`` ``work_seconds``: the sum over lanes of undelivered messages x mean service time (seconds of
    slot-time), a custom metric; its assignment is the slot-seconds one VM delivers in the target time.
    ``metric`` is the Cloud Monitoring metric the signal reads: an autoscaler takes each metric once.
    """

    kind: Literal["lane_backlog", "lane_oldest_age", "work_seconds"]
    single_instance_assignment: float
    lane: str | None = None
    metric: str = ""

    def __post_init__(self) -> None:
        if not self.metric:
            default = {"lane_backlog": BACKLOG_METRIC, "lane_oldest_age": AGE_METRIC}
            object.__setattr__(self, "metric", default.get(self.kind, WORK_SECONDS_METRIC))

    @property
    def name(self) -> str:
        if self.kind == "lane_backlog":
            return f"backlog:{self.lane}"
        if self.kind == "lane_oldest_age":
            return f"age:{self.lane}"
        return "work_seconds"


@dataclass(frozen=True)
class AutoscalerPolicy:
    """A GCE autoscaling policy plus the provisioning model of the group it scales."""

    name: str
    signals: tuple[Signal, ...] = ()
    schedules: tuple[ScalingSchedule, ...] = ()
    min_replicas: int = 0
    max_replicas: int = 10
    cooldown_period_s: float = 120.0
    stabilization_period_s: float = 600.0
    scale_in_max_replicas: int | None = None
    scale_in_time_window_s: float = 600.0
    autoscaling: bool = True  # False: a fixed group of min_replicas VMs
    spot: bool = True
    baked_image: bool = True
    # target_stopped_size of the MIG's standby pool: stopped VMs (disks kept) started before new ones
    standby_stopped: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        metrics = [s.metric for s in self.signals]
        repeated = sorted({m for m in metrics if metrics.count(m) > 1})
        if repeated:
            raise ValueError(
                f"policy {self.name}: an autoscaler takes each Cloud Monitoring metric once, "
                f"{repeated} is repeated (cloud.google.com/compute/docs/autoscaler/multiple-signals)"
            )
        if len(metrics) > 5:
            raise ValueError(f"policy {self.name}: {len(metrics)} metric signals, an autoscaler takes 5")
