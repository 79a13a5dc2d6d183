"""Figures of a run: cost per 1,000 jobs, time-to-result percentiles, VM-hours; the table and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.dev.fleet_simulator.config import SECONDS_PER_HOUR, BootTimeline, Environment
from worker.dev.fleet_simulator.engine import RawResult

PERCENTILES = (50, 95, 99)


def summarize(raw: RawResult) -> dict[str, Any]:
    """The published figures of one run (the JSON object of ``scripts/simulate``'s last line)."""
    prices = raw.prices
    vm_s = boot_s = busy_slot_s = cost = 0.0
    for created, ready, ended, busy, spot in raw.vm_records:
        life = ended - created
        vm_s += life
        boot_s += ready - created
        busy_slot_s += busy
        rate = prices.spot_per_h if spot else prices.on_demand_per_h
        cost += max(life, prices.billing_minimum_s) * rate / SECONDS_PER_HOUR
    cost += raw.stopped_vm_s * prices.stopped_vm_per_h / SECONDS_PER_HOUR
    done = ~np.isnan(raw.finish)
    completed = int(done.sum())
    ttr = raw.finish - raw.arrival
    percentiles: dict[str, dict[str, float | None]] = {f"p{p}": {} for p in PERCENTILES}
    per_lane_jobs: dict[str, int] = {}
    for index, name in enumerate(raw.trace.lane_names):
        lane_done = done & (raw.lane == index)
        per_lane_jobs[name] = int(lane_done.sum())
        values = ttr[lane_done]
        for p in PERCENTILES:
            percentiles[f"p{p}"][name] = round(float(np.percentile(values, p)), 2) if len(values) else None
    busy_vm_s = busy_slot_s / raw.slots
    return {
        "policy": raw.policy.name,
        "trace": raw.trace.name,
        "jobs": raw.trace.n_jobs,
        "jobs_completed": completed,
        "jobs_completed_by_priority": per_lane_jobs,
        "cost_usd": round(cost, 2),
        "cost_per_1k_jobs": round(cost / completed * 1000, 4) if completed else None,
        "p50_time_to_result_s": percentiles["p50"],
        "p95_time_to_result_s": percentiles["p95"],
        "p99_time_to_result_s": percentiles["p99"],
        "vm_hours": round(vm_s / SECONDS_PER_HOUR, 2),
        "idle_vm_hours": round((vm_s - busy_vm_s) / SECONDS_PER_HOUR, 2),
        "boot_vm_hours": round(boot_s / SECONDS_PER_HOUR, 2),
        "stopped_vm_hours": round(raw.stopped_vm_s / SECONDS_PER_HOUR, 2),
        "standby_starts": raw.standby_starts,
        "jobs_redone": raw.jobs_redone,
        "jobs_interrupted_scale_in": raw.jobs_interrupted_scale_in,
        "preemptions": raw.preemptions,
        "max_vms": max(raw.series.vms, default=0),
        "simulated_s": round(raw.end_s, 1),
    }


def boot_table(boot: BootTimeline, env: Environment) -> str:
    """Idle -> first result per stage: the autoscaler's lag, then each boot step, for a cold boot of the
    Packer image and for a stopped standby VM started again (Markdown)."""
    low, high = env.metric_delay_s
    lag_mean = env.metric_period_s / 2 + (low + high) / 2 + env.eval_interval_s / 2
    lag_max = env.metric_period_s + high + env.eval_interval_s
    lines = [
        "| stage | cold boot s | stopped standby s | source |",
        "|---|---|---|---|",
        f"| autoscaler lag: next Pub/Sub sample, its delay, next evaluation | {lag_mean:.0f} "
        f"(0-{lag_max:.0f}) | {lag_mean:.0f} (0-{lag_max:.0f}) | metric sampled every "
        f"{env.metric_period_s:.0f} s, visible {low:.0f}-{high:.0f} s later (Cloud Monitoring metric "
        f"list); evaluation every {env.eval_interval_s:.0f} s (assumption) |",
    ]
    for step in boot.steps:
        lines.append(f"| {step.name} | {step.seconds_baked:.0f} | {step.restart_s:.0f} | {step.source} |")
    lines.append(
        f"| **idle -> first result (mean)** | **{lag_mean + boot.total_s:.0f}** | "
        f"**{lag_mean + boot.restart_s:.0f}** | sum; plus the job's own ~0.1 s |"
    )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def policy_table(summaries: list[dict[str, Any]], lane_names: tuple[str, ...]) -> str:
    """A side-by-side Markdown table of the policies (one row per policy)."""
    headers = ["policy", "$/1k jobs", "cost $"]
    for lane in lane_names:
        headers += [f"{lane} p50 s", f"{lane} p95 s", f"{lane} p99 s"]
    headers += ["VM-h", "idle VM-h", "redone", "scale-in interrupted", "max VMs", "done"]
    rows = []
    for s in summaries:
        row = [s["policy"], _fmt(s["cost_per_1k_jobs"], 3), _fmt(s["cost_usd"], 2)]
        for lane in lane_names:
            row += [_fmt(s[f"p{p}_time_to_result_s"][lane], 1) for p in PERCENTILES]
        row += [
            _fmt(s["vm_hours"], 1),
            _fmt(s["idle_vm_hours"], 1),
            str(s["jobs_redone"]),
            str(s["jobs_interrupted_scale_in"]),
            str(s["max_vms"]),
            f"{s['jobs_completed']}/{s['jobs']}",
        ]
        rows.append(row)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def latency_series(raw: RawResult, *, bin_s: float = 1800.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """p95 time-to-result of the jobs finishing in each ``bin_s`` bin, per lane (NaN: none finished)."""
    edges = np.arange(0.0, raw.end_s + bin_s, bin_s)
    done = ~np.isnan(raw.finish)
    out: dict[str, np.ndarray] = {}
    for index, name in enumerate(raw.trace.lane_names):
        mask = done & (raw.lane == index)
        finish, ttr = raw.finish[mask], (raw.finish - raw.arrival)[mask]
        which = np.digitize(finish, edges) - 1
        values = np.full(len(edges) - 1, np.nan)
        order = np.argsort(which, kind="stable")
        which, ttr = which[order], ttr[order]
        bounds = np.searchsorted(which, np.arange(len(edges)))
        for b in range(len(edges) - 1):
            chunk = ttr[bounds[b] : bounds[b + 1]]
            if len(chunk):
                values[b] = np.percentile(chunk, 95)
        out[name] = values
    return edges[:-1] + bin_s / 2, out


def plot(
    raws: list[RawResult], path: Path | str, *, title: str, window_h: tuple[float, float] | None = None
) -> Path:
    """Backlog, VMs and p95 time-to-result over time, one line per policy; a small PNG.

    ``window_h`` limits the time axis (hours since the start), e.g. ``(0, 48)`` for Monday-Tuesday.
    """
    import matplotlib  # noqa: PLC0415 - only plotting needs matplotlib; import it late

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    hours = 1.0 / SECONDS_PER_HOUR
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True, dpi=80)
    for raw in raws:
        t = np.array(raw.series.t) * hours
        backlog = np.array(raw.series.backlog)
        total = backlog.sum(axis=1) if backlog.size else np.zeros(len(t))
        (line,) = axes[0].plot(t, total, lw=0.8, label=raw.policy.name)
        color = line.get_color()
        axes[1].step(t, raw.series.vms, where="post", lw=0.8, color=color, label=raw.policy.name)
        mid, p95 = latency_series(raw, bin_s=900.0)
        for lane, values in p95.items():
            first = lane == raw.trace.lane_names[0]
            axes[2].plot(
                mid * hours,
                values,
                "-" if first else "--",
                marker=None if first else "o",
                ms=3,
                lw=0.8,
                color=color,
                label=f"{raw.policy.name} ({lane})",
            )
    axes[0].set_ylabel("undelivered messages")
    axes[0].set_yscale("symlog", linthresh=10)
    axes[1].set_ylabel("VMs (booting+serving+draining)")
    axes[2].set_ylabel("p95 time-to-result (s)\n(solid: interactive, dashed: batch)")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("hours since Monday 00:00")
    low, high = window_h if window_h else (0.0, raws[0].end_s * hours)
    tick = 6 if high - low <= 72 else 24
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlim(low, high)
        ax.set_xticks(np.arange(low, high + 1, tick))
    axes[0].legend(fontsize=7, ncol=3, loc="upper right")
    axes[2].legend(fontsize=6, ncol=2, loc="upper left")
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
