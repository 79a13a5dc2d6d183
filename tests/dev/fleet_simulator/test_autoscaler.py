"""The autoscaler rules: signals, stabilization, schedules, scale-in control, reaching zero."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from worker.dev.fleet_simulator.autoscaler import Autoscaler, signal_recommendation
from worker.dev.fleet_simulator.config import (
    AGE_METRIC,
    BACKLOG_BY_REGION_METRIC,
    BACKLOG_METRIC,
    AutoscalerPolicy,
    Signal,
)
from worker.dev.fleet_simulator.cron import Cron, ScalingSchedule, ScheduleFloor, schedule_windows

TOKYO_MONDAY = datetime(2025, 6, 2, tzinfo=ZoneInfo("Asia/Tokyo"))
HOUR = 3600.0
BATCH = Signal("lane_backlog", 100, "batch")
INTERACTIVE = Signal("lane_backlog", 10, "interactive", BACKLOG_BY_REGION_METRIC)


def _policy(**overrides: object) -> AutoscalerPolicy:
    options: dict[str, object] = {"name": "t", "signals": (INTERACTIVE, BATCH), "max_replicas": 10}
    options.update(overrides)
    return AutoscalerPolicy(**options)  # type: ignore[arg-type]


def _run(
    scaler: Autoscaler, metrics_at: dict[float, dict[str, float]], until: float, step: float = 15.0
) -> dict[float, int]:
    """Evaluate every ``step`` s; metrics change at the times given. Returns {t: target}."""
    targets: dict[float, int] = {}
    current: dict[str, float] = {}
    t = 0.0
    while t <= until:
        current = metrics_at.get(t, current)
        targets[t] = scaler.evaluate(t, current)
        t += step
    return targets


def test_signal_is_ceil_of_value_over_assignment() -> None:
    assert signal_recommendation(0, 10) == 0
    assert signal_recommendation(1, 10) == 1
    assert signal_recommendation(10, 10) == 1
    assert signal_recommendation(11, 10) == 2
    assert signal_recommendation(100_000, 100) == 1000


def test_recommendation_is_the_largest_signal_clamped_to_max() -> None:
    scaler = Autoscaler(_policy())
    assert scaler.raw_recommendation(0, {"backlog:interactive": 25, "backlog:batch": 150}) == 3
    assert scaler.raw_recommendation(0, {"backlog:interactive": 5, "backlog:batch": 450}) == 5
    assert scaler.raw_recommendation(0, {"backlog:batch": 100_000}) == 10


def test_scale_out_is_immediate_and_scale_in_waits_for_the_stabilization_period() -> None:
    # Given a backlog asking for 6 VMs that then vanishes (no scale-in control)
    scaler = Autoscaler(_policy(scale_in_max_replicas=None))
    targets = _run(scaler, {0.0: {"backlog:batch": 600}, 60.0: {"backlog:batch": 0}}, until=1200)
    # Then the target jumps to 6 at once and holds the 10-minute peak before it drops
    assert targets[0.0] == 6
    assert all(targets[t] == 6 for t in targets if t <= 600)
    assert all(targets[t] == 0 for t in targets if t >= 675)


def test_a_short_dip_does_not_scale_in() -> None:
    scaler = Autoscaler(_policy(scale_in_max_replicas=None))
    metrics = {0.0: {"backlog:batch": 400.0}, 300.0: {"backlog:batch": 0.0}, 600.0: {"backlog:batch": 400.0}}
    targets = _run(scaler, metrics, until=1500)
    assert set(targets.values()) == {4}


def test_scale_in_control_removes_at_most_n_per_window_and_reaches_zero() -> None:
    # Given 10 VMs, then no backlog; at most 2 VMs removed per 600 s
    scaler = Autoscaler(_policy(scale_in_max_replicas=2, scale_in_time_window_s=600))
    targets = _run(scaler, {0.0: {"backlog:batch": 1000}, 15.0: {"backlog:batch": 0}}, until=4000)
    # Then: 10 for the stabilization period, then 8, 6, 4, 2, 0 a window apart
    assert targets[600.0] == 10
    assert targets[615.0] == 8
    assert targets[1200.0] == 8
    assert targets[1215.0] == 6
    assert targets[3015.0] == 0
    times = sorted(targets)
    drops = [targets[a] - targets[b] for a, b in itertools.pairwise(times)]
    assert max(drops) == 2
    assert targets[times[-1]] == 0


def test_min_replicas_and_fixed_groups() -> None:
    assert Autoscaler(_policy(min_replicas=2)).evaluate(0, {}) == 2
    fixed = Autoscaler(_policy(autoscaling=False, min_replicas=7))
    assert fixed.evaluate(0, {"backlog:batch": 10_000}) == 7


def test_cron_parsing() -> None:
    cron = Cron.parse("0 9 * * MON-FRI")
    assert cron.matches(datetime(2025, 6, 2, 9, 0))  # Monday
    assert not cron.matches(datetime(2025, 6, 7, 9, 0))  # Saturday
    assert not cron.matches(datetime(2025, 6, 2, 9, 1))
    assert Cron.parse("*/15 * * * 7").matches(datetime(2025, 6, 8, 3, 45))  # Sunday as 7
    assert Cron.parse("0 0 1 * MON").matches(datetime(2025, 6, 2, 0, 0))  # dom OR dow
    with pytest.raises(ValueError):
        Cron.parse("0 25 * * *")


def test_weekday_daytime_schedule_in_its_time_zone() -> None:
    schedule = ScalingSchedule("weekday-daytime", 1, "0 9 * * MON-FRI", 36000, "Asia/Tokyo")
    floor = ScheduleFloor((schedule,), start=TOKYO_MONDAY, horizon_s=7 * 24 * HOUR)
    assert floor.at(8.99 * HOUR) == 0
    assert floor.at(9 * HOUR) == 1
    assert floor.at(18.99 * HOUR) == 1
    assert floor.at(19 * HOUR) == 0
    assert floor.at((4 * 24 + 12) * HOUR) == 1  # Friday noon
    assert floor.at((5 * 24 + 12) * HOUR) == 0  # Saturday noon
    windows = schedule_windows(schedule, start=TOKYO_MONDAY, horizon_s=7 * 24 * HOUR)
    assert len(windows) == 5


def test_schedule_in_another_time_zone_and_one_already_running_at_start() -> None:
    utc_start = datetime(2025, 6, 2, tzinfo=ZoneInfo("UTC"))
    night = ScalingSchedule("night", 3, "0 22 * * *", 8 * HOUR, "UTC")
    floor = ScheduleFloor((night,), start=utc_start, horizon_s=2 * 24 * HOUR)
    assert floor.at(0) == 3  # began Sunday 22:00, runs until 06:00
    assert floor.at(6 * HOUR) == 0
    tokyo = ScalingSchedule("tokyo", 2, "0 9 * * *", HOUR, "Asia/Tokyo")
    floor = ScheduleFloor((tokyo,), start=utc_start, horizon_s=24 * HOUR)
    assert floor.at(0.5 * HOUR) == 2  # 09:30 in Tokyo is 00:30 UTC
    assert floor.at(2 * HOUR) == 0


def test_schedule_keeps_the_floor_when_backlog_is_zero() -> None:
    schedule = ScalingSchedule("weekday-daytime", 1, "0 9 * * MON-FRI", 36000, "Asia/Tokyo")
    floor = ScheduleFloor((schedule,), start=TOKYO_MONDAY, horizon_s=7 * 24 * HOUR)
    scaler = Autoscaler(_policy(schedules=(schedule,), scale_in_max_replicas=None), floor)
    assert scaler.evaluate(8 * HOUR, {}) == 0
    assert scaler.evaluate(10 * HOUR, {}) == 1
    assert scaler.evaluate(10 * HOUR + 60, {"backlog:interactive": 35}) == 4
    # The schedule's end is a scale-in like any other: the peak is kept for the stabilization period
    assert scaler.evaluate(19 * HOUR - 10, {}) == 1
    assert scaler.evaluate(19 * HOUR, {}) == 1
    assert scaler.evaluate(19 * HOUR + 601, {}) == 0


def test_a_policy_naming_one_metric_twice_is_refused_like_the_api_does() -> None:
    # Two lanes on num_undelivered_messages with different filters: the deployment issue 30 fixed.
    assert BATCH.metric == BACKLOG_METRIC
    with pytest.raises(ValueError, match="each Cloud Monitoring metric once"):
        _policy(signals=(Signal("lane_backlog", 10, "interactive"), BATCH))
    with pytest.raises(ValueError, match="takes 5"):
        _policy(
            signals=tuple(
                Signal("lane_backlog", 1, f"lane{i}", f"custom.googleapis.com/m{i}") for i in range(6)
            )
        )
    assert _policy(signals=(INTERACTIVE, BATCH, Signal("lane_oldest_age", 60, "dlq", AGE_METRIC)))


def test_an_age_signal_adds_one_vm_per_assignment_of_age_where_a_count_jumps_at_once() -> None:
    age = Signal("lane_oldest_age", 175, "batch", AGE_METRIC)
    scaler = Autoscaler(_policy(signals=(INTERACTIVE, age)))
    # 100,000 jobs published at once: the count asks for all it needs in one evaluation, the age for one VM
    # per 175 s the oldest job has waited.
    assert scaler.raw_recommendation(0.0, {"age:batch": 1.0}) == 1
    assert scaler.raw_recommendation(0.0, {"age:batch": 175.0}) == 1
    assert scaler.raw_recommendation(0.0, {"age:batch": 176.0}) == 2
    assert scaler.raw_recommendation(0.0, {"age:batch": 900.0}) == 6
    count = Autoscaler(_policy(signals=(INTERACTIVE, Signal("lane_backlog", 35000, "batch"))))
    assert count.raw_recommendation(0.0, {"backlog:batch": 100_000.0}) == 3
