"""Scale-out timing, billing and bookkeeping invariants of the simulation (queueing theory: test_queueing)."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from worker.dev.fleet_simulator import traces
from worker.dev.fleet_simulator.config import (
    BACKLOG_BY_REGION_METRIC,
    AutoscalerPolicy,
    BootTimeline,
    Environment,
    Prices,
    ServiceModel,
    Signal,
)
from worker.dev.fleet_simulator.engine import FleetSimulation, RawResult
from worker.dev.fleet_simulator.report import summarize
from worker.dev.fleet_simulator.scenario import RunInputs, run_group_per_lane, run_policy
from worker.shared.resources import load_resources

LANES = ("interactive", "batch")
START = datetime(2025, 6, 2, tzinfo=ZoneInfo("UTC"))
BATCH_SIGNALS = (
    Signal("lane_backlog", 10, "interactive", BACKLOG_BY_REGION_METRIC),
    Signal("lane_backlog", 100, "batch"),
)


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


def _fixed(vms: int) -> AutoscalerPolicy:
    return AutoscalerPolicy("fixed", autoscaling=False, min_replicas=vms, max_replicas=vms, spot=False)


def test_runs_of_jobs_save_events_and_keep_throughput_and_order_exact() -> None:
    # Given a backlog of 20,000 constant-time jobs on 2 VMs x 4 slots (default engine settings)
    trace = traces.Trace("flood", np.zeros(20_000), np.ones(20_000, np.int8), LANES, 1.0)
    simulation = FleetSimulation(
        trace,
        _fixed(2),
        service=ServiceModel(slots=4, mean_service_s=0.8, distribution="constant"),
        boot=BootTimeline().with_total(90.0),
        prices=Prices(),
        environment=Environment(preemptions_per_vm_hour=0.0),
        redelivery_delay_s={},
        start=START,
    )
    raw = simulation.run()
    # Then it takes exactly 20,000 x 0.8 / 8 seconds, and billing ends there (not at a later event)
    assert np.nanmax(raw.finish) == pytest.approx(20_000 * 0.8 / 8, rel=1e-9)
    assert raw.end_s == pytest.approx(2000.0, rel=1e-9)
    assert summarize(raw)["jobs_completed"] == 20_000
    # And the i-th job starts at the i-th instant a slot frees: first come, first served across slots
    assert raw.start.tolist() == sorted(raw.start.tolist())
    assert raw.start[8] == pytest.approx(0.8) and raw.start[-1] == pytest.approx(2000.0 - 0.8)
    # And runs of 10 jobs (8 s) need far fewer events than one per job
    print(f"{simulation.seq} events for 20,000 jobs")
    assert simulation.seq < 20_000 / 5


def test_billing_ends_at_the_horizon_when_the_work_is_done_before() -> None:
    # Given one always-on VM, a horizon at 1,000.5 s and a single job at t = 10 s
    trace = traces.Trace("one", np.array([10.0]), np.ones(1, np.int8), LANES, 1000.5)
    service = ServiceModel(slots=1, mean_service_s=1.0, distribution="constant")
    raw = _simulate(trace, _fixed(1), service=service)
    # Then the VM is billed for 1,000.5 s: the horizon, not the next sample or evaluation after it
    assert raw.end_s == 1000.5
    assert raw.vm_records[0][2] == 1000.5
    assert summarize(raw)["cost_usd"] == round(1000.5 / 3600 * Prices().on_demand_per_h, 2)


def test_waits_are_never_negative() -> None:
    # Lognormal service on 3 VMs x 4 slots under a backlog: starts are cumulative sums of draws
    rng = np.random.default_rng(11)
    times = np.sort(rng.uniform(0, 600, 20_000))
    trace = traces.Trace("busy", times, rng.integers(0, 2, len(times)).astype(np.int8), LANES, 600.0)
    raw = _simulate(trace, _fixed(3), service=ServiceModel())
    wait = raw.start - raw.arrival
    assert not np.isnan(wait).any()
    assert wait.min() >= 0.0
    assert np.all(raw.finish > raw.start)


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
    assert np.all(raw.start >= raw.arrival)


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


def test_runs_of_jobs_change_nothing_but_the_event_count() -> None:
    # Given constant service times (so both settings draw the same numbers): two lanes in bursts, an
    # autoscaled spot group with frequent preemptions, and ~40 s jobs that a 30 s drain loses
    rng = np.random.default_rng(4)
    trace = traces.bursts(rng, LANES, horizon_s=43_200.0)
    policy = AutoscalerPolicy("bursts", signals=BATCH_SIGNALS, max_replicas=10, scale_in_max_replicas=2)
    service = ServiceModel(slots=4, mean_service_s=40.123456789, distribution="constant")
    results = []
    for chunk_max_s in (400.0, 1e-9):  # runs of up to 10 jobs / one job per event
        env = Environment(preemptions_per_vm_hour=2.0, chunk_max_s=chunk_max_s)
        simulation = FleetSimulation(
            trace,
            policy,
            service=service,
            boot=BootTimeline().with_total(90.0),
            prices=Prices(),
            environment=env,
            redelivery_delay_s={"interactive": 10.0, "batch": 10.0},
            start=START,
            seed=2,
        )
        raw = simulation.run()
        results.append((simulation.seq, raw, summarize(raw)))
    (runs_events, runs_raw, runs), (single_events, single_raw, single) = results
    # Then the same figures and, per lane, the same start and finish instants; only the event count differs.
    # (Which of the jobs that start at one instant on several slots gets which slot may differ: VMs that
    # boot together start jobs at equal times here, and a preemption then loses another one of them.)
    print(f"events: {runs_events} with runs, {single_events} one job per event; {runs}")
    assert runs["jobs_redone"] > 0 and runs["preemptions"] > 0 and runs["jobs_completed"] == trace.n_jobs
    ttr = [f"p{p}_time_to_result_s" for p in (50, 95, 99)]
    assert {k: v for k, v in runs.items() if k not in ttr} == {
        k: v for k, v in single.items() if k not in ttr
    }
    for key in ttr:
        assert runs[key] == pytest.approx(single[key], abs=0.05)  # which tied job is which: see above
    for lane in range(len(LANES)):
        mine = runs_raw.lane == lane
        # (to float rounding: a run adds its cumulative sum to its first start, a slot adds one by one)
        np.testing.assert_allclose(np.sort(runs_raw.start[mine]), np.sort(single_raw.start[mine]), atol=1e-6)
        np.testing.assert_allclose(
            np.sort(runs_raw.finish[mine]), np.sort(single_raw.finish[mine]), atol=1e-6
        )
    assert runs_events < single_events


def test_the_age_signal_is_the_oldest_unacked_jobs_wait_and_scales_one_vm_per_assignment() -> None:
    # Given 50,000 batch jobs at t = 100.5 s, a group on the batch lane's oldest age (one VM per 120 s of
    # age), metrics without delay, 1-minute samples
    trace = traces.Trace("burst", np.full(50_000, 100.5), np.ones(50_000, np.int8), LANES, 200.0)
    env = Environment(preemptions_per_vm_hour=0.0, metric_delay_s=(0.0, 0.0))
    age = Signal("lane_oldest_age", 120.0, "batch")
    policy = AutoscalerPolicy("age", signals=(age,), max_replicas=10, scale_in_max_replicas=2)
    raw = _simulate(trace, policy, service=ServiceModel(slots=1, mean_service_s=1.0), environment=env)
    # Then the samples at 120 s, 180 s, ... see ages 19.5, 79.5, 139.5, ...: 1, 1, 2, 2, 3 VMs asked, so
    # VMs arrive one step per 120 s of age (a count signal would ask for all 10 at the first sample)
    t = np.array(raw.series.t)
    targets = dict(zip(t.tolist(), raw.series.target, strict=True))
    assert targets[180.0] == 1  # the target evaluated after the 120 s sample (age 19.5 s)
    assert targets[240.0] == 1  # age 79.5 s
    assert targets[300.0] == 2  # age 139.5 s
    assert targets[420.0] == 3  # age 259.5 s
    assert summarize(raw)["jobs_completed"] == 50_000


def test_a_standby_vm_starts_in_the_restart_time_and_the_pool_bills_its_disk_and_its_refill() -> None:
    # Given one job on an idle group with a pool of one stopped VM; cold boot 175 s, restart 97 s
    trace = traces.Trace("one", np.array([1000.5]), np.zeros(1, np.int8), LANES, 7200.0)
    env = Environment(preemptions_per_vm_hour=0.0, metric_delay_s=(0.0, 0.0))
    base = AutoscalerPolicy("cold", signals=BATCH_SIGNALS, max_replicas=10)
    service = ServiceModel(slots=1, mean_service_s=1.0, distribution="constant")

    def run(policy: AutoscalerPolicy) -> RawResult:
        return FleetSimulation(
            trace,
            policy,
            service=service,
            boot=BootTimeline().with_total(175.0, restart_s=97.0),
            prices=Prices(),
            environment=env,
            redelivery_delay_s={},
            start=START,
        ).run()

    cold = run(base)
    warm = run(AutoscalerPolicy("standby", signals=BATCH_SIGNALS, max_replicas=10, standby_stopped=1))
    # Then the standby VM serves 175 - 97 = 78 s sooner
    cold_ttr = float(cold.finish[0] - cold.arrival[0])
    warm_ttr = float(warm.finish[0] - warm.arrival[0])
    assert cold_ttr - warm_ttr == pytest.approx(78.0)
    assert warm.standby_starts == 1 and cold.standby_starts == 0
    # And the pool holds one stopped VM the whole time except while its replacement boots (175 s)
    assert warm.stopped_vm_s == pytest.approx(warm.end_s - 175.0)
    assert cold.stopped_vm_s == 0.0
    # And the bill adds the refill VM's boot and the stopped disk-hours
    cold_s, warm_s = summarize(cold), summarize(warm)
    refill = max(175.0, Prices().billing_minimum_s) * Prices().spot_per_h / 3600
    disks = warm.stopped_vm_s * Prices().stopped_vm_per_h / 3600
    served_less = 78.0 * Prices().spot_per_h / 3600  # the served VM is created the same, ready sooner
    assert warm_s["cost_usd"] == pytest.approx(cold_s["cost_usd"] + refill + disks, abs=0.011 + served_less)


def test_one_group_per_lane_runs_each_lane_on_its_own_group_and_adds_the_bills() -> None:
    resources = load_resources()
    lanes = tuple(lane.name for lane in resources.lanes)
    trace = traces.Trace(
        "two", np.array([1000.5, 5000.5]), np.array([0, 1], np.int8), lanes, 8000.0, "one job per lane"
    )
    inputs = RunInputs(
        ServiceModel(slots=1, mean_service_s=1.0, distribution="constant"),
        BootTimeline().with_total(175.0),
        Prices(),
        Environment(preemptions_per_vm_hour=0.0, metric_delay_s=(0.0, 0.0)),
        resources,
        START,
    )
    policy = AutoscalerPolicy("per-lane", signals=BATCH_SIGNALS, max_replicas=10)
    merged = run_group_per_lane(trace, policy, inputs)
    shared = summarize(run_policy(trace, policy, inputs))
    assert merged["jobs_completed"] == 2
    # each lane's job waits for its own group's cold boot, as on the shared group (the group is at zero)
    for lane in lanes:
        assert merged["p50_time_to_result_s"][lane] == shared["p50_time_to_result_s"][lane]
    assert merged["cost_usd"] == pytest.approx(shared["cost_usd"], abs=0.011)
