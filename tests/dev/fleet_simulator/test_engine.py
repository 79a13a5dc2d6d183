"""The simulation against closed forms (M/M/c, step-load scale-out) and its bookkeeping invariants."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from worker.dev.fleet_simulator import traces
from worker.dev.fleet_simulator.config import (
    AutoscalerPolicy,
    BootTimeline,
    Environment,
    Prices,
    ServiceModel,
    Signal,
)
from worker.dev.fleet_simulator.engine import FleetSimulation, RawResult
from worker.dev.fleet_simulator.report import summarize

LANES = ("interactive", "batch")
START = datetime(2025, 6, 2, tzinfo=ZoneInfo("UTC"))
BATCH_SIGNALS = (Signal("lane_backlog", 10, "interactive"), Signal("lane_backlog", 100, "batch"))


def _simulate(
    trace: traces.Trace,
    policy: AutoscalerPolicy,
    *,
    service: ServiceModel,
    boot_s: float = 90.0,
    environment: Environment | None = None,
    seed: int = 0,
    extra_s: float = 86400.0,
) -> RawResult:
    return FleetSimulation(
        trace,
        policy,
        service=service,
        boot=BootTimeline().with_total(boot_s),
        prices=Prices(),
        environment=environment or Environment(preemptions_per_vm_hour=0.0),
        redelivery_delay_s={"interactive": 10.0, "batch": 10.0},
        start=START,
        seed=seed,
        extra_s=extra_s,
    ).run()


def erlang_c(c: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with offered load ``offered`` = lambda/mu."""
    top = offered**c / math.factorial(c) * c / (c - offered)
    return top / (sum(offered**k / math.factorial(k) for k in range(c)) + top)


def test_mmc_steady_state_matches_erlang_c() -> None:
    # Given 4 always-on single-slot VMs, exponential service (mean 1 s), Poisson arrivals at 3/s
    c, lam, mean_s = 4, 3.0, 1.0
    rng = np.random.default_rng(7)
    horizon = 60_000.0
    times = traces.poisson(rng, lam, 0, horizon)
    trace = traces.Trace("mmc", times, np.ones(len(times), np.int8), LANES, horizon)
    policy = AutoscalerPolicy("mmc", autoscaling=False, min_replicas=c, max_replicas=c, spot=False)
    raw = _simulate(
        trace,
        policy,
        service=ServiceModel(slots=1, mean_service_s=mean_s, distribution="exponential"),
        environment=Environment(preemptions_per_vm_hour=0.0, chunk_max_s=0.1),  # one job per event
    )
    # When the warm-up is discarded
    keep = raw.arrival > 2000
    wait = (raw.start - raw.arrival)[keep]
    assert not np.isnan(wait).any()
    # Then P(wait) and the mean wait match Erlang C within a few percent
    p_wait = erlang_c(c, lam * mean_s)
    mean_wait = p_wait / (c / mean_s - lam)
    assert np.mean(wait > 1e-9) == pytest.approx(p_wait, rel=0.05)
    assert np.mean(wait) == pytest.approx(mean_wait, rel=0.08)
    assert np.mean(raw.finish - raw.start) == pytest.approx(mean_s, rel=0.02)


def test_chunked_service_keeps_throughput_exact() -> None:
    # A backlog of 20,000 constant-time jobs on 2 VMs x 4 slots takes 20,000 x 0.8 / 8 seconds
    trace = traces.Trace("flood", np.zeros(20_000), np.ones(20_000, np.int8), LANES, 1.0)
    policy = AutoscalerPolicy("fixed", autoscaling=False, min_replicas=2, max_replicas=2, spot=False)
    raw = _simulate(trace, policy, service=ServiceModel(slots=4, mean_service_s=0.8, distribution="constant"))
    assert np.nanmax(raw.finish) == pytest.approx(20_000 * 0.8 / 8, rel=1e-6)
    assert summarize(raw)["jobs_completed"] == 20_000


def _first_ready(raw: RawResult) -> float:
    return min(raw.vm_ready_times)


@pytest.mark.parametrize(("delay_s", "boot_s"), [(120.0, 90.0), (0.0, 90.0), (120.0, 545.0)])
def test_step_load_scale_out_time_is_sample_wait_plus_metric_delay_plus_boot(
    delay_s: float, boot_s: float
) -> None:
    # Given an empty group and a step to 2 jobs/s at t = 1000.5 s
    step_at, period, eval_s = 1000.5, 60.0, 15.0
    trace = traces.step(LANES, at_s=step_at, rate_per_s=2.0, until_s=4000.0)
    env = Environment(
        preemptions_per_vm_hour=0.0,
        metric_period_s=period,
        metric_delay_s=(delay_s, delay_s),
        eval_interval_s=eval_s,
    )
    policy = AutoscalerPolicy("step", signals=BATCH_SIGNALS, max_replicas=10, scale_in_max_replicas=2)
    raw = _simulate(
        trace, policy, service=ServiceModel(slots=4, mean_service_s=0.8), boot_s=boot_s, environment=env
    )
    # Then the first VM serves after: wait for the next sample + metric delay (+ the next evaluation) + boot
    seen = math.ceil(step_at / period) * period + delay_s
    decided = math.ceil(seen / eval_s) * eval_s
    assert _first_ready(raw) == pytest.approx(decided + boot_s)
    # And the first job's time-to-result is that scale-out time (it waits for the VM)
    assert raw.start[0] == pytest.approx(decided + boot_s)


