"""The policies compared side by side, built from the deployed Terraform settings, and a runner."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from worker.dev.capacity import NEW_VM_READY_S
from worker.dev.fleet_simulator.config import (
    AGE_BY_REGION_METRIC,
    BACKLOG_BY_REGION_METRIC,
    BACKLOG_METRIC,
    AutoscalerPolicy,
    BootTimeline,
    Environment,
    Prices,
    ServiceModel,
    Signal,
)
from worker.dev.fleet_simulator.cron import ScalingSchedule
from worker.dev.fleet_simulator.engine import FleetSimulation, RawResult
from worker.dev.fleet_simulator.report import summarize
from worker.dev.fleet_simulator.terraform import DeployedSettings
from worker.dev.fleet_simulator.traces import HOUR_S, Trace
from worker.shared.resources import FleetResources

# The values agreed with the infra engineer for terraform/variables.tf, used only when that file is
# missing (a partial checkout); the simulation says so when it falls back. backlog_per_vm is
# worker.dev.capacity.backlog_per_vm of the default machine type (tests/dev/test_capacity.py).
AGREED_DEFAULTS = DeployedSettings(
    max_replicas=10,
    min_replicas=0,
    cooldown_period_s=120.0,
    backlog_per_vm={"interactive": 10.0, "batch": 35000.0},
    scale_in_max_replicas=2,
    scale_in_time_window_s=600.0,
    scaling_schedules=(ScalingSchedule("weekday-daytime", 1, "0 9 * * MON-FRI", 36000.0, "Asia/Tokyo"),),
    source="built-in agreed defaults (terraform/variables.tf not found)",
    lane_metrics={"interactive": BACKLOG_BY_REGION_METRIC, "batch": BACKLOG_METRIC},
)

POLICY_NAMES = (
    "always-on-on-demand",
    "spot-scale-to-zero",
    "spot-schedules",
    "spot-work-seconds",
    "spot-schedules-unbaked",
)
# The alternatives to the deployed lane signals and boot, compared in docs/capacity.md.
WHAT_IF_NAMES = (
    "spot-schedules-batch-age",
    "spot-schedules-group-per-lane",
    "spot-schedules-stopped-standby",
)
GROUP_PER_LANE = "spot-schedules-group-per-lane"


def lane_signals(settings: DeployedSettings, resources: FleetResources) -> tuple[Signal, ...]:
    """One message-count signal per lane of fleet.json, on the metric the module gives that lane."""
    missing = [lane.name for lane in resources.lanes if lane.name not in settings.backlog_per_vm]
    if missing:
        raise ValueError(f"backlog_per_vm has no entry for lanes {missing} ({settings.source})")
    return tuple(
        Signal(
            "lane_backlog",
            settings.backlog_per_vm[lane.name],
            lane.name,
            settings.lane_metrics.get(lane.name, BACKLOG_METRIC),
        )
        for lane in resources.lanes
    )


def build_policies(
    settings: DeployedSettings,
    resources: FleetResources,
    service: ServiceModel,
    *,
    always_on_vms: int | None = None,
    work_seconds_target_s: float = NEW_VM_READY_S,
    standby_stopped: int = 1,
) -> dict[str, AutoscalerPolicy]:
    """The policies of the comparison; ``spot-schedules`` is the one the Terraform module deploys.

    The work-seconds signal assigns one VM the slot-seconds it delivers in ``work_seconds_target_s``,
    by default the time a new VM takes to come up: the rule of the deployed batch assignment
    (``worker.dev.capacity.batch_backlog_per_vm``), counted in work instead of messages. The what-ifs:
    the batch lane on the oldest job's age (one VM per ``work_seconds_target_s`` of age) instead of its
    count; one group per lane (``run_group_per_lane``: each lane's own group, the schedule with the first
    lane); a standby pool of ``standby_stopped`` stopped VMs.
    """
    base = AutoscalerPolicy(
        name="spot-schedules",
        signals=lane_signals(settings, resources),
        schedules=settings.scaling_schedules,
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        cooldown_period_s=settings.cooldown_period_s,
        scale_in_max_replicas=settings.scale_in_max_replicas,
        scale_in_time_window_s=settings.scale_in_time_window_s,
        description=f"deployed policy ({settings.source}): per-lane backlog signals + schedules, spot",
    )
    first_lane = resources.lanes[0].name
    work_signal = Signal("work_seconds", service.slots * work_seconds_target_s)
    fixed = always_on_vms if always_on_vms is not None else settings.max_replicas
    return {
        "always-on-on-demand": replace(
            base,
            name="always-on-on-demand",
            autoscaling=False,
            min_replicas=fixed,
            max_replicas=fixed,
            spot=False,
            description=f"{fixed} on-demand VMs, always on",
        ),
        "spot-scale-to-zero": replace(
            base,
            name="spot-scale-to-zero",
            schedules=(),
            description="per-lane backlog signals only (no schedules), spot, can reach zero",
        ),
        "spot-schedules": base,
        "spot-work-seconds": replace(
            base,
            name="spot-work-seconds",
            signals=(*(s for s in base.signals if s.lane == first_lane), work_signal),
            description=f"{first_lane} backlog + work-seconds (backlog x mean service time; one VM "
            f"per {work_signal.single_instance_assignment:.0f} slot-seconds = "
            f"{work_seconds_target_s:.0f} s of work) + schedules, spot",
        ),
        "spot-schedules-unbaked": replace(
            base,
            name="spot-schedules-unbaked",
            baked_image=False,
            description="the deployed policy booting a stock image (driver + container pull at boot)",
        ),
        "spot-schedules-batch-age": replace(
            base,
            name="spot-schedules-batch-age",
            signals=tuple(
                Signal("lane_oldest_age", work_seconds_target_s, s.lane, AGE_BY_REGION_METRIC)
                if s.lane != first_lane
                else s
                for s in base.signals
            ),
            description=f"what-if: lanes after {first_lane} on their oldest job's age (one VM per "
            f"{work_seconds_target_s:.0f} s of age) instead of their message count",
        ),
        GROUP_PER_LANE: replace(
            base,
            name=GROUP_PER_LANE,
            description="what-if: one group (and autoscaler) per lane, each on its lane's count, "
            f"the schedules on the {first_lane} group; VMs serve only their lane",
        ),
        "spot-schedules-stopped-standby": replace(
            base,
            name="spot-schedules-stopped-standby",
            standby_stopped=standby_stopped,
            description=f"what-if: the deployed policy with a standby pool of {standby_stopped} stopped "
            "VM(s) "
            "(target_stopped_size, SCALE_OUT_POOL), started before new VMs are created",
        ),
    }


@dataclass(frozen=True)
class RunInputs:
    """Everything but the policy."""

    service: ServiceModel
    boot: BootTimeline
    prices: Prices
    environment: Environment
    resources: FleetResources
    start: datetime
    seed: int = 0


def default_start(settings: DeployedSettings) -> datetime:
    """Monday 2025-06-02 00:00 in the first schedule's time zone (UTC without schedules)."""
    zone = settings.scaling_schedules[0].time_zone if settings.scaling_schedules else "UTC"
    return datetime(2025, 6, 2, tzinfo=ZoneInfo(zone))


