"""The worker on the local stack: real tritonserver, the Pub/Sub and GCS emulators, the official clients.

Every worker here is a ``fleet worker`` subprocess with the stack's environment, pointed at a private copy
of the fleet's topics and lane subscriptions (``harness.RunTopology``: the filters, retry and dead-letter
policies of terraform/fleet.json), so each test counts only its own deliveries. Notifications are collected
through a subscription of the test's own on the run's results topic (``harness.NotificationCollector``).

Inputs are a few small drawings uploaded once; the tests measure the queue path, not PNG decoding.
Emulator faults (GCS 503/latency, Pub/Sub redelivery) are global to the session's stack and are always
cleared by the ``gcs_faults`` / ``pubsub_faults`` fixtures of tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.cloud import pubsub_v1

from worker.dev import harness
from worker.dev.drawings import render_drawing
from worker.runtime.settings import WorkerSettings
from worker.shared import contracts

pytestmark = pytest.mark.integration

DRAWING_SIZE = (320, 226)
DISTINCT_INPUTS = 4
WORKER_START_TIMEOUT_S = 120.0
RESULTS_PREFIX = "results/"


# --- fixtures: inputs, runs, workers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(stack: Any, storage_client: Any) -> list[str]:
    """gs:// URIs of a few small drawings, uploaded once for the module."""
    bucket = storage_client.bucket(stack.env["FLEET_INPUT_BUCKET"])
    folder = f"worker-it/{uuid.uuid4().hex[:8]}"
    uris = []
    for index in range(DISTINCT_INPUTS):
        data, _label = render_drawing(index + 300, size=DRAWING_SIZE)
        bucket.blob(f"{folder}/d{index}.png").upload_from_string(data, content_type="image/png")
        uris.append(f"gs://{bucket.name}/{folder}/d{index}.png")
    return uris


@dataclass
class Run:
    """One isolated copy of the fleet's topics/subscriptions, with a notification collector on it."""

    base: harness.StackEnv
    topology: harness.RunTopology
    env: harness.StackEnv
    collector: harness.NotificationCollector
    workdir: Path
    publisher: Any
    storage: Any
    workers: list[harness.ManagedProcess] = field(default_factory=list)
    published: dict[str, harness.Published] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.topology.run_id

    @property
    def results_bucket(self) -> Any:
        return self.storage.bucket(self.env.results_bucket)

    def job_id(self, key: str) -> str:
        return f"{self.run_id}-{key}"

    def job(self, key: str, uri: str, *, priority: str = "batch", **kwargs: Any) -> harness.Message:
        return harness.job_message(
            key, job_id=self.job_id(key), input_uri=uri, run_id=self.run_id, priority=priority, **kwargs
        )

    def publish(
        self, messages: list[harness.Message], *, topic: str | None = None
    ) -> list[harness.Published]:
        out = harness.publish_all(
            self.publisher, self.env.topic_path(topic or self.topology.jobs_topic), messages
        )
        self.published.update({p.message.key: p for p in out})
        return out

    def worker(self, name: str, *, command: str = "worker", **extra_env: str) -> harness.ManagedProcess:
        """Start a ``fleet worker`` (not supervised: it is never restarted) with the run's environment."""
        env = {"FLEET_WATCH_METADATA": "false", "FLEET_LOG_LEVEL": "INFO", **extra_env}
        slot = harness.worker_slot(
            f"{self.run_id}-{name}", self.env, self.workdir, extra_env=env, command=command
        )
        slot.restart = False
        slot.start()
        self.workers.append(slot)
        return slot

    def wait(self, keys: list[str], *, timeout_s: float = 60.0) -> dict[str, list[harness.Notification]]:
        missing = self.collector.wait_for(keys, timeout_s=timeout_s)
        assert not missing, f"no notification for {sorted(missing)[:10]} ({len(missing)} missing)"
        return self.collector.snapshot()

    def result(self, key: str) -> tuple[dict[str, Any], int]:
        """The job's result document and the object's generation."""
        blob = self.results_bucket.get_blob(f"{RESULTS_PREFIX}{self.job_id(key)}.json")
        assert blob is not None, f"no result object for {key}"
        generation = int(blob.generation)  # read first: a download resets it from response headers
        return json.loads(blob.download_as_bytes()), generation

    def result_objects(self) -> dict[str, Any]:
        return harness.list_result_objects(
            self.storage, self.env.results_bucket, f"{RESULTS_PREFIX}{self.run_id}-"
        )

    def sub_stats(self, lane: str = "batch") -> dict[str, Any]:
        name = self.topology.batch_subscription if lane == "batch" else self.topology.interactive_subscription
        stats = harness.delivery_stats(self.base["FLEET_PUBSUB_ADMIN_URL"], [name])
        assert name in stats, f"the emulator has no stats for {name}"
        return stats[name]


def _wait_for(
    condition: Callable[[], bool], message: str, *, timeout_s: float = 30.0, interval_s: float = 0.05
) -> None:
    """Poll ``condition`` every ``interval_s``; fail with ``message`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(interval_s)


def wait_started(slot: harness.ManagedProcess, *, timeout_s: float = WORKER_START_TIMEOUT_S) -> float:
    """Block until the worker logged ``worker started``; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if slot.log_path.exists() and '"worker started"' in slot.log_path.read_text(errors="replace"):
            return time.monotonic() - started
        assert slot.process is not None
        if slot.process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"{slot.name} did not start:\n{log_tail(slot)}")


