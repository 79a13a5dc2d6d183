"""The benchmark's phases: raw Triton, e2e/naive/latency phases through real workers, preprocess scaling
and the decode ceiling, interactive latency idle vs under a batch backlog."""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from google.cloud import storage  # type: ignore[attr-defined]  # storage has no py.typed

from worker.dev import drawings, harness
from worker.dev.devstack.admin_http import AdminClient
from worker.dev.harness.host import CpuProbe, child_pids
from worker.models.drawing_analyzer import model_spec, preprocessing
from worker.runtime.model_packages import handlers, loader
from worker.shared import contracts, stats

#: Notifications every burst waits for before it gives up (s).
BURST_TIMEOUT_S = 600
#: Jobs each phase sends before it measures (pool, channels, Triton batches warm).
WARM_UP_JOBS = 8
#: Interactive phase: batch jobs finished after the lane resumes before a loaded sample (two batches),
#: and the pause after the worker let go of its last batch job (its acks and notifications flushed).
BUSY_AFTER_ACKS = 32
SETTLE_S = 0.05


def raw_triton(grpc_url: str, *, batch: int, seconds: float, concurrency: int) -> dict[str, float]:
    """Images/s Triton serves at ``batch`` with ``concurrency`` requests in flight (tensors prebuilt)."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415 (heavy; only this phase needs it)

    tensor = preprocessing.preprocess_bytes(drawings.render_drawing(1, size=(600, 424))[0])
    data = np.repeat(tensor[np.newaxis, ...], batch, axis=0).astype(np.float32)
    counts = [0] * concurrency
    stop = threading.Event()

    def loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(grpc_url)
        inputs = [
            grpcclient.InferInput(model_spec.INPUT.name, list(data.shape), model_spec.INPUT.triton_dtype)
        ]
        inputs[0].set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput(spec.name) for spec in model_spec.OUTPUTS]
        client.infer(model_spec.MODEL_NAME, inputs, outputs=outputs)  # warm
        while not stop.is_set():
            client.infer(model_spec.MODEL_NAME, inputs, outputs=outputs, client_timeout=60)
            counts[index] += batch
        client.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(min(2.0, seconds / 4))  # everyone warmed up
    start_counts, start = sum(counts), time.monotonic()
    time.sleep(seconds)
    images, elapsed = sum(counts) - start_counts, time.monotonic() - start
    stop.set()
    for thread in threads:
        thread.join(timeout=70)
    return {"infer_per_s": images / elapsed, "batch": batch, "concurrency": concurrency}


class Fleet:
    """Workers on a private topology, a collector, inputs: one e2e or naive measurement at a time."""

    def __init__(self, stack: harness.PrivateStack, args: argparse.Namespace, workdir: Path) -> None:
        self.stack = stack
        self.workdir = workdir
        self.env = stack.env
        self.client = storage.Client(project=self.env.project)
        width, height = (int(v) for v in args.size.split("x"))
        self.uris = []
        self.input_bytes = []
        for i in range(args.variants):
            data, _ = drawings.render_drawing(
                100 + i, size=(width, height), fmt="jpeg" if i % 3 == 2 else "png"
            )
            self.input_bytes.append(data)
            self.uris.append(
                harness.upload(self.client, self.env.input_bucket, f"bench/in-{i}", data, "image/png")
            )
        self.publisher = harness.new_publisher()
        self.counter = 0

    def run_phase(
        self,
        name: str,
        *,
        jobs: int,
        workers: int,
        extra_env: dict[str, str],
        rate: float | None = None,
        latency_jobs: int = 0,
        latency_rate: float | None = None,
        profile: bool = False,
    ) -> dict[str, Any]:
        """Start ``workers`` on a topology of the phase's own, measure ``jobs``, stop; the phase's figures.

        With ``latency_jobs``, a second burst paced at ``latency_rate`` measures publish -> notification.
        """
        run_id = name + harness.new_run_id()
        topology = harness.RunTopology.named(run_id)
        topology.create(self.env)
        run_env = harness.stack_for_run(self.env, topology)
        prof_path = self.workdir / f"{name}-profile.txt"
        slots = self._slots(name, workers, run_env, extra_env, prof_path if profile else None)
        collector = harness.NotificationCollector(run_env, run_id=run_id).start()
        topic = run_env.topic_path(topology.jobs_topic)
        try:
            for slot in slots:
                slot.start()
            for slot in slots:
                harness.wait_started(slot)
            self._burst(topic, run_id, WARM_UP_JOBS, collector)  # warm-up: pool, channels, Triton batches
            result = self._throughput(topic, run_id, jobs, collector, slots, rate=rate)
            if latency_jobs:
                published = self._burst(topic, run_id, latency_jobs, collector, rate=latency_rate)
                result["latency_ms"] = self._latencies(published, collector)
                result["latency_rate"] = latency_rate
        finally:
            for slot in slots:
                slot.stop(timeout_s=30)
            collector.close()
            topology.delete(self.env)
        result["stats"] = [s for slot in slots for s in slot.stats]
        if profile and prof_path.exists():
            result["profile"] = prof_path.read_text(encoding="utf-8")
            result["profile_data"] = json.loads(Path(f"{prof_path}.json").read_text(encoding="utf-8"))
        return result

    def interactive_phase(self, *, backlog: int, pairs: int, extra_env: dict[str, str]) -> dict[str, Any]:
        """Interactive publish -> notification idle and with ``backlog`` batch jobs queued, in alternation.

        The method of tests/runtime/test_worker_integration.py: the batch lane is paused at the emulator
        (the worker finishes what it holds and idles: an idle sample), then resumed until the worker
        finished ``BUSY_AFTER_ACKS`` more batch jobs (a loaded sample), the backlog topped up before each
        pair; idle and loaded samples share the machine's drift. The collector receives interactive
        notifications only (a filtered subscription), as an interactive client does.
        """
        run_id = "ia" + harness.new_run_id()
        topology = harness.RunTopology.named(run_id)
        topology.create(self.env)
        run_env = harness.stack_for_run(self.env, topology)
        slots = self._slots("ia", 1, run_env, extra_env, None)
        collector = harness.NotificationCollector(
            run_env, run_id=run_id, filter_expression=f'attributes.priority = "{contracts.INTERACTIVE}"'
        ).start()
        lane = _BatchLane(self, run_env, topology, run_id)
        try:
            slots[0].start()
            harness.wait_started(slots[0])
            self._interactive(run_env, topology, run_id, collector)  # warm-up
            lane.pause()
            idle, loaded = [], []
            for _ in range(pairs):
                lane.top_up(backlog)
                lane.wait_idle()
                time.sleep(SETTLE_S)
                idle.append(self._interactive(run_env, topology, run_id, collector))
                lane.resume_until_busy(BUSY_AFTER_ACKS)
                loaded.append(self._interactive(run_env, topology, run_id, collector))
                lane.pause()
        finally:
            slots[0].stop(timeout_s=30)
            collector.close()
            topology.delete(self.env)
        return {"idle_ms": stats.percentiles(idle), "loaded_ms": stats.percentiles(loaded), "pairs": pairs}

    def _interactive(
        self,
        run_env: harness.StackEnv,
        topology: harness.RunTopology,
        run_id: str,
        collector: harness.NotificationCollector,
    ) -> float:
        """One interactive job: publish -> its notification received, ms."""
        self.counter += 1
        key = f"i{self.counter:06d}"
        message = harness.job_message(
            key,
            job_id=f"{run_id}-{key}",
            input_uri=self.uris[self.counter % len(self.uris)],
            run_id=run_id,
            priority=contracts.INTERACTIVE,
        )
        published = harness.publish_all(self.publisher, run_env.topic_path(topology.jobs_topic), [message])
        missing = collector.wait_for([key], timeout_s=60)
        if missing:
            raise RuntimeError(f"interactive job {key} unanswered after 60 s")
        note = collector.snapshot()[key][0]
        return (note.received_monotonic - published[0].published_monotonic) * 1000

    def _slots(
        self,
        name: str,
        workers: int,
        run_env: harness.StackEnv,
        extra_env: dict[str, str],
        profile_path: Path | None,
    ) -> list[harness.ManagedProcess]:
        env = {"FLEET_WATCH_METADATA": "false", "FLEET_LOG_LEVEL": "INFO", **extra_env}
        slots = [
            harness.worker_slot(f"{name}{i}", run_env, self.workdir, extra_env=env) for i in range(workers)
        ]
        for slot in slots:
            slot.restart = False
            if profile_path is not None:
                slot.command = [
                    sys.executable,
                    "-m",
                    "worker.dev.harness",
                    "profile",
                    "--cprofile",
                    "--out",
                    str(profile_path),
                    "worker",
                ]
        return slots

    def _throughput(
        self,
        topic: str,
        run_id: str,
        jobs: int,
        collector: harness.NotificationCollector,
        slots: list[harness.ManagedProcess],
        *,
        rate: float | None,
    ) -> dict[str, Any]:
        """Jobs/s from the first publish to the last answer, and every stack process's CPU meanwhile."""
        probe = CpuProbe(self._groups(slots))
        probe.start()
        t0 = time.monotonic()
        published = self._burst(topic, run_id, jobs, collector, rate=rate)
        notes = collector.snapshot()
        elapsed = max(n.received_monotonic for p in published for n in notes[p.message.key]) - t0
        cpu = probe.stop()
        failed = sum(1 for p in published if notes[p.message.key][0].status != "succeeded")
        return {
            "jobs": jobs,
            "seconds": elapsed,
            "jobs_per_s": jobs / elapsed,
            "cpu_s": cpu,
            "failed": failed,
        }

    @staticmethod
    def _latencies(
        published: list[harness.Published], collector: harness.NotificationCollector
    ) -> dict[str, float]:
        notes = collector.snapshot()
        latencies = [
            (notes[p.message.key][0].received_monotonic - p.published_monotonic) * 1000 for p in published
        ]
        return stats.percentiles(latencies)

    def _groups(self, slots: list[harness.ManagedProcess]) -> dict[str, list[int]]:
        mains = [slot.process.pid for slot in slots if slot.process is not None]
        # FLEET_WORKER_PROCESSES > 1: the slot's process is a supervisor whose children are the worker
        # processes (each with its pool); a worker's own children (pool, resource tracker) have none.
        mains = [child for pid in mains for child in _worker_processes(pid)]
        pools = [child for pid in mains for child in child_pids(pid)]
        triton = self.stack.triton.process.pid if self.stack.triton and self.stack.triton.process else None
        return {
            "worker_main": mains,
            "worker_preprocess_pool": pools,
            "tritonserver": ([triton, *child_pids(triton)] if triton else []),
            "pubsub_emulator": [self.stack.processes["pubsub"].pid],
            "gcs_emulator": [self.stack.processes["gcs"].pid],
            "bench_client": [os.getpid()],
        }

    def _burst(
        self,
        topic: str,
        run_id: str,
        jobs: int,
        collector: harness.NotificationCollector,
        *,
        rate: float | None = None,
    ) -> list[harness.Published]:
        messages = []
        for _ in range(jobs):
            self.counter += 1
            key = f"b{self.counter:06d}"
            uri = self.uris[self.counter % len(self.uris)]
            messages.append(harness.job_message(key, job_id=f"{run_id}-{key}", input_uri=uri, run_id=run_id))
        published = harness.publish_all(self.publisher, topic, messages, rate_per_s=rate)
        missing = collector.wait_for([m.key for m in messages], timeout_s=BURST_TIMEOUT_S)
        if missing:
            raise RuntimeError(f"{len(missing)} jobs unanswered after {BURST_TIMEOUT_S} s")
        return published


