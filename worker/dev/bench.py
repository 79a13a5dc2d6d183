"""Benchmark: how close the worker gets to what Triton alone can do, in one run on a private local stack.

Measures, in order: raw Triton infer/s at the worker's batch size (preprocessed tensors, tritonclient
gRPC, several requests in flight); e2e jobs/s publish -> notification through the real worker(s); the
same through a ``--one-at-a-time`` worker (naive); publish -> notification latency at a fixed
sub-saturation load; worker CPU ms per job (preprocess vs everything else) and peak RSS; preprocessing
jobs/s with 1 and 2 processes, and the decode ceiling (the worker's preprocess call on a pool of the
worker's process count); interactive publish -> notification idle and under a batch backlog (2,000 jobs),
samples alternating. CPU of every stack process during the e2e window is reported too
(``cpu_ms_per_job``), because on this machine Triton, the emulators, the worker and this script share the
same cores.

Prints a table, then one JSON line.  ``--smoke`` runs everything tiny (seconds, for make test);
``--quick`` is a short run on full-size drawings (a 300-job backlog).

    .venv/bin/python scripts/bench                 # full run
    .venv/bin/python scripts/bench --profile       # + a cProfile pass of the worker's main thread

The phases and the fleet they drive are ``worker.dev.bench_phases``; ``scripts/bench`` calls ``main``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.dev import bench_pages, harness
from worker.dev.bench_phases import WARM_UP_JOBS, Fleet, decode_ceiling, preprocess_scaling, raw_triton
from worker.dev.harness import cpu_profile
from worker.dev.harness.host import git_commit, machine
from worker.runtime.settings import WorkerSettings
from worker.shared import exit_codes

GOALS = {
    "e2e_over_naive": 3.0,
    "worker_cpu_other_ms": 1.5,
    "preprocess_scaling_2x": 1.7,
    "e2e_over_decode_ceiling": 0.9,
    "interactive_loaded_over_idle_p50": 1.5,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--smoke`` shrinks every phase."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=600, help="e2e jobs (default 600)")
    parser.add_argument("--naive-jobs", type=int, default=120, help="naive-mode jobs (default 120)")
    parser.add_argument(
        "--latency-jobs", type=int, default=200, help="jobs of the latency phase (default 200)"
    )
    parser.add_argument(
        "--latency-load", type=float, default=0.5, help="latency load as a fraction of e2e rate"
    )
    parser.add_argument(
        "--raw-seconds", type=float, default=10.0, help="duration of the raw Triton phase (s)"
    )
    parser.add_argument("--raw-concurrency", type=int, default=4, help="raw requests in flight (default 4)")
    parser.add_argument("--preprocess-images", type=int, default=120, help="images per scaling measurement")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for e2e (default 1)")
    parser.add_argument("--preprocess-processes", type=int, default=1, help="each worker's preprocess pool")
    parser.add_argument("--size", default="1754x1240", help="drawing size WxH in pixels (default A4 150 dpi)")
    parser.add_argument("--variants", type=int, default=12, help="distinct input drawings (default 12)")
    parser.add_argument(
        "--model-repository",
        help="Triton repository to serve (default: the CPU one generated from the packages; on a GPU VM the "
        "one `fleet models repository --variant gpu` wrote)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile a worker (all-threads sampler) during e2e"
    )
    parser.add_argument(
        "--interactive-backlog", type=int, default=2000, help="batch jobs queued in the interactive phase"
    )
    parser.add_argument(
        "--interactive-pairs", type=int, default=24, help="idle/loaded interactive samples (default 24)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests: seconds, no goals")
    parser.add_argument(
        "--quick", action="store_true", help="a short run on full-size drawings (about a minute)"
    )
    parser.add_argument("--workdir", help="keep logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.naive_jobs, args.latency_jobs = 24, 8, 12
        args.raw_seconds, args.preprocess_images, args.size, args.variants = 1.5, 8, "400x283", 4
        args.interactive_backlog, args.interactive_pairs = 40, 2
    elif args.quick:
        args.jobs, args.naive_jobs, args.latency_jobs = 200, 40, 60
        args.raw_seconds, args.preprocess_images = 4.0, 40
        args.interactive_backlog, args.interactive_pairs = 300, 8
    return args


def cpu_per_job(phase: dict[str, Any]) -> dict[str, float]:
    """CPU ms per job of each stage during the e2e window (kernel accounting, every process of the stack)."""
    names = {
        "worker_preprocess_pool": "preprocess",
        "worker_main": "main_process",
        "tritonserver": "triton",
        "pubsub_emulator": "pubsub_emulator",
        "gcs_emulator": "gcs_emulator",
        "bench_client": "bench_client",
    }
    return {names.get(k, k): round(v * 1000 / phase["jobs"], 3) for k, v in phase["cpu_s"].items()}


def worker_cpu_per_job(phase: dict[str, Any]) -> dict[str, float]:
    """From the kernel's accounting of the worker processes during the measured window."""
    jobs = phase["jobs"]
    cpu = phase["cpu_s"]
    return {
        "preprocess": round(cpu["worker_preprocess_pool"] * 1000 / jobs, 3),
        "other": round(cpu["worker_main"] * 1000 / jobs, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase on one private stack (stopped afterwards); the report as a dict."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fleet-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    repository = Path(args.model_repository).absolute() if args.model_repository else None
    stack = harness.PrivateStack(workdir / "stack", model_repository=repository)
    batch = WorkerSettings().max_batch_size
    try:
        env = stack.start(triton=True)
        phases = {
            "raw": raw_triton(
                env["TRITON_GRPC_URL"],
                batch=batch,
                seconds=args.raw_seconds,
                concurrency=args.raw_concurrency,
            ),
            **_fleet_phases(Fleet(stack, args, workdir), args),
        }
    finally:
        stack.stop()
    result = summarise(phases, args, batch=batch)
    result["workdir"] = str(workdir)
    profiled = phases.get("profile")
    if profiled and profiled.get("profile_data"):
        data = profiled["profile_data"]
        jobs = profiled["jobs"] + WARM_UP_JOBS
        text = cpu_profile.report_text(data["summary"], data["threads_s"], jobs)
        (workdir / "worker-profile.txt").write_text(text)
        result["profile_file"] = str(workdir / "worker-profile.txt")
        result["profile_ms_per_job"] = {
            "threads": {k: round(v * 1000 / jobs, 3) for k, v in data["threads_s"].items()},
            "main_thread_groups": {
                k: round(v * 1000 / jobs, 3) for k, v in data["summary"]["groups_s"].items()
            },
            "note": "cProfile on thread_time inflates Python-call-heavy code: read the shares",
        }
    return result


def _fleet_phases(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """e2e, latency at a fraction of the e2e rate, naive, the optional profile, preprocess scaling."""
    worker_env = {"FLEET_PREPROCESS_PROCESSES": str(args.preprocess_processes)}
    e2e = fleet.run_phase("e2e", jobs=args.jobs, workers=args.workers, extra_env=worker_env)
    latency_rate = max(1.0, e2e["jobs_per_s"] * args.latency_load)
    lat = fleet.run_phase(
        "lat",
        jobs=4,
        workers=args.workers,
        extra_env=worker_env,
        latency_jobs=args.latency_jobs,
        latency_rate=latency_rate,
    )
    naive = fleet.run_phase(
        "naive", jobs=args.naive_jobs, workers=1, extra_env={"FLEET_ONE_AT_A_TIME": "true"}
    )
    profile = None
    if args.profile:
        profile = fleet.run_phase("prof", jobs=args.jobs, workers=1, extra_env=worker_env, profile=True)
    interactive = fleet.interactive_phase(
        backlog=args.interactive_backlog, pairs=args.interactive_pairs, extra_env=worker_env
    )
    scaling = preprocess_scaling(fleet.input_bytes, args.preprocess_images)
    ceiling = decode_ceiling(fleet.input_bytes, args.preprocess_images, args.preprocess_processes)
    pages = bench_pages.page_cpu_ms(fleet.input_bytes, args.preprocess_images)
    return {
        "pages": pages,
        "e2e": e2e,
        "lat": lat,
        "naive": naive,
        "profile": profile,
        "scaling": scaling,
        "decode_ceiling": ceiling,
        "interactive": interactive,
    }


def summarise(phases: dict[str, Any], args: argparse.Namespace, *, batch: int) -> dict[str, Any]:
    """The report's keys (docs/performance.md lists them) from the phases' raw figures."""
    raw, e2e, lat, naive, scaling = (phases[k] for k in ("raw", "e2e", "lat", "naive", "scaling"))
    stats = e2e["stats"]
    ceiling, interactive = phases["decode_ceiling"], phases["interactive"]
    idle, loaded = interactive["idle_ms"], interactive["loaded_ms"]
    return {
        "decode_ceiling_jobs_per_s": round(ceiling, 1),
        "e2e_over_decode_ceiling": round(e2e["jobs_per_s"] / ceiling, 3),
        "cpu_ms_per_job": cpu_per_job(e2e),
        "preprocess_cpu_ms_per_page": phases["pages"],
        "interactive_idle_p50_ms": round(idle["p50"], 1),
        "interactive_idle_p95_ms": round(idle["p95"], 1),
        "interactive_loaded_p50_ms": round(loaded["p50"], 1),
        "interactive_loaded_p95_ms": round(loaded["p95"], 1),
        "interactive_loaded_over_idle_p50": round(loaded["p50"] / idle["p50"], 2),
        "interactive_loaded_over_idle_p95": round(loaded["p95"] / idle["p95"], 2),
        "raw_infer_per_s": round(raw["infer_per_s"], 1),
        "e2e_jobs_per_s": round(e2e["jobs_per_s"], 1),
        "naive_jobs_per_s": round(naive["jobs_per_s"], 1),
        "e2e_over_raw": round(e2e["jobs_per_s"] / raw["infer_per_s"], 3),
        "e2e_over_naive": round(e2e["jobs_per_s"] / naive["jobs_per_s"], 2),
        "latency_ms": {k: round(v, 1) for k, v in lat["latency_ms"].items()},
        "latency_load_jobs_per_s": round(lat["latency_rate"], 1),
        "worker_cpu_ms_per_job": worker_cpu_per_job(e2e),
        "worker_cpu_ms_per_job_lifetime": (stats[0].get("cpu_ms_per_job") if stats else None),
        "stack_cpu_ms_per_job": {k: round(v * 1000 / e2e["jobs"], 2) for k, v in e2e["cpu_s"].items()},
        "e2e_wall_ms_per_job": round(e2e["seconds"] * 1000 / e2e["jobs"], 2),
        "preprocess_jobs_per_s": {"1": round(scaling["1"], 1), "2": round(scaling["2"], 1)},
        "preprocess_scaling_2x": round(scaling["scaling_2x"], 2),
        "rss_mb": max((s.get("peak_rss_mb", 0.0) for s in stats), default=0.0),
        "preprocess_pool_rss_mb": max((s.get("children_peak_rss_mb", 0.0) for s in stats), default=0.0),
        "failed_jobs": e2e["failed"] + naive["failed"],
        "config": {
            "batch": batch,
            "raw_concurrency": args.raw_concurrency,
            "workers": args.workers,
            "preprocess_processes": args.preprocess_processes,
            "jobs": args.jobs,
            "naive_jobs": args.naive_jobs,
            "input_size": args.size,
            "smoke": args.smoke,
            "quick": args.quick,
            "interactive_backlog": args.interactive_backlog,
            "interactive_pairs": interactive["pairs"],
        },
        "commit": git_commit(),
        "machine": machine(),
    }


def print_table(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    cpu = r["worker_cpu_ms_per_job"]
    rows = [
        (f"raw Triton infer/s (batch {r['config']['batch']})", r["raw_infer_per_s"], ""),
        ("e2e jobs/s", r["e2e_jobs_per_s"], ""),
        ("naive jobs/s (one at a time)", r["naive_jobs_per_s"], ""),
        ("e2e / raw", r["e2e_over_raw"], "goal >= 0.9 on a GPU (not measured: no GPU here)"),
        ("e2e / naive", r["e2e_over_naive"], f"goal >= {GOALS['e2e_over_naive']}"),
        (
            f"latency p50/p95/p99 ms @ {r['latency_load_jobs_per_s']}/s",
            f"{lat['p50']}/{lat['p95']}/{lat['p99']}",
            "",
        ),
        ("worker CPU ms/job preprocess", cpu["preprocess"], ""),
        ("worker CPU ms/job other", cpu["other"], f"goal <= {GOALS['worker_cpu_other_ms']}"),
        (
            "preprocess jobs/s 1 / 2 procs",
            f"{r['preprocess_jobs_per_s']['1']} / {r['preprocess_jobs_per_s']['2']}",
            "",
        ),
        ("preprocess scaling 2x", r["preprocess_scaling_2x"], f"goal >= {GOALS['preprocess_scaling_2x']}"),
        ("worker peak RSS MB (pool)", f"{r['rss_mb']} ({r['preprocess_pool_rss_mb']})", ""),
        ("decode ceiling jobs/s", r["decode_ceiling_jobs_per_s"], "the preprocess pool alone"),
        ("e2e / decode ceiling", r["e2e_over_decode_ceiling"], f"goal >= {GOALS['e2e_over_decode_ceiling']}"),
        (
            f"interactive p50/p95 ms idle (backlog {r['config']['interactive_backlog']})",
            f"{r['interactive_idle_p50_ms']}/{r['interactive_idle_p95_ms']}",
            "",
        ),
        (
            "interactive p50/p95 ms loaded",
            f"{r['interactive_loaded_p50_ms']}/{r['interactive_loaded_p95_ms']}",
            "",
        ),
        (
            "interactive loaded / idle p50",
            r["interactive_loaded_over_idle_p50"],
            f"goal <= {GOALS['interactive_loaded_over_idle_p50']}",
        ),
    ]
    print(f"bench @ {r['commit']} on {r['machine']['cores']} cores ({r['machine']['cpu']})")
    for name, value, note in rows:
        print(f"  {name:<40} {value!s:>16}  {note}")
    print("  CPU ms/job during e2e: " + ", ".join(f"{k}={v}" for k, v in r["cpu_ms_per_job"].items()))
    print(
        "  preprocess CPU ms per page: "
        + ", ".join(f"{k}={v}" for k, v in r["preprocess_cpu_ms_per_page"].items())
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/bench``: run, print the table and the JSON line; non-zero when a job failed."""
    harness.exit_on_sigterm()
    result = run(parse_args(argv))
    print_table(result)
    print(json.dumps(result, sort_keys=True))
    return exit_codes.OK if result["failed_jobs"] == 0 else exit_codes.FAILED
