"""Read the autoscaling policy the Terraform module deploys, so the simulation tests what is deployed.

The module's ``variables.tf`` defines the policy knobs with defaults; this module parses it with
python-hcl2 and returns those defaults, and the Cloud Monitoring metric each lane signals on from the
``lane_backlog_metric`` local of ``autoscaler.tf`` beside it. Lane names come from ``terraform/fleet.json``
via ``worker.shared.resources.load_resources()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

from worker.dev.fleet_simulator.cron import ScalingSchedule
from worker.shared.resources import TERRAFORM_CONFIG_PATH

DEFAULT_VARIABLES_PATH = TERRAFORM_CONFIG_PATH.parent / "variables.tf"

# Terraform variable names this module reads (infra owns the file; these are the agreed names).
VAR_MAX_REPLICAS = "autoscaler_max_replicas"
VAR_MIN_REPLICAS = "autoscaler_min_replicas"  # optional; 0 when absent
VAR_COOLDOWN = "autoscaler_cooldown_period_s"
VAR_BACKLOG_PER_VM = "autoscaler_backlog_per_vm"
VAR_SCALE_IN_MAX = "autoscaler_scale_in_max_replicas"
VAR_SCALE_IN_WINDOW = "autoscaler_scale_in_time_window_s"
VAR_SCHEDULES = "scaling_schedules"
VAR_MACHINE_TYPE = "machine_type"  # optional; the service rate and prices follow it (worker.dev.capacity)
DEFAULT_MACHINE_TYPE = "g2-standard-8"
LOCAL_LANE_METRICS = "lane_backlog_metric"  # in autoscaler.tf
REQUIRED_VARIABLES = (
    VAR_MAX_REPLICAS,
    VAR_COOLDOWN,
    VAR_BACKLOG_PER_VM,
    VAR_SCALE_IN_MAX,
    VAR_SCALE_IN_WINDOW,
    VAR_SCHEDULES,
)


@dataclass(frozen=True)
class DeployedSettings:
    """The autoscaler settings of the Terraform module (its variable defaults, or overrides)."""

    max_replicas: int
    min_replicas: int
    cooldown_period_s: float
    backlog_per_vm: dict[str, float]
    scale_in_max_replicas: int
    scale_in_time_window_s: float
    scaling_schedules: tuple[ScalingSchedule, ...]
    source: str
    machine_type: str = DEFAULT_MACHINE_TYPE
    # lane -> the metric its spot signal reads (autoscaler.tf); lanes not listed read num_undelivered_messages
    lane_metrics: dict[str, str] = field(default_factory=dict)


def variable_defaults(path: Path) -> dict[str, Any]:
    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    with path.open(encoding="utf-8") as handle:
        parsed = hcl2.load(handle, serialization_options=options)
    defaults: dict[str, Any] = {}
    for block in parsed.get("variable", []):
        for name, body in block.items():
            if isinstance(body, dict) and "default" in body:
                defaults[name.strip('"')] = body["default"]
    return defaults


def lane_metrics(path: Path) -> dict[str, str]:
    """The ``lane_backlog_metric`` local of an ``autoscaler.tf`` (empty when the file or local is absent)."""
    if not path.is_file():
        return {}
    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    with path.open(encoding="utf-8") as handle:
        parsed = hcl2.load(handle, serialization_options=options)
    for block in parsed.get("locals", []):
        mapping = block.get(LOCAL_LANE_METRICS)
        if isinstance(mapping, dict):
            return {str(k): str(v) for k, v in mapping.items()}
    return {}


def _schedules(raw: Any) -> tuple[ScalingSchedule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(f"{VAR_SCHEDULES} default must be a map of objects, got {type(raw).__name__}")
    schedules = []
    for name, body in sorted(raw.items()):
        schedules.append(
            ScalingSchedule(
                name=str(name),
                min_required_replicas=int(body["min_required_replicas"]),
                schedule=str(body["schedule"]).strip('"'),
                duration_s=float(body["duration_s"]),
                time_zone=str(body.get("time_zone", "UTC")).strip('"'),
                disabled=bool(body.get("disabled", False)),
            )
        )
    return tuple(schedules)


def load_deployed_settings(path: Path | str | None = None) -> DeployedSettings:
    """Parse ``variables.tf`` (default ``terraform/variables.tf``) and return the autoscaler defaults.

    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` when a variable the
    simulation needs has no default.
    """
    tf_path = Path(path) if path else DEFAULT_VARIABLES_PATH
    defaults = variable_defaults(tf_path)
    missing = [name for name in REQUIRED_VARIABLES if name not in defaults]
    if missing:
        raise ValueError(f"{tf_path}: no default for {', '.join(missing)}")
    backlog = defaults[VAR_BACKLOG_PER_VM]
    if not isinstance(backlog, dict) or not backlog:
        raise ValueError(f"{VAR_BACKLOG_PER_VM} default must be a non-empty map of lane -> messages")
    return DeployedSettings(
        max_replicas=int(defaults[VAR_MAX_REPLICAS]),
        min_replicas=int(defaults.get(VAR_MIN_REPLICAS, 0) or 0),
        cooldown_period_s=float(defaults[VAR_COOLDOWN]),
        backlog_per_vm={str(k): float(v) for k, v in backlog.items()},
        scale_in_max_replicas=int(defaults[VAR_SCALE_IN_MAX]),
        scale_in_time_window_s=float(defaults[VAR_SCALE_IN_WINDOW]),
        scaling_schedules=_schedules(defaults[VAR_SCHEDULES]),
        source=str(tf_path),
        machine_type=str(defaults.get(VAR_MACHINE_TYPE) or DEFAULT_MACHINE_TYPE).strip('"'),
        lane_metrics=lane_metrics(tf_path.parent / "autoscaler.tf"),
    )