class _BatchLane:
    """The interactive phase's batch backlog: queued jobs topped up, the lane paused and resumed."""

    def __init__(
        self, fleet: Fleet, run_env: harness.StackEnv, topology: harness.RunTopology, run_id: str
    ) -> None:
        self._fleet = fleet
        self._admin_url = fleet.env["FLEET_PUBSUB_ADMIN_URL"]
        self._admin = AdminClient(self._admin_url)
        self._name = topology.batch_subscription
        self._path = run_env.subscription_path(topology.batch_subscription)
        self._topic = run_env.topic_path(topology.jobs_topic)
        self._run_id = run_id
        self.published = 0

    def stats(self) -> dict[str, Any]:
        return harness.delivery_stats(self._admin_url, [self._name]).get(self._name, {})

    def pause(self) -> None:
        self._admin.pause_delivery(self._path)

    def top_up(self, backlog: int) -> None:
        """Publish batch jobs until ``backlog`` are queued (published, not acked)."""
        count = backlog - (self.published - self.stats().get("acked", 0))
        fleet = self._fleet
        messages = []
        for i in range(count):
            key = f"q{self.published + i:06d}"
            uri = fleet.uris[(self.published + i) % len(fleet.uris)]
            messages.append(
                harness.job_message(key, job_id=f"{self._run_id}-{key}", input_uri=uri, run_id=self._run_id)
            )
        harness.publish_all(fleet.publisher, self._topic, messages)
        self.published += max(0, count)

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Until the worker holds no batch job (the lane is paused)."""
        _poll(lambda: self.stats().get("outstanding", 1) == 0, "the worker still holds batch jobs", timeout_s)

    def resume_until_busy(self, acks: int, timeout_s: float = 60.0) -> None:
        """Resume the lane and wait until the worker finished ``acks`` more batch jobs."""
        target = self.stats().get("acked", 0) + acks
        self._admin.pause_delivery(self._path, paused=False)
        _poll(
            lambda: self.stats().get("acked", 0) >= target,
            "the worker is not busy with the backlog",
            timeout_s,
        )


def _poll(condition: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(what)
        time.sleep(0.01)


def _worker_processes(pid: int) -> list[int]:
    """``pid`` itself for a worker; a supervisor's children (those with children of their own) for one."""
    children = child_pids(pid)
    workers = [child for child in children if child_pids(child)]
    return workers if len(workers) > 1 else [pid]