def test_burst_brings_the_whole_group_at_once() -> None:
    trace = traces.Trace("burst", np.full(5000, 100.0), np.ones(5000, np.int8), LANES, 200.0)
    env = Environment(preemptions_per_vm_hour=0.0, metric_delay_s=(120.0, 120.0))
    policy = AutoscalerPolicy("burst", signals=BATCH_SIGNALS, max_replicas=10, scale_in_max_replicas=2)
    raw = _simulate(trace, policy, service=ServiceModel(), environment=env)
    assert sorted(raw.vm_ready_times)[:10] == [120.0 + 120.0 + 90.0] * 10
    summary = summarize(raw)
    assert summary["max_vms"] == 10 and summary["jobs_completed"] == 5000


def test_group_returns_to_zero_through_stabilization_and_scale_in_control() -> None:
    # Given a 1,000-job burst (20 s of work for 10 VMs) and scale-in of at most 2 VMs per 600 s
    trace = traces.Trace("burst", np.full(1000, 100.0), np.ones(1000, np.int8), LANES, 6 * 3600.0)
    env = Environment(preemptions_per_vm_hour=0.0, metric_delay_s=(60.0, 60.0))
    policy = AutoscalerPolicy("zero", signals=BATCH_SIGNALS, max_replicas=10, scale_in_max_replicas=2)
    raw = _simulate(trace, policy, service=ServiceModel(), environment=env)
    # Then the group is back at zero and the idle tail costs (10 + 8 + 6 + 4 + 2) x 600 s = 5 VM-hours
    assert raw.series.vms[-1] == 0
    summary = summarize(raw)
    tail_h = (10 + 8 + 6 + 4 + 2) * 600 / 3600
    assert tail_h < summary["vm_hours"] < tail_h + 10 * (90 + 60 + 120 + 30) / 3600
    assert summary["idle_vm_hours"] == pytest.approx(summary["vm_hours"] - 1000 * 0.8 / 4 / 3600, abs=0.01)


def test_preempted_long_jobs_are_redone_and_all_complete() -> None:
    # Jobs of 300 s cannot finish in the 30 s drain: a preempted VM loses them and they are redone
    rng = np.random.default_rng(3)
    trace = traces.Trace("long", np.sort(rng.uniform(0, 20_000, 400)), np.ones(400, np.int8), LANES, 20_000)
    env = Environment(preemptions_per_vm_hour=1.0)
    policy = AutoscalerPolicy("fixed-spot", autoscaling=False, min_replicas=4, max_replicas=4, spot=True)
    raw = _simulate(
        trace,
        policy,
        service=ServiceModel(slots=2, mean_service_s=300.0, distribution="constant"),
        environment=env,
    )
    summary = summarize(raw)
    assert summary["preemptions"] > 5
    assert summary["jobs_redone"] > 0
    assert summary["jobs_completed"] == 400
    assert np.all(raw.finish - raw.start == pytest.approx(300.0))


def test_scale_in_interrupts_are_counted_and_redone() -> None:
    # A schedule-free group sized by backlog shrinks while 600 s jobs still run: the drain loses them
    times = np.concatenate([np.full(400, 0.0), np.full(5, 4000.0)])
    trace = traces.Trace("shrink", times, np.ones(len(times), np.int8), LANES, 4000.0)
    env = Environment(preemptions_per_vm_hour=0.0, metric_delay_s=(0.0, 0.0))
    policy = AutoscalerPolicy("shrink", signals=(Signal("lane_backlog", 10, "batch"),), max_replicas=10)
    raw = _simulate(
        trace,
        policy,
        service=ServiceModel(slots=2, mean_service_s=600.0, distribution="constant"),
        environment=env,
    )
    summary = summarize(raw)
    assert summary["jobs_interrupted_scale_in"] > 0
    assert summary["jobs_completed"] == len(times)


def test_same_seed_same_figures() -> None:
    rng = np.random.default_rng(1)
    trace = traces.night_batch(rng, LANES, batch_jobs=3000, horizon_s=2 * 86400)
    policy = AutoscalerPolicy("det", signals=BATCH_SIGNALS, max_replicas=5, scale_in_max_replicas=2)
    env = Environment(preemptions_per_vm_hour=0.2)
    first = summarize(_simulate(trace, policy, service=ServiceModel(), environment=env, seed=5))
    again = summarize(_simulate(trace, policy, service=ServiceModel(), environment=env, seed=5))
    assert first == again
