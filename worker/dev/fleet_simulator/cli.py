"""``scripts/simulate``: run the policies over a trace, print the table, write the plot, end with JSON.

The last line of stdout is a JSON array with one object per policy run (see ``report.summarize``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from worker.dev.capacity import DEPLOYED_WORKER_PROCESSES, NEW_VM_READY_S, projection_for
from worker.dev.fleet_simulator import traces
from worker.dev.fleet_simulator.config import (
    AutoscalerPolicy,
    BootTimeline,
    Environment,
    Prices,
    ServiceModel,
)
from worker.dev.fleet_simulator.cron import ScalingSchedule
from worker.dev.fleet_simulator.report import boot_table, plot, policy_table, summarize
from worker.dev.fleet_simulator.scenario import (
    AGREED_DEFAULTS,
    GROUP_PER_LANE,
    POLICY_NAMES,
    WHAT_IF_NAMES,
    RunInputs,
    build_policies,
    default_start,
    first_results_after_idle,
    run_group_per_lane,
    run_policy,
)
from worker.dev.fleet_simulator.terraform import (
    DEFAULT_VARIABLES_PATH,
    DeployedSettings,
    load_deployed_settings,
)
from worker.shared.resources import load_resources

DEFAULT_PLOT = Path("docs/capacity-week.png")
TRACE_NAMES = ("night-batch", "steady", "business-hours", "bursts")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simulate", description=__doc__.splitlines()[0])
    t = p.add_argument_group("trace")
    t.add_argument("--trace", choices=TRACE_NAMES, default="night-batch")
    t.add_argument("--trace-csv", type=Path, help="CSV with columns timestamp,priority (overrides --trace)")
    t.add_argument("--days", type=float, default=7.0, help="simulated period (default a week)")
    t.add_argument("--batch-jobs", type=int, default=100_000, help="night-batch: jobs per weeknight")
    t.add_argument("--interactive-rate", type=float, default=0.3, help="night-batch: jobs/s weekdays 09-18")
    t.add_argument("--seed", type=int, default=1)
    s = p.add_argument_group("service and boot")
    s.add_argument("--bench-json", type=Path, help="scripts/bench output (JSON or a log ending in it)")
    s.add_argument(
        "--machine-type",
        help="service rate and prices from the capacity projection of this type (default: variables.tf's)",
    )
    s.add_argument(
        "--worker-processes",
        type=int,
        default=DEPLOYED_WORKER_PROCESSES,
        help="worker processes per VM assumed by the capacity projection (default: what is deployed)",
    )
    s.add_argument("--boot-s", type=float, help="replace the itemised boot timeline by one total")
    s.add_argument("--unbaked", action="store_true", help="boot every policy from the stock image")
    a = p.add_argument_group("autoscaler (defaults: terraform/variables.tf)")
    a.add_argument("--variables-tf", type=Path, default=DEFAULT_VARIABLES_PATH)
    a.add_argument("--max-replicas", type=int)
    a.add_argument("--cooldown-s", type=float)
    a.add_argument("--backlog-per-vm", action="append", default=[], metavar="LANE=N")
    a.add_argument("--scale-in-max", type=int)
    a.add_argument("--scale-in-window-s", type=float)
    a.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="NAME,MIN,CRON,DURATION_S,TZ",
        help="replace the schedules (repeatable); --no-schedules removes them",
    )
    a.add_argument("--no-schedules", action="store_true")
    a.add_argument("--always-on-vms", type=int, help="size of the always-on fleet (default max replicas)")
    a.add_argument(
        "--work-seconds-target-s",
        type=float,
        default=NEW_VM_READY_S,
        help="spot-work-seconds: one VM per the work it does in this many seconds (default: a new VM's "
        "ready time, the rule of the deployed batch assignment)",
    )
    a.add_argument(
        "--standby-stopped",
        type=int,
        default=1,
        help="spot-schedules-stopped-standby: stopped VMs in the standby pool (target_stopped_size)",
    )
    a.add_argument(
        "--policies",
        default=",".join(POLICY_NAMES + WHAT_IF_NAMES),
        help="comma-separated subset (default: the five policies and the what-ifs)",
    )
    a.add_argument(
        "--no-idle-first-result",
        action="store_true",
        help="skip the idle -> first result runs (cold boot vs the standby pool)",
    )
    e = p.add_argument_group("environment and prices")
    e.add_argument("--preemptions-per-vm-hour", type=float, default=Environment().preemptions_per_vm_hour)
    e.add_argument(
        "--metric-delay-s", type=float, nargs=2, default=Environment().metric_delay_s, metavar=("MIN", "MAX")
    )
    e.add_argument("--eval-interval-s", type=float, default=Environment().eval_interval_s)
    e.add_argument("--spot-price", type=float, help="USD per VM-hour (default: the machine type's)")
    e.add_argument("--on-demand-price", type=float, help="USD per VM-hour (default: the machine type's)")
    o = p.add_argument_group("output")
    o.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    o.add_argument("--no-plot", action="store_true")
    o.add_argument(
        "--plot-hours",
        type=float,
        nargs=2,
        default=(0.0, 48.0),
        metavar=("FROM", "TO"),
        help="time window of the plot in hours since the start (default Monday-Tuesday)",
    )
    return p


def _settings(args: argparse.Namespace) -> tuple[DeployedSettings, str]:
    note = ""
    try:
        settings = load_deployed_settings(args.variables_tf)
    except FileNotFoundError:
        settings, note = AGREED_DEFAULTS, f"note: {args.variables_tf} not found; using the agreed defaults"
    backlog = dict(settings.backlog_per_vm)
    for item in args.backlog_per_vm:
        lane, _, value = item.partition("=")
        backlog[lane] = float(value)
    schedules = settings.scaling_schedules
    if args.schedule:
        schedules = tuple(_parse_schedule(text) for text in args.schedule)
    if args.no_schedules:
        schedules = ()
    return replace(
        settings,
        max_replicas=args.max_replicas if args.max_replicas is not None else settings.max_replicas,
        cooldown_period_s=args.cooldown_s if args.cooldown_s is not None else settings.cooldown_period_s,
        backlog_per_vm=backlog,
        scale_in_max_replicas=(
            args.scale_in_max if args.scale_in_max is not None else settings.scale_in_max_replicas
        ),
        scale_in_time_window_s=(
            args.scale_in_window_s if args.scale_in_window_s is not None else settings.scale_in_time_window_s
        ),
        scaling_schedules=schedules,
    ), note


def _parse_schedule(text: str) -> ScalingSchedule:
    name, minimum, cron, duration, zone = (part.strip() for part in text.split(",", 4))
    return ScalingSchedule(name, int(minimum), cron, float(duration), zone)


def _trace(args: argparse.Namespace, lanes: tuple[str, ...]) -> traces.Trace:
    horizon = args.days * traces.DAY_S
    if args.trace_csv:
        return traces.from_csv(args.trace_csv, lanes)
    rng = np.random.default_rng(args.seed)
    if args.trace == "steady":
        return traces.steady(rng, lanes, horizon_s=horizon)
    if args.trace == "business-hours":
        return traces.business_hours(rng, lanes, horizon_s=horizon)
    if args.trace == "bursts":
        return traces.bursts(rng, lanes, horizon_s=horizon)
    return traces.night_batch(
        rng, lanes, batch_jobs=args.batch_jobs, day_rate_per_s=args.interactive_rate, horizon_s=horizon
    )


def _assumptions(settings: DeployedSettings, inputs: RunInputs, trace: traces.Trace, note: str) -> list[str]:
    s, b, pr, env = inputs.service, inputs.boot, inputs.prices, inputs.environment
    lines = [
        f"trace: {trace.name}: {trace.n_jobs:,} jobs over {trace.horizon_s / 86400:.1f} days "
        f"({trace.description})"
    ]
    lines.append(
        f"service: {s.slots} slots/VM, mean {s.mean_service_s:.3f} s/job ({s.distribution}, "
        f"sigma {s.sigma:.2f}) = {s.throughput_per_vm:.2f} jobs/s per VM; source: {s.source}"
    )
    baked = BootTimeline(b.steps, baked=True).total_s
    unbaked = BootTimeline(b.steps, baked=False).total_s
    lines.append(
        f"boot: baked image {baked:.0f} s, stock image {unbaked:.0f} s, standby restart "
        f"{BootTimeline(b.steps).restart_s:.0f} s ("
        + "; ".join(f"{st.name} {st.seconds_unbaked:.0f}/{st.seconds_baked:.0f} s" for st in b.steps)
        + ")"
    )
    lines.append(
        f"prices: spot ${pr.spot_per_h}/h, on-demand ${pr.on_demand_per_h}/h, {pr.machine}, {pr.as_of}"
    )
    lines.append(
        f"environment: metric every {env.metric_period_s:.0f} s + {env.metric_delay_s[0]:.0f}-"
        f"{env.metric_delay_s[1]:.0f} s delay; autoscaler every {env.eval_interval_s:.0f} s; "
        f"{env.preemptions_per_vm_hour:.4f} preemptions per spot VM-hour, "
        f"{env.preemption_drain_s:.0f} s preemption drain, {env.scale_in_drain_s:.0f} s scale-in drain"
    )
    sched = (
        ", ".join(
            f"{x.name}: min {x.min_required_replicas} at '{x.schedule}' for {x.duration_s:.0f} s "
            f"({x.time_zone})"
            for x in settings.scaling_schedules
        )
        or "none"
    )
    lines.append(
        f"autoscaler ({settings.source}): max {settings.max_replicas}, backlog per VM "
        f"{settings.backlog_per_vm}, init period {settings.cooldown_period_s:.0f} s, stabilization "
        f"600 s, scale-in max {settings.scale_in_max_replicas} per "
        f"{settings.scale_in_time_window_s:.0f} s, schedules: {sched}"
    )
    if note:
        lines.append(note)
    return lines


def _print_idle_first_results(policies: dict[str, AutoscalerPolicy], inputs: RunInputs) -> None:
    """Idle -> first result per boot stage, and measured: a cold boot against the standby pool."""
    print()
    print(boot_table(inputs.boot, inputs.environment))
    cold = first_results_after_idle(policies["spot-scale-to-zero"], inputs)
    standby = first_results_after_idle(
        replace(policies["spot-schedules-stopped-standby"], name="spot-scale-to-zero-stopped-standby"), inputs
    )
    for result in (cold, standby):
        print(
            f"idle -> first result, {result.policy}: mean {result.mean_s:.0f} s, p50 "
            f"{result.percentile_s(50):.0f} s, p95 {result.percentile_s(95):.0f} s "
            f"over {len(result.seconds)} jobs"
        )
    print()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resources = load_resources()
        lanes = tuple(lane.name for lane in resources.lanes)
        settings, note = _settings(args)
        capacity = projection_for(
            args.machine_type or settings.machine_type, max_worker_processes=args.worker_processes
        )
        service = (
            ServiceModel.from_bench_file(args.bench_json)
            if args.bench_json
            else ServiceModel.from_capacity(capacity)
        )
        boot = BootTimeline(baked=not args.unbaked)
        if args.boot_s is not None:
            boot = boot.with_total(args.boot_s)
        environment = Environment(
            preemptions_per_vm_hour=args.preemptions_per_vm_hour,
            metric_delay_s=(args.metric_delay_s[0], args.metric_delay_s[1]),
            eval_interval_s=args.eval_interval_s,
        )
        prices = Prices.for_machine(capacity)
        if args.spot_price is not None:
            prices = replace(prices, spot_per_h=args.spot_price)
        if args.on_demand_price is not None:
            prices = replace(prices, on_demand_per_h=args.on_demand_price)
        inputs = RunInputs(service, boot, prices, environment, resources, default_start(settings), args.seed)
        policies = build_policies(
            settings,
            resources,
            service,
            always_on_vms=args.always_on_vms,
            work_seconds_target_s=args.work_seconds_target_s,
            standby_stopped=args.standby_stopped,
        )
        wanted = [name.strip() for name in args.policies.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in policies]
        if unknown:
            raise ValueError(f"unknown policies {unknown}; choose from {list(policies)}")
        trace = _trace(args, lanes)
    except (OSError, ValueError, KeyError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    for line in _assumptions(settings, inputs, trace, note):
        print(line)
    if not args.no_idle_first_result:
        _print_idle_first_results(policies, inputs)
    raws, summaries = [], []
    for name in wanted:
        policy = policies[name]
        if args.unbaked:
            policy = replace(policy, baked_image=False)
        began = time.perf_counter()
        if name == GROUP_PER_LANE:
            summary = run_group_per_lane(trace, policy, inputs)
        else:
            raw = run_policy(trace, policy, inputs)
            summary = summarize(raw)
            raws.append(raw)
        summary["wall_s"] = round(time.perf_counter() - began, 2)
        summaries.append(summary)
        print(f"  {name}: {policy.description} [{summary['wall_s']:.1f} s]")
    print()
    print(policy_table(summaries, lanes))
    if not args.no_plot:
        window = (args.plot_hours[0], args.plot_hours[1])
        path = plot(raws, args.plot, title=f"{trace.name}: {trace.description}", window_h=window)
        print(f"\nplot: {path}")
    print(json.dumps(summaries, separators=(",", ":")))
    return 0
