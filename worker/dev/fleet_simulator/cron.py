"""Cron expressions and scaling-schedule windows, as the GCE autoscaler reads them.

A scaling schedule (``AutoscalingPolicyScalingSchedule``) names a cron expression for the *start* of each
interval, a ``duration_sec`` and a ``time_zone``; while any interval is running, the autoscaler recommends
at least ``min_required_replicas``. Cron: ``minute hour day-of-month month day-of-week`` with an optional
sixth year field; ``*``, lists, ranges, steps and three-letter names; day-of-week 0 and 7 are Sunday; when
both day fields are restricted a time matches either (classic cron).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_SECONDS_PER_MINUTE = 60


def _parse_field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.upper().split(","):
        step = 1
        part = item
        if "/" in item:
            part, step_text = item.split("/", 1)
            step = int(step_text)
            if step < 1:
                raise ValueError(f"cron step must be >= 1 in {text!r}")
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(part, names)
            end = high if step > 1 else start
        if start < low or end > high or start > end:
            raise ValueError(f"cron field {text!r} out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(token: str, names: dict[str, int]) -> int:
    return names[token] if token in names else int(token)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; ``matches`` takes a local (naive or aware) datetime."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    years: frozenset[int] | None
    dom_restricted: bool
    dow_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise ValueError(f"cron needs 5 or 6 fields, got {expression!r}")
        dow = _parse_field(fields[4], 0, 7, _DAYS)
        dow = frozenset(0 if d == 7 else d for d in dow)
        return cls(
            minutes=_parse_field(fields[0], 0, 59, {}),
            hours=_parse_field(fields[1], 0, 23, {}),
            days_of_month=_parse_field(fields[2], 1, 31, {}),
            months=_parse_field(fields[3], 1, 12, _MONTHS),
            days_of_week=dow,
            years=_parse_field(fields[5], 1970, 2199, {}) if len(fields) == 6 else None,
            dom_restricted=fields[2] not in ("*", "?"),
            dow_restricted=fields[4] not in ("*", "?"),
        )

    def matches(self, when: datetime) -> bool:
        if when.minute not in self.minutes or when.hour not in self.hours or when.month not in self.months:
            return False
        if self.years is not None and when.year not in self.years:
            return False
        dom_ok = when.day in self.days_of_month
        dow_ok = (when.isoweekday() % 7) in self.days_of_week
        if self.dom_restricted and self.dow_restricted:
            return dom_ok or dow_ok
        return dom_ok and dow_ok


@dataclass(frozen=True)
class ScalingSchedule:
    """One ``scaling_schedules`` entry of the Terraform module."""

    name: str
    min_required_replicas: int
    schedule: str
    duration_s: float
    time_zone: str = "UTC"
    disabled: bool = False


def schedule_windows(
    schedule: ScalingSchedule, *, start: datetime, horizon_s: float
) -> list[tuple[float, float]]:
    """Intervals ``[begin, end)`` in seconds since ``start`` (an aware datetime) when ``schedule`` runs.

    Every minute from ``duration_s`` before ``start`` to the horizon is checked in the schedule's own time
    zone, so intervals that began before the simulation and daylight-saving shifts are both right.
    """
    if schedule.disabled:
        return []
    cron = Cron.parse(schedule.schedule)
    zone = ZoneInfo(schedule.time_zone)
    first = start - timedelta(seconds=schedule.duration_s)
    first = first.replace(second=0, microsecond=0)
    n_minutes = int((horizon_s + schedule.duration_s) // _SECONDS_PER_MINUTE) + 2
    windows: list[tuple[float, float]] = []
    for i in range(n_minutes):
        moment = first + timedelta(minutes=i)
        if cron.matches(moment.astimezone(zone)):
            begin = (moment - start).total_seconds()
            end = begin + schedule.duration_s
            if end <= 0 or begin >= horizon_s:
                continue
            if windows and begin <= windows[-1][1]:
                windows[-1] = (windows[-1][0], max(windows[-1][1], end))
            else:
                windows.append((begin, end))
    return windows


class ScheduleFloor:
    """The largest ``min_required_replicas`` of the schedules running at a time, as a step function."""

    def __init__(self, schedules: tuple[ScalingSchedule, ...], *, start: datetime, horizon_s: float):
        edges: set[float] = {0.0}
        spans: list[tuple[float, float, int]] = []
        for schedule in schedules:
            for begin, end in schedule_windows(schedule, start=start, horizon_s=horizon_s):
                spans.append((begin, end, schedule.min_required_replicas))
                edges.update((max(begin, 0.0), end))
        self._times = np.array(sorted(edges), dtype=float)
        self._floor = np.zeros(len(self._times), dtype=np.int64)
        for begin, end, replicas in spans:
            mask = (self._times >= begin) & (self._times < end)
            self._floor[mask] = np.maximum(self._floor[mask], replicas)

    def at(self, t: float) -> int:
        """Minimum replicas the schedules require at ``t`` seconds since the start."""
        index = int(np.searchsorted(self._times, t, side="right")) - 1
        return int(self._floor[max(index, 0)])