def log_tail(slot: harness.ManagedProcess, chars: int = 3000) -> str:
    return slot.log_path.read_text(errors="replace")[-chars:] if slot.log_path.exists() else "(no log)"


def log_lines(slot: harness.ManagedProcess) -> list[dict[str, Any]]:
    """The worker's JSON log lines (anything else on its output is skipped)."""
    lines = []
    for raw in slot.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(raw)
            if isinstance(value, dict):
                lines.append(value)
    return lines


def wait_exit(slot: harness.ManagedProcess, timeout_s: float) -> int | None:
    assert slot.process is not None
    try:
        return slot.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture
def make_run(stack: Any, storage_client: Any, tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """``make_run(time_divisor=None, max_delivery_attempts=None, notification_filter="") -> Run``;
    everything is removed after."""
    base = harness.StackEnv(dict(stack.env))
    publisher = harness.new_publisher()
    runs: list[Run] = []

    def _make(
        *,
        time_divisor: float | None = None,
        max_delivery_attempts: int | None = None,
        notification_filter: str = "",
    ) -> Run:
        topology = harness.RunTopology.named(harness.new_run_id())
        topology.create(base, time_divisor=time_divisor, max_delivery_attempts=max_delivery_attempts)
        env = harness.stack_for_run(base, topology)
        collector = harness.NotificationCollector(
            env, run_id=topology.run_id, filter_expression=notification_filter
        ).start()
        run = Run(base, topology, env, collector, tmp_path / topology.run_id, publisher, storage_client)
        run.workdir.mkdir(parents=True, exist_ok=True)
        runs.append(run)
        return run

    yield _make
    # Stop workers and collectors concurrently: each takes a drain or a pull timeout to finish.
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        stops = [pool.submit(slot.stop, timeout_s=30) for run in runs for slot in run.workers]
        stops += [pool.submit(run.collector.close) for run in runs]
        for stop in stops:
            stop.result()
    for run in runs:
        run.topology.delete(base)
    publisher.stop()


@contextlib.contextmanager
def module_run(stack: Any, storage_client: Any, workdir: Path, **worker_env: str) -> Iterator[Run]:
    """One run of the fleet's topology with one started worker (``worker_env``: its extra environment),
    for the cases of a module to share; everything is removed after."""
    base = harness.StackEnv(dict(stack.env))
    publisher = harness.new_publisher()
    topology = harness.RunTopology.named(harness.new_run_id())
    topology.create(base)
    env = harness.stack_for_run(base, topology)
    collector = harness.NotificationCollector(env, run_id=topology.run_id).start()
    shared = Run(base, topology, env, collector, workdir, publisher, storage_client)
    try:
        wait_started(shared.worker("w", **worker_env))
        yield shared
    finally:
        for slot in shared.workers:
            slot.stop(timeout_s=30)
        collector.close()
        topology.delete(base)
        publisher.stop()


# --- a MetricService served in the test ----------------------------------------------------------------
class MetricServiceStub:
    """``google.monitoring.v3.MetricService/CreateTimeSeries`` on 127.0.0.1; keeps every request."""

    def __init__(self) -> None:
        from google.cloud.monitoring_v3 import types as monitoring_types  # noqa: PLC0415
        from google.protobuf import empty_pb2  # noqa: PLC0415

        self.requests: list[Any] = []
        self._lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(
            "google.monitoring.v3.MetricService",
            {
                "CreateTimeSeries": grpc.unary_unary_rpc_method_handler(
                    self._create_time_series,
                    request_deserializer=monitoring_types.CreateTimeSeriesRequest.deserialize,
                    response_serializer=empty_pb2.Empty.SerializeToString,
                )
            },
        )
        self._empty = empty_pb2.Empty()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _create_time_series(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.requests.append(request)
        return self._empty

    def series(self) -> list[Any]:
        with self._lock:
            return [series for request in self.requests for series in request.time_series]

    def stop(self) -> None:
        self.server.stop(grace=None)


# --- 1. happy path ------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_jobs_of_both_lanes_get_one_result_and_one_succeeded_notification(
    make_run: Callable[..., Run], inputs: list[str]
) -> None:
    # Given a worker serving a run's lanes
    run = make_run()
    worker = run.worker("w")
    wait_started(worker)
    # When jobs of both lanes are published, with client attributes to echo
    keys = [f"job{i}" for i in range(6)]
    messages = [
        run.job(
            key,
            inputs[i % len(inputs)],
            priority="interactive" if i % 2 else "batch",
            analyses=["classify"] if i == 4 else None,
            attributes={"client": "acme", "ref": f"r{i}"},
        )
        for i, key in enumerate(keys)
    ]
    run.publish(messages)
    notes = run.wait(keys)
    # Then each job has exactly one succeeded notification echoing its attributes
    result_schema = contracts.load_schema("result")
    notification_schema = contracts.load_schema("notification")
    import jsonschema  # noqa: PLC0415

    time.sleep(0.5)  # a second notification would have arrived by now
    notes = run.collector.snapshot()
    for i, key in enumerate(keys):
        assert len(notes[key]) == 1, notes[key]
        note = notes[key][0]
        jsonschema.validate(dict(note.data), notification_schema)
        assert note.status == "succeeded" and note.data["error"] is None
        assert note.data["job_id"] == run.job_id(key)
        assert note.attributes["client"] == "acme" and note.attributes["ref"] == f"r{i}"
        assert note.attributes["status"] == "succeeded"
        assert note.attributes["job_id"] == run.job_id(key)
        assert note.attributes["priority"] == ("interactive" if i % 2 else "batch")
        assert note.data["result_uri"] == f"gs://{run.env.results_bucket}/results/{run.job_id(key)}.json"
        # and exactly one result object with the contract's fields
        document, _generation = run.result(key)
        jsonschema.validate(document, result_schema)
        assert document["status"] == "succeeded" and document["error"] is None
        assert document["job_id"] == run.job_id(key)
        assert document["input_uri"] == inputs[i % len(inputs)]
        expected = {"classify"} if i == 4 else {"classify", "embed"}
        assert set(document["outputs"]) == expected
        assert document["outputs"]["classify"]["label"] in document["outputs"]["classify"]["scores"]
        if "embed" in expected:
            assert len(document["outputs"]["embed"]["embedding"]) == 128
        assert document["model"]["name"] == "drawing_analyzer" and document["model"]["version"]
        timeline = document["timeline"]
        for stamp in ("published", "leased", "started", "finished"):
            assert timeline[stamp], stamp
        assert timeline["published"] <= timeline["leased"] <= timeline["started"] <= timeline["finished"]
        assert timeline["queue_wait_ms"] >= 0 and timeline["inference_ms"] > 0
        assert document["worker"]["instance"] == worker.name
        assert document["delivery_attempt"] == 1
    assert len(run.result_objects()) == len(keys)


# --- 2. no hoarding: a second worker gets work at once --------------------------------------------------
SECOND_WORKER_BACKLOG = 500  # jobs still queued when the second worker starts, at least
SECOND_WORKER_PUBLISHED = 2000  # the first worker answers ~100-200 jobs/s while the second starts
SECOND_WORKER_WITHIN_S = 5.0


@pytest.mark.timeout(180)
def test_a_second_worker_started_during_a_backlog_is_processing_within_5_s(
    make_run: Callable[..., Run], inputs: list[str]
) -> None:
    # Given a worker busy with a backlog of more than 500 jobs
    run = make_run()
    first = run.worker("first")
    wait_started(first)
    keys = [f"b{i:04d}" for i in range(SECOND_WORKER_PUBLISHED)]
    run.publish([run.job(key, inputs[i % len(inputs)]) for i, key in enumerate(keys)])
    _wait_for(
        lambda: len(run.collector.snapshot()) >= 20,
        "the first worker is not processing the backlog",
        timeout_s=60,
    )
    # When a second worker starts while 500 or more jobs are still queued
    queued = run.sub_stats()["backlog"]
    assert queued >= SECOND_WORKER_BACKLOG, f"only {queued} jobs queued: not a backlog test"
    started_wall = time.time()
    second = run.worker("second")
    # Then it finishes a job of the backlog within 5 s of its start (the first worker holds only its slots)
    deadline = time.monotonic() + 30
    first_job: str | None = None
    while first_job is None and time.monotonic() < deadline:
        for line in log_lines(second):
            if line.get("message") == "job succeeded" and line.get("job_id"):
                first_job = str(line["job_id"])
                break
        time.sleep(0.05)
    assert first_job is not None, f"the second worker answered nothing:\n{log_tail(second)}"
    document, _ = run.result(first_job.removeprefix(f"{run.run_id}-"))
    assert document["worker"]["instance"] == second.name
    finished = _epoch(document["timeline"]["finished"])
    leased = _epoch(document["timeline"]["leased"])
    done = len(run.collector.snapshot())
    print(
        f"second worker started with {queued} jobs queued: leased {leased - started_wall:.2f} s, finished "
        f"{finished - started_wall:.2f} s after its start; {done}/{len(keys)} answered then"
    )
    assert finished - started_wall <= SECOND_WORKER_WITHIN_S
    assert done < len(keys), "the backlog was gone before the second worker answered: not a backlog test"


def _epoch(rfc3339: str) -> float:
    import datetime  # noqa: PLC0415

    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# --- 3. interactive overtakes a batch backlog -------------------------------------------------------------
BATCH_BACKLOG = 2000
LATENCY_PAIRS = 32  # idle/loaded sample pairs
BUSY_AFTER_ACKS = 32  # batch jobs finished after the lane resumes before a loaded sample (two batches)
SETTLE_S = 0.05  # after the worker let go of its last batch job: its acks and notifications flushed


def _stage_medians_ms(
    run: Run, kind: str, windows: list[tuple[float, float]], lines: list[dict[str, Any]]
) -> dict[str, float]:
    """Where the interactive jobs' time went (median ms per stage): the client's publish to the lease,
    fetch+preprocess+inference, inference alone, the worker's write+notify (result to its log line),
    and everything after the result was finished until the client had the notification."""
    rows: dict[str, list[float]] = {}
    for index, (published, answered) in enumerate(windows):
        key = f"{kind}{index}"
        timeline = run.result(key)[0]["timeline"]
        accepted, leased, started, finished = (
            _epoch(timeline[k]) for k in ("published", "leased", "started", "finished")
        )
        # the worker's last log lines may not be flushed yet: this is a diagnostic, not an assertion
        logged = next((_epoch(x["time"]) for x in lines if x.get("job_id") == run.job_id(key)), None)
        stages = {
            "total": answered - published,
            "from_pubsub_accept": answered - accepted,
            "publish_to_lease": leased - published,
            "process": finished - started,
            "inference": timeline["inference_ms"] / 1000.0,
            "write_and_notify": None if logged is None else logged - finished,
            "after_finished": answered - finished,
        }
        for name, seconds in stages.items():
            if seconds is not None:
                rows.setdefault(name, []).append(seconds * 1000.0)
    return {name: round(statistics.median(values), 1) for name, values in rows.items()}


def _answer_window(run: Run, key: str, uri: str, *, timeout_s: float = 30.0) -> tuple[float, float]:
    """Publish one interactive job; return (published, answered) in wall-clock seconds."""
    to_wall = time.time() - time.monotonic()
    published = run.publish([run.job(key, uri, priority="interactive")])[0]
    notes = run.wait([key], timeout_s=timeout_s)
    note = notes[key][0]
    assert note.status == "succeeded", note.data
    return published.published_monotonic + to_wall, note.received_monotonic + to_wall


def _batch_results_created(run: Run) -> list[float]:
    """When each batch job's result object was written (wall clock, from the object listing)."""
    prefix = f"{RESULTS_PREFIX}{run.run_id}-b"
    objects = run.result_objects()
    return [blob.time_created.timestamp() for name, blob in objects.items() if name.startswith(prefix)]


@pytest.mark.timeout(240)
def test_an_interactive_job_overtakes_a_2000_job_batch_backlog(
    stack: Any, make_run: Callable[..., Run], inputs: list[str]
) -> None:
    """With 2,000 batch jobs queued, an interactive job is answered within 2x its idle latency, and
    no more batch jobs finish while it waits than were already in the worker's hands.

    Idle and loaded samples are taken in alternation from the same worker with the same backlog queued:
    the batch lane is paused at the emulator (the worker finishes what it holds and idles), an idle
    sample is taken, the lane resumes (the worker is busy with the backlog again), a loaded sample is
    taken. On a shared machine the latency drifts over seconds; alternating puts idle and loaded samples
    under the same drift, so their ratio measures the backlog, not the neighbours. The backlog is topped
    up to 2,000 before each pair. Medians over 32 pairs: single loaded samples spread widely (what the
    worker is doing when the job lands), and the median of fewer of them moves by +-0.1 between runs.

    The probe is an interactive client as the docs describe one: it receives only interactive
    notifications (a filtered subscription), so the test process does not spend the CPU it shares with
    the stack on the backlog's notifications. Batch progress is counted at the emulator (acks) and from
    the result objects' creation times.
    """
    run = make_run(notification_filter=f'attributes.priority = "{contracts.INTERACTIVE}"')
    admin = stack.pubsub_admin
    batch_lane = run.env.subscription_path(run.topology.batch_subscription)
    worker = run.worker("w")
    wait_started(worker)
    _answer_window(run, "warm-up", inputs[0])
    # Given 2,000 batch jobs queued (the lane paused while they are published)
    admin.pause_delivery(batch_lane)
    published = 0

    def top_up() -> None:
        nonlocal published
        queued = published - run.sub_stats().get("acked", 0)
        count = BATCH_BACKLOG - queued
        run.publish([run.job(f"b{published + i:05d}", inputs[i % len(inputs)]) for i in range(count)])
        published += count

    idle: list[tuple[float, float]] = []
    loaded: list[tuple[float, float]] = []
    busy_acks: list[float] = []
    for index in range(LATENCY_PAIRS):
        # When the worker is idle (batch lane paused, nothing held): an idle sample
        top_up()
        _wait_for(
            lambda: run.sub_stats()["outstanding"] == 0, "the worker still holds batch jobs", interval_s=0.01
        )
        time.sleep(SETTLE_S)
        idle.append(_answer_window(run, f"idle{index}", inputs[index % len(inputs)]))
        # and when it is busy with the backlog again (lane resumed, batches finishing): a loaded sample
        acked = run.sub_stats().get("acked", 0)
        resumed = time.monotonic()
        admin.pause_delivery(batch_lane, paused=False)

        def busy(busy_at: int = acked + BUSY_AFTER_ACKS) -> bool:
            return bool(run.sub_stats().get("acked", 0) >= busy_at)

        _wait_for(
            busy,
            "the worker is not processing the batch backlog",
            interval_s=0.01,
        )
        busy_acks.append((run.sub_stats().get("acked", 0) - acked) / (time.monotonic() - resumed))
        loaded.append(_answer_window(run, f"busy{index}", inputs[index % len(inputs)]))
        admin.pause_delivery(batch_lane)
    batch_created = _batch_results_created(run)
    overtaken = [sum(1 for t in batch_created if start < t < end) for start, end in loaded]
    idle_s = statistics.median(end - start for start, end in idle)
    loaded_s = statistics.median(end - start for start, end in loaded)
    ratio = loaded_s / idle_s
    print(
        f"interactive latency idle median {idle_s * 1000:.1f} ms, with {BATCH_BACKLOG} batch jobs queued "
        f"and the worker busy median {loaded_s * 1000:.1f} ms: ratio {ratio:.2f} ({LATENCY_PAIRS} pairs); "
        f"batch jobs/s before each loaded sample (median) {statistics.median(busy_acks):.0f}; batch results "
        f"written while each interactive job waited: {overtaken}"
    )
    print("idle samples (ms)", sorted(round((end - start) * 1000) for start, end in idle))
    print("loaded samples (ms)", sorted(round((end - start) * 1000) for start, end in loaded))
    lines = log_lines(worker)
    print("idle stages (ms)", _stage_medians_ms(run, "idle", idle, lines))
    print("loaded stages (ms)", _stage_medians_ms(run, "busy", loaded, lines))
    # Then the loaded samples met a worker at work: batch results were written while they waited
    assert sum(1 for count in overtaken if count > 0) >= LATENCY_PAIRS // 2, overtaken
    # and each interactive job was answered before more batch work finished than the worker already
    # held (its slots plus one pulled batch); in FIFO order it would wait behind ~2,000 queued jobs
    fields = WorkerSettings.__dataclass_fields__
    bound = cast(int, fields["pipeline_slots"].default) + cast(int, fields["max_batch_size"].default)
    assert max(overtaken) <= bound, f"an interactive job waited behind queued batch work: {overtaken}"
    # and within twice its idle latency
    assert ratio <= 2.0, f"loaded/idle interactive latency {ratio:.2f} > 2"


# --- 4. SIGTERM: drain, give back, nothing lost -------------------------------------------------------------
@pytest.mark.timeout(180)
def test_a_sigtermed_workers_leased_jobs_are_finished_by_another_worker(
    make_run: Callable[..., Run], inputs: list[str], gcs_faults: Any
) -> None:
    # Given a worker whose jobs are slow (GCS answers after 1 s) and a drain budget shorter than they take
    run = make_run(time_divisor=5)
    drain_budget_s = 1.5
    first = run.worker("first", FLEET_DRAIN_BUDGET_S=str(drain_budget_s))
    wait_started(first)
    keys = [f"j{i:03d}" for i in range(120)]
    gcs_faults.set_faults(latency_ms=1000)
    run.publish([run.job(key, inputs[i % len(inputs)]) for i, key in enumerate(keys)])
    _wait_for(lambda: run.sub_stats()["outstanding"] >= 10, "the first worker leased nothing", timeout_s=60)
    time.sleep(0.5)
    # When it is SIGTERM'd while holding leases
    held = run.sub_stats()["outstanding"]
    sent = time.monotonic()
    assert first.signal(signal.SIGTERM)
    code = wait_exit(first, drain_budget_s + 10)
    exit_s = time.monotonic() - sent
    gcs_faults.clear_faults()
    # Then it exits 0 within the drain budget (plus shutdown), having given its leases back
    print(f"SIGTERM'd worker held {held} leases, exited {code} after {exit_s:.2f} s")
    assert code == 0, log_tail(first)
    assert exit_s <= drain_budget_s + 3.0
    assert run.sub_stats()["outstanding"] == 0
    # and another worker finishes every job: one result object each, nothing lost
    second = run.worker("second")
    notes = run.wait(keys, timeout_s=90)
    assert all(notes[k][0].status == "succeeded" for k in keys)
    objects = run.result_objects()
    assert sorted(objects) == sorted(f"{RESULTS_PREFIX}{run.job_id(k)}.json" for k in keys)
    by_worker: dict[str, int] = {}
    redelivered = 0
    for key in keys:
        document, _ = run.result(key)
        by_worker[document["worker"]["instance"]] = by_worker.get(document["worker"]["instance"], 0) + 1
        if document["worker"]["instance"] == second.name and document["delivery_attempt"] > 1:
            redelivered += 1
    print(f"results by worker {by_worker}; redelivered jobs finished by the second worker: {redelivered}")
    assert redelivered > 0, "no job leased by the SIGTERM'd worker was finished by the other one"


# --- 5. metadata preemption ------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_preempted_flag_on_the_metadata_server_drains_the_worker(
    make_run: Callable[..., Run], inputs: list[str]
) -> None:
    # Given a worker watching a metadata server served on 127.0.0.1, busy with jobs
    run = make_run()
    metadata = harness.FakeMetadataServer().start()
    try:
        name = f"{run.run_id}-vm"
        worker = run.worker(
            "vm",
            FLEET_WATCH_METADATA="true",
            FLEET_METADATA_URL=metadata.url_for(name),
            FLEET_DRAIN_BUDGET_S="10",
        )
        wait_started(worker)
        keys = [f"p{i:03d}" for i in range(100)]
        run.publish([run.job(key, inputs[i % len(inputs)]) for i, key in enumerate(keys)])
        _wait_for(lambda: len(run.collector.snapshot()) >= 5, "the worker answered nothing", timeout_s=60)
        # When the flag turns TRUE
        flipped = time.monotonic()
        metadata.set_preempted(name, True)
        code = wait_exit(worker, 20)
        exit_s = time.monotonic() - flipped
    finally:
        metadata.close()
    # Then it drains and exits 0 within its budget, holding no lease
    print(f"preempted worker exited {code} after {exit_s:.2f} s")
    assert code == 0, log_tail(worker)
    assert exit_s <= 10 + 3
    drains = [line for line in log_lines(worker) if line.get("message") == "drain requested"]
    assert [line.get("reason") for line in drains] == ["preempted"]
    stats = run.sub_stats()
    assert stats["outstanding"] == 0
    answered = set(run.collector.snapshot())
    assert stats["unacked"] == len(keys) - len(answered & set(keys))