def decode_ceiling(images: list[bytes], count: int, processes: int) -> float:
    """Jobs/s of the worker's own preprocess call (``handlers.run_preprocess`` of the bundled drawing
    package, result pickled back) on a pool of ``processes``: what decode alone allows the worker."""
    folder = str(loader.BUNDLED_MODELS_DIR / "drawing_analyzer")
    work = [images[i % len(images)] for i in range(count)]
    decode = functools.partial(_run_preprocess, folder)
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        list(pool.map(decode, work[: processes * 2]))  # warm: imports, the package's handler
        start = time.monotonic()
        list(pool.map(decode, work, chunksize=1))
        return count / (time.monotonic() - start)


def _run_preprocess(folder: str, data: bytes) -> object:
    return handlers.run_preprocess(folder, data, {})


def preprocess_scaling(images: list[bytes], count: int) -> dict[str, float]:
    """Decode/preprocess jobs/s with a pool of 1 and of 2 processes (the worker's own function)."""
    work = [images[i % len(images)] for i in range(count)]
    rates = {}
    for processes in (1, 2):
        with concurrent.futures.ProcessPoolExecutor(processes) as pool:
            list(pool.map(preprocessing.preprocess_bytes, work[: processes * 2]))  # warm the processes
            start = time.monotonic()
            list(pool.map(preprocessing.preprocess_bytes, work, chunksize=1))
            rates[processes] = count / (time.monotonic() - start)
    return {"1": rates[1], "2": rates[2], "scaling_2x": rates[2] / rates[1]}
