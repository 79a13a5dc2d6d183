"""make demo: the whole product on this machine, from nothing to a summary, then everything torn down.

Brings up a private local stack with ``worker.dev.devstack`` (Pub/Sub and GCS emulators, tritonserver on CPU
serving the bundled model packages, the fleet's resources from fleet.json), creates a run's own copy of
the topics and lane subscriptions as Terraform would, starts 2 workers (`fleet worker`), renders and
uploads 200 engineering drawings, submits one job per drawing (some interactive, most batch; jobs spread
over every bundled model's analyses, some asking for two models at once), shows progress, waits for every
notification, prints a summary with a line per model, and exits 0 only if every job succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import storage  # type: ignore[attr-defined]  # storage has no py.typed

from worker.dev import drawings, harness
from worker.dev.devstack import stack as devstack
from worker.runtime.model_packages.catalog import Catalog
from worker.runtime.model_packages.loader import BUNDLED_MODELS_DIR, load_packages
from worker.shared import exit_codes, stats

WORKERS = 2
DRAWING_SIZE_PX = (840, 594)  # A-series aspect at reduced size: the demo measures the pipeline, not PNG
WORKER_START_TIMEOUT_S = 120.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (every option has a default: ``make demo`` passes none)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--interactive-every", type=int, default=10, help="every Nth job is interactive")
    parser.add_argument("--timeout-s", type=float, default=150.0)
    return parser.parse_args(argv)


@dataclass
class Demo:
    """One demo run: its work directory, the run's stack environment, workers and collector."""

    workdir: Path
    started: float = field(default_factory=time.monotonic)
    run_id: str = field(default_factory=harness.new_run_id)
    env: harness.StackEnv | None = None
    run_env: harness.StackEnv | None = None
    jobs_topic: str = ""
    workers: list[harness.ManagedProcess] = field(default_factory=list)
    collector: harness.NotificationCollector | None = None

    @property
    def stack_dir(self) -> Path:
        # A private stack: a developer's own `scripts/devstack up` is untouched.
        return self.workdir / "stack"

    def start_stack(self) -> harness.StackEnv:
        """The local stack and the run's own topology; returns the run's environment."""
        running = devstack.up(work_dir=self.stack_dir)
        os.environ.update(running.env)
        self.env = harness.StackEnv(dict(running.env))
        topology = harness.RunTopology.named(self.run_id)
        topology.create(self.env)
        self.jobs_topic = self.env.topic_path(topology.jobs_topic)
        self.run_env = harness.stack_for_run(self.env, topology)
        return self.run_env

    def start_workers(self, run_env: harness.StackEnv) -> None:
        """``WORKERS`` x ``fleet worker``; returns once each logged that it started (model ready)."""
        for index in range(WORKERS):
            name = f"demo-worker-{index}"
            slot = harness.worker_slot(
                name, run_env, self.workdir, args=("--instance-name", name, "--no-watch-metadata")
            )
            slot.restart = False
            slot.start()
            self.workers.append(slot)
        for slot in self.workers:
            harness.wait_started(slot, timeout_s=WORKER_START_TIMEOUT_S)

    def stop_workers(self) -> None:
        """SIGTERM every worker at once (they drain in parallel), then wait; each writes its stats."""
        for slot in self.workers:
            slot.signal(signal.SIGTERM)
        for slot in self.workers:
            slot.stop(timeout_s=40)

    def close(self) -> None:
        """Stop everything this run started; keep the work directory only with ``FLEET_DEMO_KEEP=1``."""
        if self.collector is not None:
            self.collector.close()
        self.stop_workers()
        devstack.down(work_dir=self.stack_dir)
        if os.environ.get("FLEET_DEMO_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)


def render_all(count: int) -> list[bytes]:
    """``count`` labelled drawings (two threads: PIL releases the GIL while encoding)."""
    labels = drawings.dataset_labels(count, seed=7)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(
            pool.map(
                lambda i: drawings.render_drawing(i + 7000, labels[i], size=DRAWING_SIZE_PX)[0], range(count)
            )
        )


def upload_all(client: storage.Client, bucket: str, run_id: str, images: list[bytes]) -> list[str]:
    """One input object per drawing; their gs:// URIs."""
    return [
        harness.upload(client, bucket, f"demo/{run_id}/drawing-{index:04d}.png", data, "image/png")
        for index, data in enumerate(images)
    ]


def analysis_mix(catalog: Catalog) -> list[list[str] | None]:
    """The analyses the demo's jobs cycle through: the default (None), each other model's analyses alone,
    and all of them in one job (one result from several models)."""
    others = [
        [a.name for a in package.declaration.analyses]
        for package in catalog.packages
        if not {"classify", "embed"} & {a.name for a in package.declaration.analyses}
    ]
    if not others:
        return [None]
    return [None, *others, ["classify", "embed", *[a for names in others for a in names]]]


def job_messages(
    run_id: str, uris: list[str], *, interactive_every: int, catalog: Catalog
) -> list[harness.Message]:
    """One job per input; every ``interactive_every``-th on the interactive lane."""
    mix = analysis_mix(catalog)
    return [
        harness.job_message(
            f"job-{index:04d}",
            job_id=f"demo-{run_id}-{index:04d}",
            input_uri=uri,
            run_id=run_id,
            priority="interactive" if index % interactive_every == 0 else "batch",
            analyses=mix[index % len(mix)],
        )
        for index, uri in enumerate(uris)
    ]


def wait_answered(demo: Demo, keys: set[str], *, timeout_s: float) -> None:
    """Show progress until every key has a notification, a worker exits, or ``timeout_s`` passes."""
    assert demo.collector is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = len(keys & set(demo.collector.snapshot()))
        print(f"\r[demo] notifications {done}/{len(keys)}", end="", flush=True)
        if done == len(keys):
            break
        if not all(slot.running for slot in demo.workers):
            print("\n[demo] a worker exited early", flush=True)
            break
        time.sleep(0.5)
    print(flush=True)


def run(args: argparse.Namespace, demo: Demo) -> int:
    """Stack, inputs, workers, jobs, answers, summary; 0 only if every job succeeded."""
    print(f"[demo] starting the local stack (emulators + tritonserver) in {demo.workdir} ...", flush=True)
    run_env = demo.start_stack()
    print(
        f"[demo] stack up in {time.monotonic() - demo.started:.1f} s; rendering {args.jobs} drawings ...",
        flush=True,
    )
    images = render_all(args.jobs)
    client = storage.Client(project=run_env.project)
    uris = upload_all(client, run_env.input_bucket, demo.run_id, images)
    demo.start_workers(run_env)
    demo.collector = harness.NotificationCollector(run_env, run_id=demo.run_id).start()
    catalog = load_packages(BUNDLED_MODELS_DIR)  # what the stack serves: the bundled packages
    messages = job_messages(demo.run_id, uris, interactive_every=args.interactive_every, catalog=catalog)
    print(
        f"[demo] {WORKERS} workers started; submitting {len(messages)} jobs "
        f"({sum(m.attributes['priority'] == 'interactive' for m in messages)} interactive) ...",
        flush=True,
    )
    submit_at = time.monotonic()
    published = harness.publish_all(harness.new_publisher(), demo.jobs_topic, messages)
    sent_at = {p.message.key: p.published_monotonic for p in published}
    wait_answered(demo, set(sent_at), timeout_s=args.timeout_s)
    elapsed = time.monotonic() - submit_at
    seen = demo.collector.snapshot()
    demo.stop_workers()  # SIGTERM: drain, then each writes its CPU/RSS stats file
    outcome = Outcome(sent_at, seen, elapsed)
    return summarise(outcome, demo, client, run_env.results_bucket, catalog)


@dataclass
class Outcome:
    """What the demo observed: when each job was sent, its notifications, submit -> last answer (s)."""

    sent_at: dict[str, float]
    seen: dict[str, list[harness.Notification]]
    elapsed_s: float

    def first_notes(self) -> dict[str, harness.Notification]:
        """Each answered job's first notification."""
        return {key: self.seen[key][0] for key in self.sent_at if self.seen.get(key)}

    def statuses(self) -> dict[str, int]:
        """Jobs per outcome (``missing`` for a job without a notification)."""
        counts: dict[str, int] = {}
        for key in self.sent_at:
            notes = self.seen.get(key) or []
            status = (notes[0].status or "?") if notes else "missing"
            counts[status] = counts.get(status, 0) + 1
        return counts

    def latencies_ms(self) -> list[float]:
        """Publish -> first notification of every answered job (ms)."""
        return [
            (note.received_monotonic - self.sent_at[key]) * 1000.0 for key, note in self.first_notes().items()
        ]


def summarise(
    outcome: Outcome, demo: Demo, client: storage.Client, results_bucket: str, catalog: Catalog
) -> int:
    """Print the summary: outcomes, throughput, latency, three results, the workers' stats."""
    statuses = outcome.statuses()
    succeeded = statuses.get("succeeded", 0)
    print("[demo] summary")
    print(f"  jobs            {len(outcome.sent_at)}")
    print(f"  outcomes        {json.dumps(statuses, sort_keys=True)}")
    rate = succeeded / outcome.elapsed_s
    print(
        f"  throughput      {rate:.1f} jobs/s ({outcome.elapsed_s:.1f} s from first publish to last answer)"
    )
    latencies = outcome.latencies_ms()
    if latencies:
        print(
            f"  latency (ms)    p50 {stats.percentile(latencies, 50):.0f}"
            f"   p95 {stats.percentile(latencies, 95):.0f}   (publish -> notification)"
        )
    first = outcome.first_notes()
    results = read_results(client, results_bucket, first)
    for line in per_model_lines(results, catalog):
        print(line)
    for key in sorted(first)[:3]:
        print_result(results.get(key), key, first[key])
    for slot in demo.workers:
        print(f"  {slot.name} stats: {json.dumps(slot.stats[-1] if slot.stats else None)[:300]}")
    print(f"[demo] total {time.monotonic() - demo.started:.1f} s")
    ok = succeeded == len(outcome.sent_at)
    print("[demo] OK: every job succeeded" if ok else "[demo] FAILED: not every job succeeded")
    return exit_codes.OK if ok else exit_codes.FAILED


def read_results(
    client: storage.Client, results_bucket: str, notes: dict[str, harness.Notification]
) -> dict[str, dict[str, Any]]:
    """The result object of every answered job (8 GETs at a time); a job whose read failed is left out."""
    bucket = client.bucket(results_bucket)

    def read(key: str) -> tuple[str, dict[str, Any] | None]:
        name = str(notes[key].data.get("result_uri", "")).split("/", 3)[-1]
        try:
            return key, json.loads(bucket.blob(name).download_as_bytes())
        except Exception:  # the summary must not hide the outcome
            return key, None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return {key: doc for key, doc in pool.map(read, sorted(notes)) if doc is not None}


def per_model_lines(results: dict[str, dict[str, Any]], catalog: Catalog) -> list[str]:
    """A line per model: jobs it answered, what it said most often, median inference ms."""
    owner = {a.name: p.name for p in catalog.packages for a in p.declaration.analyses}
    jobs: Counter[str] = Counter()
    inference_ms: dict[str, list[float]] = {}
    said: dict[str, Counter[str]] = {name: Counter() for name in catalog.by_name}
    for document in results.values():
        for model, timing in (document.get("timeline", {}).get("models") or {}).items():
            jobs[model] += 1
            inference_ms.setdefault(model, []).append(float(timing.get("inference_ms", 0.0)))
        for analysis, value in (document.get("outputs") or {}).items():
            if not isinstance(value, dict) or analysis not in owner:
                continue
            if "label" in value:
                said[owner[analysis]][str(value["label"])] += 1
            said[owner[analysis]].update(str(name) for name in value.get("present", []))
    lines = []
    for model in sorted(jobs):
        p50 = stats.percentile(inference_ms[model], 50)
        often = ", ".join(f"{k} {n}" for k, n in said.get(model, Counter()).most_common(3)) or "-"
        lines.append(
            f"  model {model:<18} jobs {jobs[model]:>4}   inference p50 {p50:.1f} ms   most often: {often}"
        )
    return lines


def print_result(result: dict[str, Any] | None, key: str, note: harness.Notification) -> None:
    """One line about a job's result object: label, confidence, models, worker, inference time."""
    if result is None:
        print(f"  {key}: cannot read {note.data.get('result_uri', '')}")
        return
    outputs = result.get("outputs") or {}
    classify = outputs.get("classify") or {}
    confidence = classify.get("confidence", classify.get("scores", {}).get(classify.get("label"), 0.0))
    extra = "".join(
        f" {name}={value.get('present')}"
        for name, value in outputs.items()
        if isinstance(value, dict) and "present" in value
    )
    label = f" label={classify.get('label')} ({confidence:.2f})" if classify else ""
    print(
        f"  {result['job_id']}: {result['status']}{label}{extra} model={result['model']['name']} "
        f"worker={result['worker']['instance']} inference_ms={result['timeline']['inference_ms']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``make demo`` / ``scripts/demo``: the demo, everything torn down afterwards."""
    args = parse_args(argv)
    demo = Demo(Path(tempfile.mkdtemp(prefix="fleet-demo-")))
    try:
        return run(args, demo)
    finally:
        demo.close()