# --- 6. duplicates ---------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_duplicate_deliveries_leave_exactly_one_result_object(
    make_run: Callable[..., Run], inputs: list[str], pubsub_faults: Any
) -> None:
    run = make_run()
    worker = run.worker("w")
    wait_started(worker)
    # Given a job answered once
    run.publish([run.job("dup", inputs[0])])
    run.wait(["dup"])
    first_doc, generation = run.result("dup")
    # When the same job is published again (a client retry: a new message, same job_id and body)
    run.publish([run.job("dup", inputs[0])])
    _wait_for(lambda: len(run.collector.snapshot().get("dup", [])) >= 2, "the duplicate was not answered")
    # and Pub/Sub redelivers an acked message (the emulator's at-least-once fault)
    pubsub_faults.set_faults(redeliver_acked_rate=1.0)
    run.publish([run.job("again", inputs[2])])
    _wait_for(
        lambda: len(run.collector.snapshot().get("again", [])) >= 2,
        "the redelivered message was not answered",
    )
    pubsub_faults.clear_faults()
    time.sleep(0.5)
    # Then each job has exactly one result object, never overwritten, and consistent notifications
    notes = run.collector.snapshot()
    for key in ("dup", "again"):
        assert {(n.status, n.data["result_uri"], n.error_code) for n in notes[key]} == {
            ("succeeded", f"gs://{run.env.results_bucket}/results/{run.job_id(key)}.json", None)
        }
    second_doc, second_generation = run.result("dup")
    assert (second_doc, second_generation) == (first_doc, generation)
    again_doc, _ = run.result("again")
    assert again_doc["delivery_attempt"] == 1
    assert sorted(run.result_objects()) == sorted(
        f"{RESULTS_PREFIX}{run.job_id(k)}.json" for k in ("dup", "again")
    )
    duplicates = [line for line in log_lines(worker) if line.get("duplicate")]
    assert {line["job_id"] for line in duplicates} == {run.job_id("dup"), run.job_id("again")}