def run_policy(trace: Trace, policy: AutoscalerPolicy, inputs: RunInputs) -> RawResult:
    """Simulate one policy; redelivery after a nack waits the lane's retry_min_backoff_s."""
    redelivery = {lane.name: float(lane.retry_min_backoff_s) for lane in inputs.resources.lanes}
    redelivery.update(inputs.environment.redelivery_delay_s)
    return FleetSimulation(
        trace,
        policy,
        service=inputs.service,
        boot=inputs.boot,
        prices=inputs.prices,
        environment=inputs.environment,
        redelivery_delay_s=redelivery,
        start=inputs.start,
        seed=inputs.seed,
    ).run()


def lane_trace(trace: Trace, lane: str) -> Trace:
    """The jobs of one lane (the lane names stay, so lane indexes keep their meaning)."""
    mask = trace.lanes == trace.lane_names.index(lane)
    return replace(trace, name=f"{trace.name}[{lane}]", times_s=trace.times_s[mask], lanes=trace.lanes[mask])


def run_group_per_lane(trace: Trace, policy: AutoscalerPolicy, inputs: RunInputs) -> dict[str, Any]:
    """One group per lane: each lane's jobs on a group scaled by that lane's signal alone (the schedules
    on the first lane's group); the summary adds costs and VM-hours and keeps each lane's percentiles."""
    first = inputs.resources.lanes[0].name
    parts = {}
    for lane in trace.lane_names:
        own = replace(
            policy,
            name=f"{policy.name}[{lane}]",
            signals=tuple(s for s in policy.signals if s.lane == lane),
            schedules=policy.schedules if lane == first else (),
        )
        parts[lane] = summarize(run_policy(lane_trace(trace, lane), own, inputs))
    merged = dict(parts[first])
    merged["policy"] = policy.name
    merged["jobs"] = trace.n_jobs
    for key in ("cost_usd", "vm_hours", "idle_vm_hours", "boot_vm_hours", "stopped_vm_hours"):
        merged[key] = round(sum(float(p[key]) for p in parts.values()), 2)
    for key in ("jobs_completed", "jobs_redone", "jobs_interrupted_scale_in", "preemptions", "max_vms"):
        merged[key] = sum(int(p[key]) for p in parts.values())  # max_vms: an upper bound, both groups at once
    merged["standby_starts"] = sum(int(p["standby_starts"]) for p in parts.values())
    merged["jobs_completed_by_priority"] = {
        lane: p["jobs_completed_by_priority"][lane] for lane, p in parts.items()
    }
    for pct in ("p50", "p95", "p99"):
        key = f"{pct}_time_to_result_s"
        merged[key] = {lane: p[key][lane] for lane, p in parts.items()}
    done = merged["jobs_completed"]
    merged["cost_per_1k_jobs"] = round(merged["cost_usd"] / done * 1000, 4) if done else None
    merged["simulated_s"] = max(float(p["simulated_s"]) for p in parts.values())
    return merged


