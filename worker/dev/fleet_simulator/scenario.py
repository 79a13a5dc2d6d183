"""The policies compared side by side, built from the deployed Terraform settings, and a runner."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from worker.dev.capacity import NEW_VM_READY_S
from worker.dev.fleet_simulator.config import (
    AutoscalerPolicy,
    BootTimeline,
    Environment,
    Prices,
    ServiceModel,
    Signal,
)
from worker.dev.fleet_simulator.cron import ScalingSchedule
from worker.dev.fleet_simulator.engine import FleetSimulation, RawResult
from worker.dev.fleet_simulator.terraform import DeployedSettings
from worker.dev.fleet_simulator.traces import Trace
from worker.shared.resources import FleetResources

# The values agreed with the infra engineer for terraform/variables.tf, used only when that file is
# missing (a partial checkout); the simulation says so when it falls back. backlog_per_vm is
# worker.dev.capacity.backlog_per_vm of the default machine type (tests/dev/test_capacity.py).
AGREED_DEFAULTS = DeployedSettings(
    max_replicas=10,
    min_replicas=0,
    cooldown_period_s=120.0,
    backlog_per_vm={"interactive": 10.0, "batch": 18000.0},
    scale_in_max_replicas=2,
    scale_in_time_window_s=600.0,
    scaling_schedules=(ScalingSchedule("weekday-daytime", 1, "0 9 * * MON-FRI", 36000.0, "Asia/Tokyo"),),
    source="built-in agreed defaults (terraform/variables.tf not found)",
)

POLICY_NAMES = (
    "always-on-on-demand",
    "spot-scale-to-zero",
    "spot-schedules",
    "spot-work-seconds",
    "spot-schedules-unbaked",
)


def lane_signals(settings: DeployedSettings, resources: FleetResources) -> tuple[Signal, ...]:
    """One ``num_undelivered_messages`` signal per lane of fleet.json, as the module deploys them."""
    missing = [lane.name for lane in resources.lanes if lane.name not in settings.backlog_per_vm]
    if missing:
        raise ValueError(f"backlog_per_vm has no entry for lanes {missing} ({settings.source})")
    return tuple(
        Signal("lane_backlog", settings.backlog_per_vm[lane.name], lane.name) for lane in resources.lanes
    )


def build_policies(
    settings: DeployedSettings,
    resources: FleetResources,
    service: ServiceModel,
    *,
    always_on_vms: int | None = None,
    work_seconds_target_s: float = NEW_VM_READY_S,
) -> dict[str, AutoscalerPolicy]:
    """The policies of the comparison; ``spot-schedules`` is the one the Terraform module deploys.

    The work-seconds signal assigns one VM the slot-seconds it delivers in ``work_seconds_target_s``,
    by default the time a new VM takes to come up: the rule of the deployed batch assignment
    (``worker.dev.capacity.batch_backlog_per_vm``), counted in work instead of messages.
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