# --- 7. permanent errors ---------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_permanent_error_is_answered_on_the_first_delivery_and_acked(
    make_run: Callable[..., Run], inputs: list[str], stack: Any
) -> None:
    # Given a worker on lanes whose deadlines and backoffs run 5x faster
    run = make_run(time_divisor=5)
    worker = run.worker("w")
    wait_started(worker)
    missing = f"gs://{stack.env['FLEET_INPUT_BUCKET']}/worker-it/no-such-object.png"
    # When a job names a missing input, another an unknown analysis
    published = run.publish(
        [run.job("missing", missing), run.job("unknown", inputs[0], analyses=["classify", "segment"])]
    )
    notes = run.wait(["missing", "unknown"])
    time.sleep(3.0)  # a nack would come back after 10 s / 5 of backoff; a lost ack after 60 s / 5
    # Then each gets one failure notification with its stable code, on the first delivery, and is acked
    notes = run.collector.snapshot()
    assert [(n.status, n.error_code) for n in notes["missing"]] == [("failed", "INPUT_NOT_FOUND")]
    assert [(n.status, n.error_code) for n in notes["unknown"]] == [("failed", "UNKNOWN_ANALYSIS")]
    assert notes["missing"][0].attributes["error_code"] == "INPUT_NOT_FOUND"
    for key in ("missing", "unknown"):
        document, _ = run.result(key)
        assert document["status"] == "failed" and document["outputs"] is None
        assert document["delivery_attempt"] == 1
    batch = run.sub_stats()
    assert batch["unacked"] == 0 and batch.get("nacked", 0) == 0
    per_message = stack.pubsub_admin.stats(messages=1)["subscriptions"][run.topology.batch_subscription][
        "deliveries_per_message"
    ]
    assert {p.message_id: per_message.get(p.message_id) for p in published} == {
        p.message_id: 1 for p in published
    }


