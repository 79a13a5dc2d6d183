"""Arrival traces: when each job is published and on which lane (priority).

A trace is two aligned arrays sorted by time: ``times_s`` (seconds since the simulation start, which is
a Monday 00:00 in the schedules' time zone by default) and ``lanes`` (index into the lane names).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
HOUR_S = 3600.0


@dataclass(frozen=True)
class Trace:
    """Job arrivals; ``horizon_s`` is the period the trace describes (billing runs at least that long)."""

    name: str
    times_s: np.ndarray
    lanes: np.ndarray
    lane_names: tuple[str, ...]
    horizon_s: float
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.times_s) != len(self.lanes):
            raise ValueError("times_s and lanes must have the same length")

    @property
    def n_jobs(self) -> int:
        return len(self.times_s)

    def count(self, lane: str) -> int:
        return int(np.count_nonzero(self.lanes == self.lane_names.index(lane)))


def _merge(
    name: str,
    parts: list[tuple[np.ndarray, int]],
    lane_names: tuple[str, ...],
    horizon_s: float,
    description: str,
) -> Trace:
    times = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    lanes = (
        np.concatenate([np.full(len(p[0]), p[1], dtype=np.int8) for p in parts])
        if parts
        else (np.zeros(0, dtype=np.int8))
    )
    order = np.argsort(times, kind="stable")
    return Trace(name, times[order], lanes[order], lane_names, horizon_s, description)


def lane_index(lane_names: tuple[str, ...], name: str) -> int:
    """Index of lane ``name``: generators put interactive traffic on ``interactive``, bulk on ``batch``."""
    if name not in lane_names:
        raise ValueError(f"trace needs a lane named {name!r}; lanes are {list(lane_names)}")
    return lane_names.index(name)


def poisson(rng: np.random.Generator, rate_per_s: float, begin_s: float, end_s: float) -> np.ndarray:
    """Poisson arrivals at a constant rate in ``[begin_s, end_s)``."""
    if rate_per_s <= 0 or end_s <= begin_s:
        return np.zeros(0)
    n = rng.poisson(rate_per_s * (end_s - begin_s))
    return np.sort(rng.uniform(begin_s, end_s, n))


def _weekday_windows(
    days: float, first_hour: float, last_hour: float, weekdays: range
) -> list[tuple[float, float]]:
    return [
        (d * DAY_S + first_hour * HOUR_S, d * DAY_S + last_hour * HOUR_S)
        for d in range(int(days))
        if d % 7 in weekdays
    ]


def steady(
    rng: np.random.Generator,
    lane_names: tuple[str, ...],
    *,
    rate_per_s: float = 0.5,
    interactive_share: float = 0.2,
    horizon_s: float = WEEK_S,
) -> Trace:
    """Constant-rate Poisson traffic all week; ``interactive_share`` of it on the first lane."""
    parts = [
        (poisson(rng, rate_per_s * interactive_share, 0, horizon_s), lane_index(lane_names, "interactive")),
        (poisson(rng, rate_per_s * (1 - interactive_share), 0, horizon_s), lane_index(lane_names, "batch")),
    ]
    return _merge(
        "steady",
        parts,
        lane_names,
        horizon_s,
        f"Poisson {rate_per_s}/s all week, {interactive_share:.0%} interactive",
    )


def business_hours(
    rng: np.random.Generator,
    lane_names: tuple[str, ...],
    *,
    day_rate_per_s: float = 1.0,
    night_rate_per_s: float = 0.01,
    horizon_s: float = WEEK_S,
) -> Trace:
    """Interactive traffic on weekdays 09:00-18:00, a trickle otherwise."""
    parts: list[tuple[np.ndarray, int]] = [
        (poisson(rng, night_rate_per_s, 0, horizon_s), lane_index(lane_names, "interactive"))
    ]
    for begin, end in _weekday_windows(horizon_s / DAY_S, 9, 18, range(5)):
        parts.append((poisson(rng, day_rate_per_s, begin, end), lane_index(lane_names, "interactive")))
    return _merge(
        "business-hours",
        parts,
        lane_names,
        horizon_s,
        f"interactive {day_rate_per_s}/s weekdays 09-18, {night_rate_per_s}/s otherwise",
    )


def night_batch(
    rng: np.random.Generator,
    lane_names: tuple[str, ...],
    *,
    batch_jobs: int = 100_000,
    batch_hour: float = 22.0,
    publish_s: float = 600.0,
    batch_days: range = range(5),
    day_rate_per_s: float = 0.3,
    horizon_s: float = WEEK_S,
) -> Trace:
    """A ``batch_jobs`` batch published at ``batch_hour`` on each weekday night (over ``publish_s``),
    with interactive traffic at ``day_rate_per_s`` on weekdays 09:00-18:00 (the default trace)."""
    parts: list[tuple[np.ndarray, int]] = []
    for begin, end in _weekday_windows(horizon_s / DAY_S, 9, 18, range(5)):
        parts.append((poisson(rng, day_rate_per_s, begin, end), lane_index(lane_names, "interactive")))
    for d in range(int(horizon_s / DAY_S)):
        if d % 7 in batch_days:
            start = d * DAY_S + batch_hour * HOUR_S
            parts.append(
                (np.sort(rng.uniform(start, start + publish_s, batch_jobs)), lane_index(lane_names, "batch"))
            )
    return _merge(
        "night-batch",
        parts,
        lane_names,
        horizon_s,
        f"{batch_jobs:,} batch jobs at {batch_hour:02.0f}:00 each weeknight (published over "
        f"{publish_s:.0f} s) + interactive {day_rate_per_s}/s weekdays 09-18",
    )


def bursts(
    rng: np.random.Generator,
    lane_names: tuple[str, ...],
    *,
    base_rate_per_s: float = 0.05,
    n_bursts: int = 12,
    burst_jobs: int = 5_000,
    burst_s: float = 120.0,
    interactive_share: float = 0.1,
    horizon_s: float = WEEK_S,
) -> Trace:
    """A low base rate with ``n_bursts`` bursts of ``burst_jobs`` jobs each at random times."""
    parts: list[tuple[np.ndarray, int]] = [
        (poisson(rng, base_rate_per_s, 0, horizon_s), lane_index(lane_names, "interactive"))
    ]
    for start in np.sort(rng.uniform(0, horizon_s - burst_s, n_bursts)):
        times = np.sort(rng.uniform(start, start + burst_s, burst_jobs))
        interactive = rng.random(burst_jobs) < interactive_share
        parts += [
            (times[interactive], lane_index(lane_names, "interactive")),
            (times[~interactive], lane_index(lane_names, "batch")),
        ]
    return _merge(
        "bursts",
        parts,
        lane_names,
        horizon_s,
        f"{n_bursts} bursts of {burst_jobs:,} jobs in {burst_s:.0f} s over a base "
        f"{base_rate_per_s}/s, {interactive_share:.0%} interactive",
    )


def step(
    lane_names: tuple[str, ...], *, at_s: float, rate_per_s: float, until_s: float, lane: int = 1
) -> Trace:
    """Deterministic step load: evenly spaced arrivals at ``rate_per_s`` from ``at_s`` to ``until_s``."""
    times = np.arange(at_s, until_s, 1.0 / rate_per_s)
    return _merge("step", [(times, lane)], lane_names, until_s, f"step to {rate_per_s}/s at {at_s:.0f} s")


def from_csv(path: Path | str, lane_names: tuple[str, ...], *, horizon_s: float | None = None) -> Trace:
    """Read a CSV with columns ``timestamp`` and ``priority``.

    ``timestamp`` is seconds since the start (a number) or an ISO 8601 date-time (taken relative to the
    earliest one); ``priority`` is a lane name (``batch`` when empty).
    """
    raw_times: list[str] = []
    priorities: list[str] = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            raw_times.append(row["timestamp"].strip())
            priorities.append((row.get("priority") or "batch").strip() or "batch")
    try:
        times = np.array([float(t) for t in raw_times])
    except ValueError:
        stamps = [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in raw_times]
        times = np.array(stamps) - min(stamps)
    unknown = sorted(set(priorities) - set(lane_names))
    if unknown:
        raise ValueError(f"{path}: unknown priorities {unknown}; lanes are {list(lane_names)}")
    lanes = np.array([lane_names.index(p) for p in priorities], dtype=np.int8)
    order = np.argsort(times, kind="stable")
    end = float(horizon_s if horizon_s is not None else (times.max() if len(times) else 0.0))
    return Trace(Path(path).stem, times[order], lanes[order], lane_names, end, f"CSV {path}")
