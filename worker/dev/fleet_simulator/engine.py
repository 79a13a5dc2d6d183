"""The discrete-event simulation of the deployed fleet (heapq event queue, numpy, seeded).

What happens, in the order the real system does it:
- jobs are published to their lane's subscription (the trace); a worker slot pulls interactive first;
- each VM has ``slots`` jobs in progress; a free slot takes the oldest job of the highest-priority lane
  with work. Under a backlog a slot takes a *run* of jobs back to back (up to ``chunk_max_s`` of work, and
  no more than its fair share of the backlog) in one event: the per-job start and finish times inside the
  run are exact cumulative sums, so this only saves events, it does not change the queueing model;
- every ``metric_period_s`` Pub/Sub samples each subscription's ``num_undelivered_messages`` (queued +
  leased-but-unacked + waiting for redelivery); each sample reaches the autoscaler after a random delay;
- every ``eval_interval_s`` the autoscaler (``autoscaler.Autoscaler``) computes the target size and the
  MIG creates VMs (ready after the boot timeline) or deletes VMs: booting ones first, then idle ones,
  then the least-loaded; a deleted worker drains for ``scale_in_drain_s``;
- a spot VM is preempted after an exponential lifetime; it drains for 30 s, the MIG recreates it;
- a draining worker nacks the jobs it leased but has not started (redelivered after the lane's retry
  backoff) and stops when its in-flight jobs finish; jobs still running when the drain time runs out are
  lost and redone from scratch (counted as redone after preemption / interrupted by scale-in).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from worker.dev.fleet_simulator.autoscaler import Autoscaler
from worker.dev.fleet_simulator.config import (
    AutoscalerPolicy,
    BootTimeline,
    Environment,
    Prices,
    ServiceModel,
)
from worker.dev.fleet_simulator.cron import ScheduleFloor
from worker.dev.fleet_simulator.traces import Trace

_READY, _COMPLETE, _PREEMPT, _DRAIN_END, _WAKE, _SAMPLE, _EVAL = range(7)
_BOOTING, _RUNNING, _DRAINING, _GONE = "booting", "running", "draining", "gone"
_DRAW_BUFFER = 65536
DEFAULT_EXTRA_S = 2 * 86400.0  # keep simulating this long after the trace to finish the backlog


@dataclass(eq=False)
class _Chunk:
    vm: _VM
    lane: int
    ids: np.ndarray
    starts: np.ndarray
    finishes: np.ndarray
    t0: float
    version: int = 0
    active: bool = True


@dataclass(eq=False)
class _VM:
    vm_id: int
    created: float
    spot: bool
    ready_at: float
    state: str
    free_slots: int
    chunks: list[_Chunk] = field(default_factory=list)
    busy_s: float = 0.0
    ended: float | None = None
    drain_reason: str = ""


@dataclass
class TimeSeries:
    """Per metric sample: time, true backlog per lane, VMs (alive / serving), target size."""

    t: list[float] = field(default_factory=list)
    backlog: list[list[int]] = field(default_factory=list)
    vms: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    target: list[int] = field(default_factory=list)


@dataclass
class RawResult:
    """Everything the run produced; ``report.summarize`` turns it into the published figures."""

    policy: AutoscalerPolicy
    trace: Trace
    arrival: np.ndarray
    lane: np.ndarray
    start: np.ndarray
    finish: np.ndarray
    end_s: float
    vm_records: list[tuple[float, float, float, float, bool]]  # created, ready, ended, busy_s, spot
    slots: int
    jobs_redone: int
    jobs_interrupted_scale_in: int
    jobs_released: int
    preemptions: int
    vm_ready_times: list[float]
    series: TimeSeries
    prices: Prices


class FleetSimulation:
    """One run of one policy over one trace; ``run()`` returns a ``RawResult``."""

    def __init__(
        self,
        trace: Trace,
        policy: AutoscalerPolicy,
        *,
        service: ServiceModel,
        boot: BootTimeline,
        prices: Prices,
        environment: Environment,
        redelivery_delay_s: dict[str, float],
        start: datetime,
        seed: int = 0,
        extra_s: float = DEFAULT_EXTRA_S,
    ):
        self.trace = trace
        self.policy = policy
        self.service = service
        self.boot_s = BootTimeline(boot.steps, baked=policy.baked_image).total_s
        self.prices = prices
        self.env = environment
        self.end_limit = trace.horizon_s + extra_s
        self.lane_names = trace.lane_names
        n_lanes = len(self.lane_names)
        self.backoff = [float(redelivery_delay_s.get(name, 0.0)) for name in self.lane_names]
        self._rng_service = np.random.default_rng([seed, 1])
        self._rng_preempt = np.random.default_rng([seed, 2])
        self._rng_metric = np.random.default_rng([seed, 3])
        self._draws = np.zeros(0)
        self._draw_pos = 0
        # Jobs
        n = trace.n_jobs
        self.arrival = trace.times_s.astype(float)
        self.lane = trace.lanes.astype(np.int64)
        self.start = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.order = [np.flatnonzero(self.lane == i) for i in range(n_lanes)]
        self.lane_arrivals = [self.arrival[ids] for ids in self.order]
        self.head = [0] * n_lanes
        self.redo: list[list[tuple[float, int]]] = [[] for _ in range(n_lanes)]
        self.completed = 0
        # Fleet
        self.vms: list[_VM] = []
        self.retired: list[_VM] = []
        self.next_vm_id = 0
        self.running_slots = 0
        self.jobs_redone = 0
        self.jobs_interrupted = 0
        self.jobs_released = 0
        self.preemptions = 0
        self.vm_ready_times: list[float] = []
        # Autoscaler and metrics
        floor = ScheduleFloor(policy.schedules, start=start, horizon_s=self.end_limit)
        self.autoscaler = Autoscaler(policy, floor)
        self.pending_samples: list[tuple[float, float, dict[str, float]]] = []
        self.latest_sample: tuple[float, dict[str, float]] = (-math.inf, {})
        self.series = TimeSeries()
        # Events
        self.events: list[tuple[float, int, int, object]] = []
        self.seq = 0
        self.wake_at = math.inf

    # ------------------------------------------------------------------ events
    def _push(self, t: float, kind: int, payload: object = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    def run(self) -> RawResult:
        target = self.autoscaler.evaluate(0.0, {})
        for _ in range(target):
            vm = self._create_vm(0.0, ready_now=True)
            self._on_ready(0.0, vm)
        self._push(0.0, _SAMPLE)
        self._push(self.env.eval_interval_s, _EVAL)
        self._schedule_wake(0.0)
        n_jobs = self.trace.n_jobs
        handlers = {
            _READY: self._on_ready,
            _COMPLETE: self._on_complete,
            _PREEMPT: self._on_preempt,
            _DRAIN_END: self._on_drain_end,
        }
        t = 0.0
        while self.events:
            t, _, kind, payload = heapq.heappop(self.events)
            if t > self.end_limit or (t >= self.trace.horizon_s and self.completed >= n_jobs):
                break
            if kind == _WAKE:
                if t >= self.wake_at:
                    self.wake_at = math.inf
                    self._dispatch_all(t)
            elif kind == _SAMPLE:
                self._on_sample(t)
            elif kind == _EVAL:
                self._on_eval(t)
            else:
                handlers[kind](t, payload)
        end = max(min(t, self.end_limit), self.trace.horizon_s)
        return self._result(end)

    # ------------------------------------------------------------------ jobs
    def _draw(self, k: int) -> np.ndarray:
        if self._draw_pos + k > len(self._draws):
            self._draws = self._sample_service(max(_DRAW_BUFFER, k))
            self._draw_pos = 0
        out = self._draws[self._draw_pos : self._draw_pos + k]
        self._draw_pos += k
        return out

    def _sample_service(self, size: int) -> np.ndarray:
        s = self.service
        rng = self._rng_service
        if s.distribution == "exponential":
            return rng.exponential(s.mean_service_s, size)
        if s.distribution == "constant" or s.sigma <= 0:
            return np.full(size, s.mean_service_s)
        mu = math.log(s.mean_service_s) - s.sigma * s.sigma / 2.0
        return rng.lognormal(mu, s.sigma, size)

    def _arrived(self, lane: int, t: float) -> int:
        return int(np.searchsorted(self.lane_arrivals[lane], t, side="right"))

    def _chunk_cap(self, available: int) -> int:
        cap = max(1, int(self.env.chunk_max_s / self.service.mean_service_s))
        fair = max(1, available // max(self.running_slots, 1))
        return min(available, cap, fair)

    def _take(self, t: float, vm: _VM) -> bool:
        """Start a run of jobs on one free slot of ``vm``; False when no lane has work."""
        for lane in range(len(self.lane_names)):
            redo = self.redo[lane]
            if redo and redo[0][0] <= t:
                cap = self._chunk_cap(len(redo))
                picked: list[int] = []
                while redo and redo[0][0] <= t and len(picked) < cap:
                    picked.append(heapq.heappop(redo)[1])
                ids = np.array(picked, dtype=np.int64)
            else:
                available = self._arrived(lane, t) - self.head[lane]
                if available <= 0:
                    continue
                k = self._chunk_cap(available)
                h = self.head[lane]
                ids = self.order[lane][h : h + k]
                self.head[lane] = h + k
            durations = self._draw(len(ids))
            finishes = t + np.cumsum(durations)
            starts = finishes - durations
            self.start[ids] = starts
            self.finish[ids] = finishes
            chunk = _Chunk(vm, lane, ids, starts, finishes, t)
            vm.chunks.append(chunk)
            vm.free_slots -= 1
            self._push(float(finishes[-1]), _COMPLETE, (chunk, chunk.version))
            return True
        return False

    def _dispatch(self, t: float, vm: _VM) -> bool:
        """Fill the free slots of ``vm``; False when work ran out."""
        while vm.free_slots > 0:
            if not self._take(t, vm):
                self._schedule_wake(t)
                return False
        return True

    def _dispatch_all(self, t: float) -> None:
        for vm in self.vms:
            if vm.state == _RUNNING and vm.free_slots > 0 and not self._dispatch(t, vm):
                return

    def _schedule_wake(self, t: float) -> None:
        """Wake idle slots when the next job arrives or becomes redeliverable."""
        nxt = math.inf
        for lane in range(len(self.lane_names)):
            arrived = self._arrived(lane, t)
            if arrived < len(self.lane_arrivals[lane]):
                nxt = min(nxt, float(self.lane_arrivals[lane][arrived]))
            if self.redo[lane]:
                nxt = min(nxt, max(self.redo[lane][0][0], t))
        if nxt < self.wake_at:
            self.wake_at = nxt
            self._push(nxt, _WAKE)

    def _requeue(self, t: float, lane: int, ids: np.ndarray) -> None:
        self.start[ids] = np.nan
        self.finish[ids] = np.nan
        available_at = t + self.backoff[lane]
        for job in ids.tolist():
            heapq.heappush(self.redo[lane], (available_at, job))
        self._schedule_wake(t)

    def _on_complete(self, t: float, payload: object) -> None:
        chunk: _Chunk
        version: int
        chunk, version = payload  # type: ignore[misc]
        if not chunk.active or version != chunk.version:
            return
        vm = chunk.vm
        chunk.active = False
        vm.chunks.remove(chunk)
        vm.busy_s += t - chunk.t0
        vm.free_slots += 1
        self.completed += len(chunk.ids)
        if vm.state == _RUNNING:
            self._dispatch(t, vm)
        elif vm.state == _DRAINING and not vm.chunks:
            self._retire(t, vm)

    # ------------------------------------------------------------------ VMs
    def _create_vm(self, t: float, *, ready_now: bool = False) -> _VM:
        ready_at = t if ready_now else t + self.boot_s
        vm = _VM(self.next_vm_id, t, self.policy.spot, ready_at, _BOOTING, self.service.slots)
        self.next_vm_id += 1
        self.vms.append(vm)
        if not ready_now:
            self._push(ready_at, _READY, vm)
        if self.policy.spot and self.env.preemptions_per_vm_hour > 0:
            lifetime = self._rng_preempt.exponential(3600.0 / self.env.preemptions_per_vm_hour)
            self._push(t + lifetime, _PREEMPT, vm)
        return vm

    def _on_ready(self, t: float, payload: object) -> None:
        vm: _VM = payload  # type: ignore[assignment]
        if vm.state != _BOOTING:
            return
        vm.state = _RUNNING
        self.running_slots += self.service.slots
        self.vm_ready_times.append(t)
        self._dispatch(t, vm)

    def _retire(self, t: float, vm: _VM) -> None:
        if vm.state == _RUNNING:
            self.running_slots -= self.service.slots
        vm.state = _GONE
        vm.ended = t
        self.vms.remove(vm)
        self.retired.append(vm)

    def _drain(self, t: float, vm: _VM, reason: str, drain_s: float) -> None:
        """Stop pulling; nack leased-but-unstarted jobs; finish what runs until ``t + drain_s``."""
        if vm.state == _BOOTING:
            self._retire(t, vm)
            return
        self.running_slots -= self.service.slots
        vm.state = _DRAINING
        vm.drain_reason = reason
        for chunk in list(vm.chunks):
            started = chunk.starts <= t
            if started.all():
                continue
            self.jobs_released += int((~started).sum())
            self._requeue(t, chunk.lane, chunk.ids[~started])
            if not started.any():
                chunk.active = False
                vm.chunks.remove(chunk)
                continue
            chunk.ids, chunk.starts, chunk.finishes = (
                chunk.ids[started],
                chunk.starts[started],
                chunk.finishes[started],
            )
            chunk.version += 1
            self._push(float(chunk.finishes[-1]), _COMPLETE, (chunk, chunk.version))
        if vm.chunks:
            self._push(t + drain_s, _DRAIN_END, vm)
        else:
            self._retire(t, vm)

    def _on_drain_end(self, t: float, payload: object) -> None:
        vm: _VM = payload  # type: ignore[assignment]
        if vm.state != _DRAINING:
            return
        for chunk in vm.chunks:
            lost = chunk.finishes > t
            n_lost = int(lost.sum())
            if vm.drain_reason == "preemption":
                self.jobs_redone += n_lost
            else:
                self.jobs_interrupted += n_lost
            self.completed += len(chunk.ids) - n_lost
            self._requeue(t, chunk.lane, chunk.ids[lost])
            vm.busy_s += t - chunk.t0
            chunk.active = False
        vm.chunks = []
        self._retire(t, vm)

    def _on_preempt(self, t: float, payload: object) -> None:
        vm: _VM = payload  # type: ignore[assignment]
        if vm.state not in (_BOOTING, _RUNNING):
            return
        self.preemptions += 1
        self._drain(t, vm, "preemption", self.env.preemption_drain_s)

    def _reconcile(self, t: float, target: int) -> None:
        """The MIG makes the number of live (booting or serving) VMs equal the target."""
        live = [vm for vm in self.vms if vm.state in (_BOOTING, _RUNNING)]
        if len(live) < target:
            for _ in range(target - len(live)):
                self._create_vm(t)
        elif len(live) > target:

            def in_flight(vm: _VM) -> int:
                return sum(int((c.finishes > t).sum()) for c in vm.chunks)

            victims = sorted(live, key=lambda vm: (vm.state != _BOOTING, in_flight(vm), -vm.vm_id))
            for vm in victims[: len(live) - target]:
                self._drain(t, vm, "scale-in", self.env.scale_in_drain_s)

    # ------------------------------------------------------------------ metrics + autoscaler
    def _backlog(self, t: float) -> list[int]:
        backlog = [
            self._arrived(lane, t) - self.head[lane] + len(self.redo[lane])
            for lane in range(len(self.lane_names))
        ]
        for vm in self.vms:
            for chunk in vm.chunks:
                backlog[chunk.lane] += int((chunk.finishes > t).sum())
        return backlog

    def _on_sample(self, t: float) -> None:
        backlog = self._backlog(t)
        values = {f"backlog:{name}": float(b) for name, b in zip(self.lane_names, backlog, strict=True)}
        values["work_seconds"] = float(sum(backlog)) * self.service.mean_service_s
        low, high = self.env.metric_delay_s
        delay = float(self._rng_metric.uniform(low, high)) if high > low else low
        heapq.heappush(self.pending_samples, (t + delay, t, values))
        series = self.series
        series.t.append(t)
        series.backlog.append(backlog)
        series.vms.append(sum(1 for vm in self.vms if vm.state != _GONE))
        series.running.append(sum(1 for vm in self.vms if vm.state == _RUNNING))
        series.target.append(self.autoscaler.target)
        self._push(t + self.env.metric_period_s, _SAMPLE)

    def _on_eval(self, t: float) -> None:
        while self.pending_samples and self.pending_samples[0][0] <= t:
            _, sampled_at, values = heapq.heappop(self.pending_samples)
            if sampled_at > self.latest_sample[0]:
                self.latest_sample = (sampled_at, values)
        target = self.autoscaler.evaluate(t, self.latest_sample[1])
        self._reconcile(t, target)
        self._push(t + self.env.eval_interval_s, _EVAL)

    # ------------------------------------------------------------------ result
    def _result(self, end: float) -> RawResult:
        records = []
        for vm in self.retired + self.vms:
            ended = vm.ended if vm.ended is not None else end
            busy = vm.busy_s
            if vm.ended is None:
                busy += sum(min(end, float(c.finishes[-1])) - c.t0 for c in vm.chunks if c.active)
            records.append((vm.created, min(vm.ready_at, ended), ended, busy, vm.spot))
        return RawResult(
            policy=self.policy,
            trace=self.trace,
            arrival=self.arrival,
            lane=self.lane,
            start=self.start,
            finish=np.where(self.finish <= end, self.finish, np.nan),
            end_s=end,
            vm_records=records,
            slots=self.service.slots,
            jobs_redone=self.jobs_redone,
            jobs_interrupted_scale_in=self.jobs_interrupted,
            jobs_released=self.jobs_released,
            preemptions=self.preemptions,
            vm_ready_times=self.vm_ready_times,
            series=self.series,
            prices=self.prices,
        )