# --- 8. transient errors: GCS 503s, Triton outage ---------------------------------------------------------
@pytest.mark.timeout(120)
def test_jobs_succeed_after_a_spell_of_gcs_503s(
    make_run: Callable[..., Run], inputs: list[str], gcs_faults: Any
) -> None:
    # Given a worker on lanes whose retry backoff runs 5x faster, and GCS answering most requests 503
    run = make_run(time_divisor=5)
    worker = run.worker("w")
    wait_started(worker)
    before = gcs_faults.stats().get("injected_503", 0)
    gcs_faults.set_faults(error_rate=0.8)
    keys = [f"g{i}" for i in range(8)]
    run.publish([run.job(key, inputs[i % len(inputs)]) for i, key in enumerate(keys)])
    # When the 503s last a few seconds
    time.sleep(3.0)
    gcs_faults.clear_faults()
    injected = gcs_faults.stats().get("injected_503", 0) - before
    # Then every job still succeeds, once
    notes = run.wait(keys, timeout_s=60)
    time.sleep(0.5)
    notes = run.collector.snapshot()
    attempts = {}
    for key in keys:
        assert [n.status for n in notes[key]] == ["succeeded"], notes[key]
        attempts[key] = run.result(key)[0]["delivery_attempt"]
    print(f"{injected} injected 503s; delivery attempts {attempts}")
    assert injected > 0
    assert len(run.result_objects()) == len(keys)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` closes the listener and every connection."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.timeout(120)
def test_a_triton_outage_stops_pulling_nacks_and_exits_non_zero(
    make_run: Callable[..., Run], inputs: list[str], stack: Any
) -> None:
    # Given a worker that reaches the session's tritonserver through a proxy, with a 3 s outage limit
    run = make_run(time_divisor=5)
    proxy = TcpProxy(stack.env["TRITON_GRPC_URL"])
    outage_exit_s = 3.0
    worker = run.worker(
        "w",
        TRITON_GRPC_URL=proxy.url,
        FLEET_TRITON_OUTAGE_EXIT_S=str(outage_exit_s),
        FLEET_TRANSIENT_RETRIES="2",
    )
    wait_started(worker)
    run.publish([run.job("before", inputs[0])])
    run.wait(["before"])
    # When Triton goes away (the proxy drops every connection and refuses new ones) and jobs arrive
    cut_at = time.monotonic()
    proxy.cut()
    keys = [f"t{i}" for i in range(6)]
    run.publish([run.job(key, inputs[i % len(inputs)]) for i, key in enumerate(keys)])
    code = wait_exit(worker, outage_exit_s + 20)
    exit_s = time.monotonic() - cut_at
    # Then the worker answers none of them, gives them back (nack), and exits non-zero for a restart
    print(f"worker exited {code} {exit_s:.1f} s after the outage began")
    assert code == 3, log_tail(worker)
    assert exit_s <= outage_exit_s + 15
    assert not set(keys) & set(run.collector.snapshot())
    stats = run.sub_stats()
    assert stats["outstanding"] == 0 and stats["nacked"] >= 1, stats
    assert any(
        line.get("message") == "triton outage too long; exiting for a restart" for line in log_lines(worker)
    )
    # and a worker with a healthy Triton answers them all: nothing was lost
    run.worker("healthy")
    notes = run.wait(keys, timeout_s=60)
    assert all(notes[key][0].status == "succeeded" for key in keys)


# --- 9. leases ------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_long_job_keeps_its_lease_and_one_past_max_processing_fails(
    make_run: Callable[..., Run], inputs: list[str], gcs_faults: Any, stack: Any
) -> None:
    # Given lanes whose 10 s ack deadline runs as 5 s (time divisor 2), a worker that extends leases every
    # 10/3 s, and another whose max processing time is 1 s
    long_run = make_run(time_divisor=2)
    long_worker = long_run.worker("long", FLEET_ACK_DEADLINE_S="10", FLEET_MAX_PROCESSING_S="60")
    short_run = make_run(time_divisor=2)
    short_worker = short_run.worker("short", FLEET_MAX_PROCESSING_S="1")
    wait_started(long_worker)
    wait_started(short_worker)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        for run in (long_run, short_run):
            path = run.env.subscription_path(run.topology.batch_subscription)
            subscriber.update_subscription(
                request={
                    "subscription": {"name": path, "ack_deadline_seconds": 10},
                    "update_mask": {"paths": ["ack_deadline_seconds"]},
                }
            )
    finally:
        subscriber.close()
    # When every GCS request takes 3.5 s (a job: fetch + write = 7 s > the 5 s deadline)
    gcs_faults.set_faults(latency_ms=3500)
    long_run.publish([long_run.job("long", inputs[0])])
    short_run.publish([short_run.job("short", inputs[1])])
    notes_short = short_run.wait(["short"], timeout_s=40)
    notes_long = long_run.wait(["long"], timeout_s=40)
    gcs_faults.clear_faults()
    time.sleep(0.5)
    # Then the long job was delivered once and succeeded; the other failed with PROCESSING_TIMEOUT
    long_doc, _ = long_run.result("long")
    short_doc, _ = short_run.result("short")
    answered = next(
        _epoch(x["time"]) for x in log_lines(long_worker) if x.get("job_id") == long_run.job_id("long")
    )
    took_s = answered - _epoch(long_doc["timeline"]["leased"])  # leased -> result written and notified
    print(f"long job held for {took_s:.1f} s under a 5 s deadline")
    assert took_s > 5.0
    assert [n.status for n in long_run.collector.snapshot()["long"]] == ["succeeded"]
    assert long_doc["delivery_attempt"] == 1
    assert long_run.sub_stats()["delivered"] == 1
    assert [(n.status, n.error_code) for n in short_run.collector.snapshot()["short"]] == [
        ("failed", "PROCESSING_TIMEOUT")
    ]
    assert short_doc["status"] == "failed" and short_doc["error"]["code"] == "PROCESSING_TIMEOUT"
    assert short_run.sub_stats()["unacked"] == 0
    del notes_short, notes_long


# --- 10. dead letters ------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_job_that_keeps_failing_is_dead_lettered_and_answered_by_the_dlq_handler(
    make_run: Callable[..., Run], inputs: list[str], gcs_faults: Any, stack: Any
) -> None:
    # Given lanes with 5 delivery attempts whose backoff runs 50x faster, and GCS down for inputs
    run = make_run(time_divisor=50, max_delivery_attempts=5)
    worker = run.worker("w", FLEET_TRANSIENT_RETRIES="1")
    wait_started(worker)
    gcs_faults.set_faults(error_rate=1.0)
    run.publish([run.job("doomed", inputs[0], attributes={"client": "acme"})])
    # When every delivery fails transiently, the subscription dead-letters the job
    _wait_for(
        lambda: run.sub_stats().get("dead_lettered", 0) >= 1,
        "nothing was dead-lettered",
        timeout_s=60,
        interval_s=0.1,
    )
    gcs_faults.clear_faults()
    assert "doomed" not in run.collector.snapshot()
    # and the dead-letter handler runs
    handler = run.worker("dlq", command="dlq-handler")
    notes = run.wait(["doomed"], timeout_s=30)
    # Then the client gets a DEAD_LETTERED failure (with its attributes) and a result object
    note = notes["doomed"][0]
    assert (note.status, note.error_code) == ("failed", "DEAD_LETTERED")
    assert note.attributes["client"] == "acme"
    assert not any(k.startswith("CloudPubSubDeadLetter") for k in note.attributes)
    document, _ = run.result("doomed")
    assert document["status"] == "failed" and document["error"]["code"] == "DEAD_LETTERED"
    assert document["delivery_attempt"] == 5
    # and the hold subscription still has the message, with the attributes the service adds
    subscriber = pubsub_v1.SubscriberClient()
    try:
        response = subscriber.pull(
            request={
                "subscription": run.env.subscription_path(run.topology.dead_letter_subscription),
                "max_messages": 10,
            },
            timeout=10,
        )
    finally:
        subscriber.close()
    held = [m.message for m in response.received_messages]
    assert len(held) == 1
    assert held[0].attributes["job_id"] == run.job_id("doomed")
    assert held[0].attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert handler.signal(signal.SIGTERM)
    assert wait_exit(handler, 15) == 0


# --- 11. telemetry ---------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_metrics_are_exported_to_a_metric_service_and_each_outcome_is_one_json_log_line(
    make_run: Callable[..., Run], inputs: list[str], stack: Any
) -> None:
    # Given a MetricService served here and a worker exporting to it every 0.5 s
    service = MetricServiceStub()
    try:
        run = make_run()
        worker = run.worker(
            "w",
            FLEET_METRICS_EXPORT="true",
            FLEET_MONITORING_ENDPOINT=f"127.0.0.1:{service.port}",
            FLEET_METRICS_INTERVAL_S="0.5",
            FLEET_INSTANCE_GROUP="fleet-workers",
        )
        wait_started(worker)
        # When it answers a few jobs, one of them a failure
        missing = f"gs://{stack.env['FLEET_INPUT_BUCKET']}/worker-it/missing.png"
        keys = ["ok0", "ok1", "ok2", "bad"]
        run.publish([run.job(key, inputs[0] if key != "bad" else missing) for key in keys])
        run.wait(keys)
        deadline = time.monotonic() + 15
        completed: dict[str, int] = {}
        while time.monotonic() < deadline:
            completed = {}
            for series in service.series():
                if series.metric.type.endswith("/jobs_completed"):
                    completed[series.metric.labels["status"]] = series.points[0].value.int64_value
            if completed.get("succeeded") == 3 and completed.get("failed") == 1:
                break
            time.sleep(0.2)
        series = service.series()
    finally:
        service.stop()
    # Then the export carries completions by status, the latency distribution, in-flight, busy fraction
    # and the per-group signal, on a generic_node resource labelled with the instance group
    assert completed == {"succeeded": 3, "failed": 1}
    types = {s.metric.type.removeprefix("custom.googleapis.com/inference_fleet/") for s in series}
    assert {"jobs_completed", "job_latency_ms", "in_flight", "busy_fraction", "group/busy_slots"} <= types
    latest_latency = [s for s in series if s.metric.type.endswith("/job_latency_ms")][-1]
    assert latest_latency.points[0].value.distribution_value.count == 4
    resource = series[-1].resource
    assert resource.type == "generic_node"
    assert resource.labels["namespace"] == "fleet-workers" and resource.labels["node_id"] == worker.name
    # and each job outcome is exactly one JSON log line with severity, message and job_id
    outcomes = [line for line in log_lines(worker) if str(line.get("message", "")).startswith("job ")]
    by_job: dict[str, Any] = {}
    for line in outcomes:
        assert line["severity"] in ("INFO", "WARNING", "ERROR")
        by_job.setdefault(line["job_id"], []).append(line["message"])
    assert by_job == {
        run.job_id("ok0"): ["job succeeded"],
        run.job_id("ok1"): ["job succeeded"],
        run.job_id("ok2"): ["job succeeded"],
        run.job_id("bad"): ["job failed"],
    }
