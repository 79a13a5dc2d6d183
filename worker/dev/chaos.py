"""Chaos soak: N jobs through W workers on a private local stack while faults are injected; then count.

Faults, on a jittered schedule (seeded): kill -9 of a worker (restarted like systemd Restart=always),
SIGTERM drains, the metadata server's ``instance/preempted`` flag flipping (a fake metadata server on
127.0.0.1), tritonserver killed and restarted, Pub/Sub stream drops, redelivery of acked messages and
lost acks (duplicates), GCS 503s and latency. A ``fleet dlq-handler`` runs throughout.

Verdict from storage and notifications: lost (a job without exactly one result object and at least one
terminal notification), overwritten (an object the GCS emulator stored more than once, from its write
log), duplicate notifications, all within ``--seconds``. Prints a table, then one JSON line.

    .venv/bin/python scripts/chaos --jobs 5000 --workers 3 --seconds 900

The faults are ``worker.dev.harness.faults``; ``scripts/chaos`` calls ``main``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.cloud import storage  # type: ignore[attr-defined]  # storage has no py.typed

from worker.dev import harness
from worker.dev.harness.faults import ChaosMonkey
from worker.dev.harness.host import git_commit
from worker.shared import environment, exit_codes

INPUT_VARIANTS = 8
DRAWING_SIDE_PX = 160


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs to submit (default 5000)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=900.0, help="bound: every job must be answered within this (s)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish rate, jobs/s (default: spread over half of --seconds)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the fault schedule")
    parser.add_argument("--kill-every-s", type=float, default=10.0, help="mean interval of kill -9 (s)")
    parser.add_argument("--no-faults", action="store_true", help="baseline run without fault injection")
    parser.add_argument("--interactive-share", type=float, default=0.1, help="fraction of interactive jobs")
    parser.add_argument("--workdir", help="keep logs here (default: a temporary directory)")
    parser.add_argument("--time-divisor", type=float, default=4.0, help="emulator time divisor of the lanes")
    return parser.parse_args(argv)


def start_workers(
    args: argparse.Namespace, run_env: harness.StackEnv, metadata: harness.FakeMetadataServer, workdir: Path
) -> tuple[harness.Supervisor, int]:
    """W supervised workers (each with its own metadata URL) and one DLQ handler, in that order."""
    worker_env = {
        "FLEET_DRAIN_BUDGET_S": "5",
        "FLEET_TRITON_OUTAGE_EXIT_S": "30",
        "FLEET_PREPROCESS_PROCESSES": "1",
        "FLEET_LOG_LEVEL": "WARNING",
    }
    slots = []
    for i in range(args.workers):
        name = f"w{i}"
        extra = dict(worker_env, FLEET_METADATA_URL=metadata.url_for(name))
        slots.append(harness.worker_slot(name, run_env, workdir / "workers", extra_env=extra))
    dlq = harness.worker_slot(
        "dlq",
        run_env,
        workdir / "workers",
        command="dlq-handler",
        extra_env={"FLEET_WATCH_METADATA": "false"},
    )
    return harness.Supervisor([*slots, dlq]).start(), len(slots)


def make_jobs(
    args: argparse.Namespace, run_id: str, uris: list[str], rng: random.Random
) -> list[harness.Message]:
    messages = []
    for i in range(args.jobs):
        priority = "interactive" if rng.random() < args.interactive_share else "batch"
        key = f"j{i:06d}"
        job_id = f"{run_id}-{key}"
        uri = uris[i % len(uris)]
        messages.append(
            harness.job_message(key, job_id=job_id, input_uri=uri, run_id=run_id, priority=priority)
        )
    return messages


@dataclass
class Soak:
    """What one soak holds while it runs; each part is stopped (in reverse order) by ``close``."""

    stack: harness.PrivateStack
    metadata: harness.FakeMetadataServer
    workers: harness.Supervisor | None = None
    collector: harness.NotificationCollector | None = None
    monkey: ChaosMonkey | None = None

    def close(self) -> None:
        """Stop injecting, collecting and working; then the fake metadata server and the stack."""
        if self.monkey is not None:
            self.monkey.stop()
        if self.collector is not None:
            self.collector.close()
        if self.workers is not None:
            self.workers.stop(timeout_s=15)
        self.metadata.close()
        self.stack.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The soak on a private stack (torn down afterwards); the verdict and the run's figures."""
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fleet-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(harness.PrivateStack(workdir / "stack"), harness.FakeMetadataServer().start())
    try:
        env = soak.stack.start(triton=True)
        run_id = "chaos" + harness.new_run_id()
        topology = harness.RunTopology.named(run_id)
        topology.create(env, time_divisor=args.time_divisor)
        run_env = harness.stack_for_run(env, topology)
        client = storage.Client(project=env.project)
        uris = upload_inputs(client, env.input_bucket, run_id)
        soak.workers, targets = start_workers(args, run_env, soak.metadata, workdir)
        soak.collector = harness.NotificationCollector(run_env, run_id=run_id).start()
        # Faults target the worker slots (the first ones), never the DLQ handler (the last slot).
        soak.monkey = ChaosMonkey(
            stack=soak.stack,
            workers=soak.workers,
            targets=targets,
            metadata=soak.metadata,
            rng=rng,
            kill_every_s=args.kill_every_s,
        )
        if not args.no_faults:
            soak.monkey.start()
        messages = make_jobs(args, run_id, uris, rng)
        timing = publish_and_wait(args, soak.collector, run_env.topic_path(topology.jobs_topic), messages)
        soak.monkey.stop()
        time.sleep(3.0)  # let late duplicates arrive before counting
        result = verify(
            env=env,
            topology=topology,
            client=client,
            collector=soak.collector,
            messages=messages,
            workers=soak.workers,
            monkey=soak.monkey,
        )
        result.update(timing)
        result.update(jobs=args.jobs, workers=args.workers, workdir=str(workdir), commit=git_commit())
        return result
    finally:
        soak.close()


