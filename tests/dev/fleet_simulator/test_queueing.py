"""The engine on its DEFAULT settings against queueing theory's closed forms (issue 20).

Every case runs the default ``Environment`` (runs of jobs on, ``chunk_max_s`` = 8 s), so the event savings
are what is checked. Each figure is estimated on ``len(SEEDS)`` independent runs (own trace, own service
draws) after a warm-up; the test asserts that the theoretical value lies inside the 99 % Student-t
interval of the seeds' mean, and that this interval is narrow (so that a real deviation, like the one the
issue measured, cannot hide inside it).
"""

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
)
from worker.dev.fleet_simulator.engine import FleetSimulation, RawResult

LANES = ("interactive", "batch")
INTERACTIVE, BATCH = 0, 1
START = datetime(2025, 6, 2, tzinfo=ZoneInfo("UTC"))
SEEDS = range(6)
T99 = 4.032  # Student t quantile 0.995 with len(SEEDS) - 1 = 5 degrees of freedom
WARM_UP_S = 500.0


def _poisson_trace(seed: int, rate_per_s: dict[int, float], horizon_s: float) -> traces.Trace:
    rng = np.random.default_rng([seed, 20])
    times = [traces.poisson(rng, rate, 0.0, horizon_s) for rate in rate_per_s.values()]
    lanes = [np.full(len(t), lane, np.int8) for lane, t in zip(rate_per_s, times, strict=True)]
    all_times = np.concatenate(times)
    order = np.argsort(all_times, kind="stable")
    return traces.Trace("poisson", all_times[order], np.concatenate(lanes)[order], LANES, horizon_s)


def _run(trace: traces.Trace, *, slots_total: int, service: ServiceModel, seed: int) -> RawResult:
    """``slots_total`` always-on single-slot VMs (M/x/c), every engine setting at its default."""
    policy = AutoscalerPolicy(
        "fixed", autoscaling=False, min_replicas=slots_total, max_replicas=slots_total, spot=False
    )
    return FleetSimulation(
        trace,
        policy,
        service=service,
        boot=BootTimeline(),
        prices=Prices(),
        environment=Environment(),
        redelivery_delay_s={},
        start=START,
        seed=seed,
    ).run()


def _waits(raw: RawResult, lane: int | None = None) -> np.ndarray:
    wait: np.ndarray = raw.start - raw.arrival
    assert not np.isnan(wait).any(), "every job starts"
    assert wait.min() >= 0.0, "no job starts before it was published"
    keep = raw.arrival > WARM_UP_S
    if lane is not None:
        keep &= raw.lane == lane
    kept: np.ndarray = wait[keep]
    return kept


def _assert_estimate(name: str, per_seed: list[float], expected: float, *, max_rel_half_width: float) -> None:
    values = np.asarray(per_seed)
    mean = float(values.mean())
    half = T99 * float(values.std(ddof=1)) / math.sqrt(len(values))
    print(f"{name}: {mean:.4f} +- {half:.4f} (99 %), theory {expected:.4f}")
    assert abs(mean - expected) <= half, f"{name}: theory {expected} outside {mean} +- {half}"
    assert half <= max_rel_half_width * expected, f"{name}: interval +-{half} too wide to tell"


