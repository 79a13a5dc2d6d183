"""The discrete-event simulation of the deployed fleet (heapq event queue, numpy, seeded).

What happens, in the order the real system does it:
- jobs are published to their lane's subscription (the trace); a worker slot pulls interactive first;
- each VM has ``slots`` jobs in progress; a free slot starts the oldest job of the highest-priority lane
  with work (a redelivered job before a fresh one), one job at a time;
- every ``metric_period_s`` Pub/Sub samples each subscription's unacked messages (queued + leased-but-unacked
  + waiting for redelivery: ``num_undelivered_messages``, ``num_unacked_messages_by_region``) and, when a
  signal reads it, the age of the oldest of them; each sample reaches the autoscaler after a random delay;
- every ``eval_interval_s`` the autoscaler (``autoscaler.Autoscaler``) computes the target size and the
  MIG creates VMs (ready after the boot timeline) or deletes VMs: booting ones first, then idle ones,
  then the least-loaded; a deleted worker drains for ``scale_in_drain_s``; with a standby pool
  (``standby_stopped``) a new VM is a stopped one started again (the restart column of the boot timeline)
  while the pool has one, and the MIG refills the pool with a new VM that boots and stops (billed while it
  runs; a stopped VM bills its disk);
- a spot VM is preempted after an exponential lifetime; it drains for 30 s, the MIG recreates it;
- a draining worker stops pulling and stops when its in-flight jobs finish; jobs still running when the
  drain time runs out are lost and redone from scratch after the lane's retry backoff (counted as redone
  after preemption / interrupted by scale-in).

Runs of jobs (the event savings). Under a backlog a free slot commits to a *run*: the next few instants
at which it will start a job (up to ``chunk_max_s`` of work and its fair share of the backlog), drawn as
one cumulative sum and settled by one completion event. Three rules keep this the same queueing model as
one job per event (issue 20), so only the event count changes:
- jobs are bound to start instants late, in start-time order over all slots of the lane (``_bind``), so
  the lane stays first-in first-out across slots, exactly as a slot pulling one job at a time sees it;
- a slot that frees while the lane's jobs are all committed to *later* instants of other runs takes the
  latest such commitment (``_steal``): no slot idles while a job waits;
- a run never holds an instant at or after the next moment a higher-priority job can become available
  (the next arrival or redelivery of a higher lane; runs are cut when a redelivery appears), so a slot
  that frees after that moment pulls the higher lane first.
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

_READY, _COMPLETE, _PREEMPT, _DRAIN_END, _WAKE, _SAMPLE, _EVAL, _REFILLED = range(8)
_BOOTING, _RUNNING, _DRAINING, _GONE = "booting", "running", "draining", "gone"
_DRAW_BUFFER = 65536
DEFAULT_EXTRA_S = 2 * 86400.0  # keep simulating this long after the trace to finish the backlog


@dataclass(eq=False)
class _Run:
    """The start instants one slot committed to in one lane; ``ids[:bound]`` are the jobs bound so far."""

    vm: _VM
    lane: int
    starts: np.ndarray
    finishes: np.ndarray
    ids: np.ndarray
    bound: int = 0
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
    runs: list[_Run] = field(default_factory=list)
    busy_s: float = 0.0
    ended: float | None = None
    drain_reason: str = ""


@dataclass
class _StandbyPool:
    """The MIG's stopped VMs: how many now, their stopped seconds so far, and the VMs that refilled it."""

    stopped: int
    since: float = 0.0
    stopped_s: float = 0.0
    starts: int = 0
    refills: list[tuple[float, float, float, float, bool]] = field(default_factory=list)

    def change(self, t: float, delta: int) -> None:
        self.stopped_s += self.stopped * (t - self.since)
        self.since = t
        self.stopped += delta

    def stopped_s_until(self, end: float) -> float:
        return self.stopped_s + self.stopped * max(0.0, end - self.since)


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
    preemptions: int
    vm_ready_times: list[float]
    series: TimeSeries
    prices: Prices
    stopped_vm_s: float = 0.0  # seconds of stopped standby VMs (billed for their disks)
    standby_starts: int = 0  # VMs that came from the standby pool


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
        timeline = BootTimeline(boot.steps, baked=policy.baked_image)
        self.boot_s = timeline.total_s
        self.restart_s = timeline.restart_s
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
        self._run_cap = max(1, int(environment.chunk_max_s / service.mean_service_s))
        # Jobs: "queued" is a pointer into each lane's sorted arrivals plus a heap of redeliveries
        n = trace.n_jobs
        self.arrival = trace.times_s.astype(float)
        self.lane = trace.lanes.astype(np.int64)
        self.start = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.order = [np.flatnonzero(self.lane == i) for i in range(n_lanes)]
        self.lane_arrivals = [self.arrival[ids] for ids in self.order]
        self.head = [0] * n_lanes
        self._arrived_at = [math.nan] * n_lanes  # the instant of each lane's last ``_arrived`` answer
        self._arrived_count = [0] * n_lanes
        self.redo: list[list[tuple[float, int]]] = [[] for _ in range(n_lanes)]
        self.unbound = [0] * n_lanes  # committed start instants without a job yet
        self.open_runs: list[list[_Run]] = [[] for _ in range(n_lanes)]  # runs with unbound instants
        self.completed = 0
        # Fleet
        self.vms: list[_VM] = []
        self.retired: list[_VM] = []
        self.next_vm_id = 0
        self.running_slots = 0
        self.jobs_redone = 0
        self.jobs_interrupted = 0
        self.preemptions = 0
        self.vm_ready_times: list[float] = []
        self.standby = _StandbyPool(policy.standby_stopped)  # initialised before the start
        self.sample_age = any(sig.kind == "lane_oldest_age" for sig in policy.signals)
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
        horizon = self.trace.horizon_s
        handlers = {
            _READY: self._on_ready,
            _COMPLETE: self._on_complete,
            _PREEMPT: self._on_preempt,
            _DRAIN_END: self._on_drain_end,
            _REFILLED: self._on_refilled,
        }
        # Billing and the figures end at the horizon, or at the last event processed when the backlog
        # outlives it: never at the (later) event that merely told the loop to stop.
        last = 0.0
        end = self.end_limit
        while self.events:
            t, _, kind, payload = heapq.heappop(self.events)
            if t > self.end_limit:
                break
            if t >= horizon and self.completed >= n_jobs:
                end = max(last, horizon)
                break
            last = t
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
        # Asked ~10 times per job at the same instant (every lane, by _take, _next_above and
        # _schedule_wake): the last answer per lane is kept. The method, not ``np.searchsorted``: the
        # wrapper costs more than the search
        if t == self._arrived_at[lane]:
            return self._arrived_count[lane]
        count = int(self.lane_arrivals[lane].searchsorted(t, side="right"))
        self._arrived_at[lane], self._arrived_count[lane] = t, count
        return count

    def _available(self, lane: int, t: float) -> int:
        """Jobs of ``lane`` waiting at ``t`` that no run has committed to (a lower bound: a commitment
        to a later instant may still take a redelivery that becomes available after ``t``)."""
        waiting = self._arrived(lane, t) - self.head[lane] - self.unbound[lane]
        if self.redo[lane]:
            waiting += sum(1 for available_at, _ in self.redo[lane] if available_at <= t)
        return waiting

    def _next_above(self, lane: int, t: float) -> float:
        """The next moment after ``t`` a job of a lane above ``lane`` arrives or becomes redeliverable."""
        nxt = math.inf
        for above in range(lane):
            arrivals = self.lane_arrivals[above]
            arrived = self._arrived(above, t)
            if arrived < len(arrivals):
                nxt = min(nxt, float(arrivals[arrived]))
            if self.redo[above]:
                nxt = min(nxt, self.redo[above][0][0])
        return nxt

    def _take(self, t: float, vm: _VM) -> bool:
        """Start a job (or a run of them) on one free slot of ``vm``; False when no lane has work."""
        for lane in range(len(self.lane_names)):
            available = self._available(lane, t)
            if available > 0:
                fair = max(1, available // max(self.running_slots, 1))
                self._commit(t, vm, lane, min(available, self._run_cap, fair))
                return True
            if self.unbound[lane]:
                # Instants at or before ``t`` cannot be stolen: bind them first (the same jobs a later
                # bind would give them, every later commitment being at or after ``t``), which also keeps
                # ``open_runs`` to the runs with instants still ahead, the only ones ``_steal`` scans
                self._bind(lane, t)
                if self.unbound[lane] and self._steal(t, lane):
                    self._commit(t, vm, lane, 1)
                    return True
        return False

    def _commit(self, t: float, vm: _VM, lane: int, k: int) -> None:
        durations = self._draw(k)
        ends = durations.cumsum()
        finishes = t + ends
        # Each start is the previous finish (the same float), never finish minus duration: no job
        # starts before its slot is free or before it was published.
        starts = np.empty(k)
        starts[0] = t
        starts[1:] = finishes[:-1]
        if k > 1:
            keep = max(1, int(starts.searchsorted(self._next_above(lane, t), side="left")))
            starts, finishes = starts[:keep], finishes[:keep]
        run = _Run(vm, lane, starts, finishes, np.empty(len(starts), dtype=np.int64))
        self.unbound[lane] += len(starts)
        self.open_runs[lane].append(run)
        vm.runs.append(run)
        vm.free_slots -= 1
        self._push(float(finishes[-1]), _COMPLETE, (run, run.version))

    def _steal(self, t: float, lane: int) -> bool:
        """Free the latest instant after ``t`` that a run of ``lane`` committed to (its last one)."""
        victim: _Run | None = None
        latest = t
        for run in self.open_runs[lane]:
            if run.active and float(run.starts[-1]) > latest:
                victim, latest = run, float(run.starts[-1])
        if victim is None:
            return False
        self._truncate(victim, len(victim.starts) - 1)
        return True

    def _truncate(self, run: _Run, keep: int) -> None:
        """Drop the run's instants from ``keep`` on (never a bound one, never the first)."""
        keep = max(keep, run.bound, 1)
        dropped = len(run.starts) - keep
        if dropped <= 0:
            return
        self.unbound[run.lane] -= dropped
        run.starts, run.finishes, run.ids = run.starts[:keep], run.finishes[:keep], run.ids[:keep]
        run.version += 1
        self._push(float(run.finishes[-1]), _COMPLETE, (run, run.version))
        if run.bound == keep:
            self.open_runs[run.lane].remove(run)

    def _bind(self, lane: int, upto: float) -> None:
        """Give jobs to the committed instants at or before ``upto``, oldest job to earliest instant."""
        if not self.unbound[lane]:
            return
        pieces: list[tuple[_Run, int]] = []
        for run in self.open_runs[lane]:
            stop = int(run.starts.searchsorted(upto, side="right"))
            if stop > run.bound:
                pieces.append((run, stop))
        if not pieces:
            return
        if len(pieces) == 1:  # one slot: its instants are already in order
            run, stop = pieces[0]
            ids = self._next_jobs(lane, run.starts[run.bound : stop])
        else:
            instants = np.concatenate([run.starts[run.bound : stop] for run, stop in pieces])
            order = np.argsort(instants, kind="stable")
            ids = np.empty(len(instants), dtype=np.int64)
            ids[order] = self._next_jobs(lane, instants[order])
        offset = 0
        for run, stop in pieces:
            piece = ids[offset : offset + stop - run.bound]
            offset += len(piece)
            run.ids[run.bound : stop] = piece
            self.start[piece] = run.starts[run.bound : stop]
            self.finish[piece] = run.finishes[run.bound : stop]
            self.unbound[lane] -= len(piece)
            run.bound = stop
            if stop == len(run.starts):
                self.open_runs[lane].remove(run)

    def _next_jobs(self, lane: int, instants: np.ndarray) -> np.ndarray:
        """The jobs a slot pulling one at a time would start at these sorted instants."""
        redo, h, m = self.redo[lane], self.head[lane], len(instants)
        if not redo or redo[0][0] > instants[-1]:
            self.head[lane] = h + m
            return self.order[lane][h : h + m]
        out = np.empty(m, dtype=np.int64)
        for i, instant in enumerate(instants.tolist()):
            if redo and redo[0][0] <= instant:
                out[i] = heapq.heappop(redo)[1]
            else:
                out[i] = self.order[lane][h]
                h += 1
        self.head[lane] = h
        return out

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
                self._bind(lane, t)  # a redelivery a started run already took is no reason to wake
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
        # Lower lanes must not hold instants from the moment these jobs can be pulled again
        for below in range(lane + 1, len(self.lane_names)):
            for run in list(self.open_runs[below]):
                if run.active:
                    self._truncate(run, int(run.starts.searchsorted(available_at, side="left")))
        self._schedule_wake(t)

    def _on_complete(self, t: float, payload: object) -> None:
        run: _Run
        version: int
        run, version = payload  # type: ignore[misc]
        if not run.active or version != run.version:
            return
        vm = run.vm
        run.active = False
        vm.runs.remove(run)
        vm.busy_s += t - float(run.starts[0])
        vm.free_slots += 1
        self.completed += len(run.starts)
        if vm.state == _RUNNING:
            self._dispatch(t, vm)
        elif vm.state == _DRAINING and not vm.runs:
            self._retire(t, vm)

    # ------------------------------------------------------------------ VMs
    def _create_vm(self, t: float, *, ready_now: bool = False) -> _VM:
        boot_s = self.boot_s
        if self.standby.stopped > 0 and not ready_now:
            # The MIG starts a stopped VM of the pool, then creates one to take its place, which boots
            # (billed) and is stopped once initialised.
            boot_s = self.restart_s
            self.standby.starts += 1
            self.standby.change(t, -1)
            self.standby.refills.append((t, t + self.boot_s, t + self.boot_s, 0.0, self.policy.spot))
            self._push(t + self.boot_s, _REFILLED)
        ready_at = t if ready_now else t + boot_s
        vm = _VM(self.next_vm_id, t, self.policy.spot, ready_at, _BOOTING, self.service.slots)
        self.next_vm_id += 1
        self.vms.append(vm)
        if not ready_now:
            self._push(ready_at, _READY, vm)
        if self.policy.spot and self.env.preemptions_per_vm_hour > 0:
            lifetime = self._rng_preempt.exponential(3600.0 / self.env.preemptions_per_vm_hour)
            self._push(t + lifetime, _PREEMPT, vm)
        return vm

    def _on_refilled(self, t: float, _payload: object) -> None:
        self.standby.change(t, +1)

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
        """Stop pulling; give up the instants not yet started; finish what runs until ``t + drain_s``."""
        if vm.state == _BOOTING:
            self._retire(t, vm)
            return
        self.running_slots -= self.service.slots
        vm.state = _DRAINING
        vm.drain_reason = reason
        for run in vm.runs:
            # Instants after ``t`` hold no job yet: the jobs stay queued for the other slots
            self._truncate(run, int(run.starts.searchsorted(t, side="right")))
        if vm.runs:
            self._push(t + drain_s, _DRAIN_END, vm)
            self._dispatch_all(t)  # the slots of other VMs may now find work the runs gave back
        else:
            self._retire(t, vm)

    def _on_drain_end(self, t: float, payload: object) -> None:
        vm: _VM = payload  # type: ignore[assignment]
        if vm.state != _DRAINING:
            return
        for run in vm.runs:
            self._bind(run.lane, t)  # the lost jobs need their ids
            lost = run.finishes > t
            n_lost = int(lost.sum())
            if vm.drain_reason == "preemption":
                self.jobs_redone += n_lost
            else:
                self.jobs_interrupted += n_lost
            self.completed += len(run.starts) - n_lost
            vm.busy_s += t - float(run.starts[0])
            run.active = False
            if n_lost:
                self._requeue(t, run.lane, run.ids[lost])
        vm.runs = []
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
            # A slot with a run is busy now (a run is back-to-back), so busy slots = runs
            victims = sorted(live, key=lambda vm: (vm.state != _BOOTING, len(vm.runs), -vm.vm_id))
            for vm in victims[: len(live) - target]:
                self._drain(t, vm, "scale-in", self.env.scale_in_drain_s)

    # ------------------------------------------------------------------ metrics + autoscaler
    def _backlog(self, t: float) -> list[int]:
        backlog = []
        for lane in range(len(self.lane_names)):
            self._bind(lane, t)  # then every unbound instant is after t: its job still counts as queued
            backlog.append(self._arrived(lane, t) - self.head[lane] + len(self.redo[lane]))
        for vm in self.vms:
            for run in vm.runs:
                if run.bound and float(run.finishes[run.bound - 1]) > t:
                    backlog[run.lane] += 1  # leased and not yet acked
        return backlog

    def _oldest_unacked_age(self, lane: int, t: float) -> float:
        """Seconds since the oldest job of ``lane`` not yet acked was published (0 without one); ``_backlog``
        has bound the lane's instants up to ``t``."""
        oldest = math.inf
        if self.head[lane] < self._arrived(lane, t):
            oldest = float(self.lane_arrivals[lane][self.head[lane]])
        for _, job in self.redo[lane]:
            oldest = min(oldest, float(self.arrival[job]))
        for vm in self.vms:
            for run in vm.runs:
                if run.lane == lane and run.bound:
                    # a run's jobs were bound first come first served: its oldest unfinished one is first
                    i = int(run.finishes.searchsorted(t, side="right"))
                    if i < run.bound:
                        oldest = min(oldest, float(self.arrival[run.ids[i]]))
        return max(0.0, t - oldest) if oldest < math.inf else 0.0

    def _on_sample(self, t: float) -> None:
        backlog = self._backlog(t)
        values = {f"backlog:{name}": float(b) for name, b in zip(self.lane_names, backlog, strict=True)}
        values["work_seconds"] = float(sum(backlog)) * self.service.mean_service_s
        if self.sample_age:
            for index, name in enumerate(self.lane_names):
                values[f"age:{name}"] = self._oldest_unacked_age(index, t)
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
        for lane in range(len(self.lane_names)):
            self._bind(lane, end)
        records = []
        for vm in self.retired + self.vms:
            ended = vm.ended if vm.ended is not None else end
            busy = vm.busy_s
            if vm.ended is None:
                busy += sum(min(end, float(r.finishes[-1])) - float(r.starts[0]) for r in vm.runs if r.active)
            records.append((vm.created, min(vm.ready_at, ended), ended, busy, vm.spot))
        pool = self.standby
        records += [(c, min(r, end), min(e, end), b, spot) for c, r, e, b, spot in pool.refills if c <= end]
        return RawResult(
            policy=self.policy,
            trace=self.trace,
            arrival=self.arrival,
            lane=self.lane,
            start=np.where(self.start <= end, self.start, np.nan),
            finish=np.where(self.finish <= end, self.finish, np.nan),
            end_s=end,
            vm_records=records,
            slots=self.service.slots,
            jobs_redone=self.jobs_redone,
            jobs_interrupted_scale_in=self.jobs_interrupted,
            preemptions=self.preemptions,
            vm_ready_times=self.vm_ready_times,
            series=self.series,
            prices=self.prices,
            stopped_vm_s=pool.stopped_s_until(end),
            standby_starts=pool.starts,
        )