@dataclass(frozen=True)
class IdleFirstResults:
    """Seconds from publishing a job to an idle fleet (zero VMs) to its result, over several tries."""

    policy: str
    seconds: tuple[float, ...]

    @property
    def mean_s(self) -> float:
        return float(np.mean(self.seconds))

    def percentile_s(self, p: float) -> float:
        return float(np.percentile(self.seconds, p))


def first_results_after_idle(
    policy: AutoscalerPolicy, inputs: RunInputs, *, tries: int = 24, spacing_s: float = 2 * HOUR_S
) -> IdleFirstResults:
    """Publish one job to the first lane every ``spacing_s`` (the group is back at zero in between: no
    schedules, 10 min stabilization, then scale-in) at varied offsets against the metric sampling, and
    measure each job's time to result: autoscaler lag + boot (cold or from the standby pool) + service."""
    lanes = tuple(lane.name for lane in inputs.resources.lanes)
    offsets = (np.arange(tries) * spacing_s + 600.0 + (np.arange(tries) * 37.3) % 60.0).astype(float)
    trace = Trace(
        "idle-first-result",
        offsets,
        np.zeros(tries, dtype=np.int8),
        lanes,
        float(offsets[-1] + spacing_s),
        "one job at a time on an idle fleet",
    )
    raw = run_policy(trace, replace(policy, schedules=()), inputs)
    return IdleFirstResults(policy.name, tuple(float(x) for x in raw.finish - raw.arrival))
