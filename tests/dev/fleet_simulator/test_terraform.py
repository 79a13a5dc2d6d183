"""The policy comes from the Terraform module's variables.tf."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.dev.fleet_simulator.config import ServiceModel
from worker.dev.fleet_simulator.scenario import build_policies
from worker.dev.fleet_simulator.terraform import (
    DEFAULT_VARIABLES_PATH,
    REQUIRED_VARIABLES,
    load_deployed_settings,
)
from worker.shared.resources import load_resources

FIXTURE = """
variable "autoscaler_max_replicas" {
  description = "x"
  type        = number
  default     = 7
}
variable "autoscaler_cooldown_period_s" {
  type    = number
  default = 90
}
variable "autoscaler_backlog_per_vm" {
  type    = map(number)
  default = { interactive = 5, batch = 50 }
}
variable "autoscaler_scale_in_max_replicas" {
  type    = number
  default = 3
}
variable "autoscaler_scale_in_time_window_s" {
  type    = number
  default = 900
}
variable "scaling_schedules" {
  type = map(object({
    min_required_replicas = number, schedule = string, duration_s = number, time_zone = string
  }))
  default = {
    weekday-daytime = {
      min_required_replicas = 2
      schedule              = "0 8 * * MON-FRI"
      duration_s            = 32400
      time_zone             = "Asia/Tokyo"
    }
  }
}
variable "unrelated" {
  type = string
}
"""


def test_fixture_variables_are_read(tmp_path: Path) -> None:
    path = tmp_path / "variables.tf"
    path.write_text(FIXTURE, encoding="utf-8")
    settings = load_deployed_settings(path)
    assert settings.max_replicas == 7
    assert settings.min_replicas == 0
    assert settings.cooldown_period_s == 90
    assert settings.backlog_per_vm == {"interactive": 5.0, "batch": 50.0}
    assert settings.scale_in_max_replicas == 3
    assert settings.scale_in_time_window_s == 900
    (schedule,) = settings.scaling_schedules
    assert schedule.name == "weekday-daytime"
    assert (schedule.min_required_replicas, schedule.schedule) == (2, "0 8 * * MON-FRI")
    assert (schedule.duration_s, schedule.time_zone) == (32400, "Asia/Tokyo")


def test_missing_default_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "variables.tf"
    path.write_text(FIXTURE.replace("default     = 7", ""), encoding="utf-8")
    with pytest.raises(ValueError, match="autoscaler_max_replicas"):
        load_deployed_settings(path)


AUTOSCALER_FIXTURE = """
locals {
  lane_backlog_metric = {
    interactive = "pubsub.googleapis.com/subscription/num_unacked_messages_by_region"
    batch       = "pubsub.googleapis.com/subscription/num_undelivered_messages"
  }
}
"""


def test_policies_use_every_lane_of_fleet_json_on_the_metric_autoscaler_tf_gives_it(tmp_path: Path) -> None:
    path = tmp_path / "variables.tf"
    path.write_text(FIXTURE, encoding="utf-8")
    (tmp_path / "autoscaler.tf").write_text(AUTOSCALER_FIXTURE, encoding="utf-8")
    resources = load_resources()
    policies = build_policies(load_deployed_settings(path), resources, ServiceModel())
    deployed = policies["spot-schedules"]
    assert {s.lane for s in deployed.signals} == {lane.name for lane in resources.lanes}
    assert {s.lane: s.metric for s in deployed.signals} == {
        "interactive": "pubsub.googleapis.com/subscription/num_unacked_messages_by_region",
        "batch": "pubsub.googleapis.com/subscription/num_undelivered_messages",
    }
    assert deployed.max_replicas == 7 and deployed.scale_in_max_replicas == 3
    assert policies["always-on-on-demand"].min_replicas == 7
    assert not policies["spot-scale-to-zero"].schedules


def test_lanes_on_one_metric_are_refused_as_the_autoscaler_api_refuses_them(tmp_path: Path) -> None:
    """Without a metric per lane (no lane_backlog_metric: every lane on num_undelivered_messages) the
    deployed policy cannot exist."""
    path = tmp_path / "variables.tf"
    path.write_text(FIXTURE, encoding="utf-8")
    with pytest.raises(ValueError, match="each Cloud Monitoring metric once"):
        build_policies(load_deployed_settings(path), load_resources(), ServiceModel())


@pytest.mark.skipif(not DEFAULT_VARIABLES_PATH.exists(), reason="terraform/variables.tf not in checkout")
def test_the_real_module_defines_what_the_simulation_reads() -> None:
    settings = load_deployed_settings()
    resources = load_resources()
    assert set(REQUIRED_VARIABLES)
    assert {lane.name for lane in resources.lanes} <= set(settings.backlog_per_vm)
    assert settings.max_replicas >= 1
    assert all(s.duration_s >= 300 for s in settings.scaling_schedules)
    metrics = [settings.lane_metrics[lane.name] for lane in resources.lanes]
    assert len(set(metrics)) == len(metrics), settings.lane_metrics