def erlang_c(c: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with offered load ``offered`` = lambda / mu."""
    top = offered**c / math.factorial(c) * c / (c - offered)
    return top / (sum(offered**k / math.factorial(k) for k in range(c)) + top)


def test_deterministic_interactive_job_starts_at_the_first_free_slot() -> None:
    # Given one VM with one slot, 1 s constant service, 10 batch jobs at t = 0 and 1 interactive at 0.5
    times = np.array([0.0] * 10 + [0.5])
    lanes = np.array([BATCH] * 10 + [INTERACTIVE], np.int8)
    trace = traces.Trace("priority", times, lanes, LANES, 1.0)
    raw = _run(
        trace,
        slots_total=1,
        service=ServiceModel(slots=1, mean_service_s=1.0, distribution="constant"),
        seed=0,
    )
    # Then the interactive job takes the slot when the first batch job ends, and batch continues after it
    assert raw.start[10] == 1.0
    assert raw.finish[10] == 2.0
    assert raw.start[:10].tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    # And billing ends with the last job (11 s), not at a later event
    assert raw.end_s == 11.0


def _assert_first_come_first_served_and_work_conserving(raw: RawResult, c: int) -> None:
    """One lane, no redelivery: exact properties of a queue whose slots pull one job at a time.

    - first come, first served across slots: a later job never starts before an earlier one;
    - work conserving: whenever a job waits, all ``c`` slots are busy.
    """
    order = np.argsort(raw.arrival, kind="stable")
    assert np.all(np.diff(raw.start[order]) >= 0.0)
    arrivals, starts, finishes = np.sort(raw.arrival), np.sort(raw.start), np.sort(raw.finish)
    points = np.concatenate([arrivals, starts, finishes])
    started = starts.searchsorted(points, side="right")
    waiting = arrivals.searchsorted(points, side="right") - started
    busy = started - finishes.searchsorted(points, side="right")
    assert np.all(busy[waiting > 0] == c)


# The widths: the 99 % interval of these seeds, rounded up (heavy traffic makes waits noisy; the batch
# lane of a priority queue is noisier still). Each is narrow enough to catch the deviations of issue 20.
@pytest.mark.parametrize(("c", "horizon_s", "mean_width"), [(4, 8_000.0, 0.25), (16, 2_000.0, 0.4)])
def test_mmc_matches_erlang_c(c: int, horizon_s: float, mean_width: float) -> None:
    # Given c always-on single-slot VMs, exponential service (mean 1 s), Poisson arrivals at 0.9 c per s
    lam = 0.9 * c
    p_wait = erlang_c(c, lam)
    service = ServiceModel(slots=1, mean_service_s=1.0, distribution="exponential")
    means, waited = [], []
    for seed in SEEDS:
        raw = _run(_poisson_trace(seed, {BATCH: lam}, horizon_s), slots_total=c, service=service, seed=seed)
        _assert_first_come_first_served_and_work_conserving(raw, c)
        wait = _waits(raw)
        means.append(float(wait.mean()))
        waited.append(float(np.mean(wait > 0.0)))
    # Then the mean wait and P(wait) match Erlang C
    _assert_estimate(f"M/M/{c} mean wait", means, p_wait / (c - lam), max_rel_half_width=mean_width)
    _assert_estimate(f"M/M/{c} P(wait)", waited, p_wait, max_rel_half_width=0.1)


@pytest.mark.parametrize(
    ("distribution", "width"), [("exponential", 0.2), ("constant", 0.06), ("lognormal", 0.1)]
)
def test_mg1_matches_pollaczek_khinchine(distribution: str, width: float) -> None:
    # Given one slot, mean service 1 s (the default lognormal shape, exponential or constant), load 0.7
    lam, horizon_s = 0.7, 10_000.0
    service = ServiceModel(slots=1, mean_service_s=1.0, distribution=distribution)  # type: ignore[arg-type]
    second_moment = {"exponential": 2.0, "constant": 1.0, "lognormal": math.exp(service.sigma**2)}
    means = []
    for seed in SEEDS:
        raw = _run(_poisson_trace(seed, {BATCH: lam}, horizon_s), slots_total=1, service=service, seed=seed)
        _assert_first_come_first_served_and_work_conserving(raw, 1)
        means.append(float(_waits(raw).mean()))
    # Then the mean wait is lambda E[S^2] / (2 (1 - rho))
    expected = lam * second_moment[distribution] / (2.0 * (1.0 - lam))
    _assert_estimate(f"M/G/1 {distribution} mean wait", means, expected, max_rel_half_width=width)


@pytest.mark.parametrize(("c", "horizon_s", "batch_width"), [(1, 10_000.0, 0.4), (4, 6_000.0, 0.3)])
def test_two_lanes_match_cobham_non_preemptive_priority(c: int, horizon_s: float, batch_width: float) -> None:
    # Given c single-slot VMs, exponential service (mean 1 s), interactive at 0.2 c and batch at 0.6 c per s
    lam_i, lam_b = 0.2 * c, 0.6 * c
    service = ServiceModel(slots=1, mean_service_s=1.0, distribution="exponential")
    interactive, batch = [], []
    for seed in SEEDS:
        trace = _poisson_trace(seed, {INTERACTIVE: lam_i, BATCH: lam_b}, horizon_s)
        raw = _run(trace, slots_total=c, service=service, seed=seed)
        interactive.append(float(_waits(raw, INTERACTIVE).mean()))
        batch.append(float(_waits(raw, BATCH).mean()))
    # Then (Cobham 1954, M/M/c, equal service rates): W_k = C(c, a) / (c mu) / ((1 - s_{k-1}) (1 - s_k)),
    # s_k the load of lanes 1..k
    w0 = erlang_c(c, lam_i + lam_b) / c
    sigma_i, sigma = lam_i / c, (lam_i + lam_b) / c
    _assert_estimate(f"c={c} interactive wait", interactive, w0 / (1 - sigma_i), max_rel_half_width=0.12)
    _assert_estimate(
        f"c={c} batch wait", batch, w0 / ((1 - sigma_i) * (1 - sigma)), max_rel_half_width=batch_width
    )