def upload_inputs(client: Any, bucket: str, run_id: str) -> list[str]:
    """A few small drawings the jobs reuse round-robin (the soak measures the fleet, not decoding)."""
    return [
        harness.upload(
            client,
            bucket,
            f"chaos/{run_id}/drawing-{i}.png",
            harness.drawing_png(DRAWING_SIDE_PX, seed=i),
            "image/png",
        )
        for i in range(INPUT_VARIANTS)
    ]


def publish_and_wait(
    args: argparse.Namespace,
    collector: harness.NotificationCollector,
    topic_path: str,
    messages: list[harness.Message],
) -> dict[str, Any]:
    """Publish at the soak's rate, wait for every answer within the bound; the timing figures."""
    rate = args.rate or args.jobs / max(1.0, args.seconds * 0.4)
    publisher = harness.new_publisher()
    started = time.monotonic()  # the bound counts from the first publish, not from stack start-up
    harness.publish_all(publisher, topic_path, messages, rate_per_s=rate)
    publish_s = time.monotonic() - started
    remaining = max(1.0, args.seconds - (time.monotonic() - started))
    missing = collector.wait_for([m.key for m in messages], timeout_s=remaining)
    done_s = time.monotonic() - started
    return {
        "unanswered_in_time": len(missing),
        "publish_s": round(publish_s, 1),
        "seconds": round(done_s, 1),
        "bound_s": args.seconds,
        "within_bound": not missing,
    }


def verify(
    *,
    env: harness.StackEnv,
    topology: harness.RunTopology,
    client: storage.Client,
    collector: harness.NotificationCollector,
    messages: list[harness.Message],
    workers: harness.Supervisor,
    monkey: ChaosMonkey,
) -> dict[str, Any]:
    """Count every job from storage (objects + the emulator's write log) and the notifications."""
    run_id = topology.run_id
    notes = collector.snapshot()
    objects = harness.list_result_objects(client, env.results_bucket, prefix=f"results/{run_id}-")
    writes_all = harness.object_writes(env[harness.WRITES_URL], prefix=f"{env.results_bucket}/results/")
    writes = {k.split("/", 1)[1]: v for k, v in writes_all.items()}
    expected = {m.key: f"results/{run_id}-{m.key}.json" for m in messages}
    audit = harness.audit_jobs(expected, notes, objects, writes_by_object=writes)
    pubsub_stats = harness.delivery_stats(env.values[environment.PUBSUB_ADMIN_URL], topology.subscriptions())
    exits: Counter[str] = Counter()
    restarts = 0
    for slot in workers.slots:
        restarts += max(0, slot.starts - 1)
        for code in slot.exits:
            exits[str(code)] += 1
    return {
        "succeeded": audit.succeeded,
        "failed": audit.failed,
        "expired": audit.expired,
        "lost": audit.lost,
        "overwritten": audit.overwritten,
        "duplicate_notifications": audit.duplicate_notifications,
        "conflicting_notifications": audit.conflicting_notifications,
        "job_id_conflicts": audit.job_id_conflicts,
        "error_codes": audit.error_codes,
        "missing_objects": audit.missing_objects[:10],
        "missing_notifications": audit.missing_notifications[:10],
        "faults": dict(sorted(monkey.faults.items())),
        "fault_injection_errors": dict(monkey.errors),
        "worker_restarts": restarts,
        "worker_exit_codes": dict(exits),
        "collector_redeliveries_ignored": collector.redelivered,
        "deliveries": {
            name: {k: v for k, v in s.items() if k in ("deliveries_histogram", "max_deliveries_per_message")}
            for name, s in pubsub_stats.items()
            if name.endswith(("interactive", "batch"))
        },
    }


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("jobs", result["jobs"]),
        ("workers", result["workers"]),
        ("succeeded", result["succeeded"]),
        ("failed", f"{result['failed']} {result['error_codes'] or ''}"),
        ("expired", result["expired"]),
        ("LOST", result["lost"]),
        ("OVERWRITTEN", result["overwritten"]),
        ("JOB_ID_CONFLICT (own ids)", result["job_id_conflicts"]),
        ("duplicate notifications", result["duplicate_notifications"]),
        ("conflicting notifications", result["conflicting_notifications"]),
        ("faults injected", ", ".join(f"{k}={v}" for k, v in result["faults"].items()) or "none"),
        ("worker restarts", result["worker_restarts"]),
        ("worker exit codes", result["worker_exit_codes"]),
        ("all answered in", f"{result['seconds']} s (bound {result['bound_s']} s)"),
    ]
    width = max(len(name) for name, _ in rows)
    print("chaos soak")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/chaos``: the soak, its table and JSON line; non-zero when a job was lost, overwritten or
    answered JOB_ID_CONFLICT (the soak never reuses an id, so a conflict is a false one)."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # SIGTERM (a test timeout, Ctrl-C from make) unwinds through the finally blocks: workers, emulators
    # and Triton are stopped instead of left running on a shared machine.
    harness.exit_on_sigterm()
    result = run(parse_args(argv))
    print_table(result)
    print(json.dumps(result, sort_keys=True))
    ok = (
        result["lost"] == 0
        and result["overwritten"] == 0
        and result["job_id_conflicts"] == 0
        and result["within_bound"]
    )
    return exit_codes.OK if ok else exit_codes.FAILED
