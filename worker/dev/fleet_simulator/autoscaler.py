"""The GCE managed-instance-group autoscaler, as documented, as a pure state machine.

Modelled rules (docs/capacity.md cites the documentation for each):
- each per-group metric signal recommends ``ceil(value / single_instance_assignment)`` VMs;
- each running scaling schedule recommends at least its ``min_required_replicas``;
- the recommendation is the largest over all signals and schedules, clamped to [min, max] replicas;
- scale-out is immediate; for scale-in the autoscaler keeps the peak recommendation over the
  stabilization period (600 s), so the group shrinks only after load has stayed low that long;
- scale-in controls: the target may fall at most ``max_scaled_in_replicas`` below the peak target of the
  last ``time_window_sec``;
- the initialization (cool-down) period only masks *per-VM* data from VMs still starting; per-group
  metrics (Pub/Sub backlog) do not come from VMs, so it does not change these recommendations.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from worker.dev.fleet_simulator.config import AutoscalerPolicy
from worker.dev.fleet_simulator.cron import ScheduleFloor


def signal_recommendation(value: float, single_instance_assignment: float) -> int:
    """VMs a per-group metric asks for: ``ceil(value / assignment)``; zero when the metric is zero."""
    if value <= 0:
        return 0
    return math.ceil(value / single_instance_assignment - 1e-9)


class _WindowMax:
    """Maximum of the values recorded over a trailing time window (monotonic deque)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._items: deque[tuple[float, int]] = deque()

    def push(self, t: float, value: int) -> None:
        while self._items and self._items[-1][1] <= value:
            self._items.pop()
        self._items.append((t, value))

    def max(self, t: float) -> int | None:
        while self._items and self._items[0][0] < t - self.window_s:
            self._items.popleft()
        return self._items[0][1] if self._items else None


class Autoscaler:
    """Turns observed metric values into the MIG's target size, one evaluation at a time."""

    def __init__(self, policy: AutoscalerPolicy, floor: ScheduleFloor | None = None):
        self.policy = policy
        self.floor = floor
        self._recommendations = _WindowMax(policy.stabilization_period_s)
        self._targets = _WindowMax(policy.scale_in_time_window_s)
        self.target = 0

    def raw_recommendation(self, t: float, metrics: Mapping[str, float]) -> int:
        """Largest recommendation over signals and running schedules, clamped to [min, max]."""
        policy = self.policy
        if not policy.autoscaling:
            return policy.min_replicas
        wanted = policy.min_replicas
        for signal in policy.signals:
            value = metrics.get(signal.name, 0.0)
            wanted = max(wanted, signal_recommendation(value, signal.single_instance_assignment))
        if self.floor is not None:
            wanted = max(wanted, self.floor.at(t))
        return min(wanted, policy.max_replicas)

    def evaluate(self, t: float, metrics: Mapping[str, float]) -> int:
        """Record one evaluation at ``t`` and return the new target size."""
        raw = self.raw_recommendation(t, metrics)
        if not self.policy.autoscaling:
            self.target = raw
            return raw
        self._recommendations.push(t, raw)
        stabilized = self._recommendations.max(t)
        target = raw if stabilized is None else stabilized
        if self.policy.scale_in_max_replicas is not None:
            recent_peak = self._targets.max(t)
            if recent_peak is not None:
                target = max(target, recent_peak - self.policy.scale_in_max_replicas)
        target = min(target, self.policy.max_replicas)
        self._targets.push(t, target)
        self.target = target
        return target
