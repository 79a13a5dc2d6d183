"""Load generation and accounting on the local stack: the corpus test, the chaos soak and the benchmark.

Nothing here is imported by the worker. It drives the fleet from the outside, the way a client and a
service manager would: it publishes jobs with the official Pub/Sub client, collects notifications from a
subscription of its own on the results topic, runs ``fleet worker`` processes (restarting them like
systemd's ``Restart=always``), serves a fake GCE metadata server whose ``instance/preempted`` flag it can
flip, and audits the results bucket afterwards (one object per job, none overwritten).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import importlib
import io
import json
import logging
import math
import os
import random
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from google.cloud import pubsub_v1, storage  # type: ignore[attr-defined]  # storage has no py.typed
from google.protobuf import duration_pb2
from PIL import Image, ImageDraw

from worker.dev.devstack.admin_http import AdminClient, serve_admin
from worker.dev.devstack.service import announce_and_wait
from worker.shared.resources import load_resources

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENV_FILE = REPO_ROOT / ".devstack" / "env"
#: Client attribute every harness job carries, so a run's notifications can be told from others'.
RUN_ATTRIBUTE = "loadgen_run"
#: Client attribute naming the case or job key, echoed on the notification (job_id may be unusable).
KEY_ATTRIBUTE = "loadgen_key"


# --- the stack's environment -------------------------------------------------------------------------
def read_env_file(path: Path | str = DEFAULT_ENV_FILE) -> dict[str, str]:
    """Parse the ``export NAME=value`` lines that ``scripts/devstack up`` writes."""
    values: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = shlex.split(line, comments=True)
        if not parts:
            continue
        if parts[0] == "export":
            parts = parts[1:]
        for part in parts:
            name, sep, value = part.partition("=")
            if sep:
                values[name] = value
    return values


@dataclass(frozen=True)
class StackEnv:
    """The ``.devstack/env`` variables with typed accessors."""

    values: Mapping[str, str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> StackEnv:
        env = os.environ if environ is None else environ
        return cls(dict(env))

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    @property
    def project(self) -> str:
        return self.values.get("GOOGLE_CLOUD_PROJECT", "local-project")

    @property
    def jobs_topic(self) -> str:
        return self.values.get("FLEET_JOBS_TOPIC", "fleet-jobs")

    @property
    def results_topic(self) -> str:
        return self.values.get("FLEET_RESULTS_TOPIC", "fleet-results")

    @property
    def dead_letter_topic(self) -> str:
        return self.values.get("FLEET_DEAD_LETTER_TOPIC", "fleet-dead-letter")

    @property
    def input_bucket(self) -> str:
        return self.values.get("FLEET_INPUT_BUCKET", f"{self.project}-fleet-inputs")

    @property
    def results_bucket(self) -> str:
        return self.values.get("FLEET_RESULTS_BUCKET", f"{self.project}-fleet-results")

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def process_env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` + the stack variables + ``extra``: the environment of a child process."""
        env = dict(os.environ)
        env.update(self.values)
        env.update(extra)
        return env


# --- jobs --------------------------------------------------------------------------------------------
class Message(NamedTuple):
    """One Pub/Sub message to publish: raw data and attributes (anything, including invalid data)."""

    key: str
    data: bytes
    attributes: dict[str, str]


def job_message(
    key: str,
    *,
    job_id: str,
    input_uri: str,
    run_id: str,
    priority: str = "batch",
    analyses: Sequence[str] | None = None,
    deadline: str | None = None,
    params: Mapping[str, Any] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Message:
    """A well-formed job message; the harness attributes let the collector find its notification."""
    body: dict[str, Any] = {
        "schema_version": 1,
        "job_id": job_id,
        "input_uri": input_uri,
        "priority": priority,
    }
    if analyses is not None:
        body["analyses"] = list(analyses)
    if deadline is not None:
        body["deadline"] = deadline
    if params is not None:
        body["params"] = dict(params)
    attrs = {"priority": priority, "job_id": job_id, RUN_ATTRIBUTE: run_id, KEY_ATTRIBUTE: key}
    attrs.update(attributes or {})
    return Message(key, json.dumps(body, separators=(",", ":")).encode(), attrs)


@dataclass
class Published:
    """What the publisher learned about one message."""

    message: Message
    message_id: str
    published_monotonic: float


def new_publisher() -> Any:
    """A PublisherClient that batches for throughput (the emulator honours PUBSUB_EMULATOR_HOST)."""
    settings = pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01, max_bytes=4 * 1024 * 1024)
    return pubsub_v1.PublisherClient(batch_settings=settings)


def publish_all(
    publisher: Any,
    topic_path: str,
    messages: Iterable[Message],
    *,
    rate_per_s: float | None = None,
    timeout_s: float = 120.0,
) -> list[Published]:
    """Publish ``messages`` (optionally paced at ``rate_per_s``) and wait for every message id."""
    pending: list[tuple[Message, float, Any]] = []
    start = time.monotonic()
    for index, message in enumerate(messages):
        if rate_per_s:
            due = start + index / rate_per_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        future = publisher.publish(topic_path, message.data, **message.attributes)
        pending.append((message, time.monotonic(), future))
    return [Published(m, str(f.result(timeout=timeout_s)), t) for m, t, f in pending]


# --- notifications -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Notification:
    """One notification as received from the results topic."""

    data: Mapping[str, Any]
    attributes: Mapping[str, str]
    message_id: str
    received_monotonic: float

    @property
    def key(self) -> str | None:
        return self.attributes.get(KEY_ATTRIBUTE)

    @property
    def status(self) -> str | None:
        value = self.data.get("status")
        return value if isinstance(value, str) else None

    @property
    def error_code(self) -> str | None:
        error = self.data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return code if isinstance(code, str) else None
        return None


class NotificationCollector:
    """Pulls the results topic through a subscription of its own, keyed by the harness attribute.

    Synchronous Pull in a thread keeps this independent of the streaming machinery under test. The
    subscription is created on start and deleted on close.
    """

    def __init__(
        self, stack: StackEnv, *, run_id: str, max_messages: int = 1000, filter_expression: str = ""
    ) -> None:
        """``filter_expression``: a Pub/Sub subscription filter, as a client collecting only its own
        results would use (e.g. ``attributes.priority = "interactive"``)."""
        self._stack = stack
        self._run_id = run_id
        self._filter = filter_expression
        self._max_messages = max_messages
        self._subscriber = pubsub_v1.SubscriberClient()
        self.subscription = stack.subscription_path(f"loadgen-results-{run_id}")
        self._lock = threading.Condition()
        self._by_key: dict[str, list[Notification]] = {}
        self.foreign = 0
        self.redelivered = 0
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> NotificationCollector:
        self._subscriber.create_subscription(
            request={
                "name": self.subscription,
                "topic": self._stack.topic_path(self._stack.results_topic),
                "ack_deadline_seconds": 60,
                "filter": self._filter,
            }
        )
        self._thread = threading.Thread(target=self._run, name="loadgen-collector", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": self._max_messages},
                    timeout=5.0,
                )
            except Exception:  # the emulator may be restarted or drop streams under chaos
                self._stop.wait(0.2)
                continue
            ack_ids = []
            now = time.monotonic()
            with self._lock:
                for received in response.received_messages:
                    ack_ids.append(received.ack_id)
                    self._record(received.message, now)
                self._lock.notify_all()
            if ack_ids:
                with contextlib.suppress(Exception):
                    self._subscriber.acknowledge(
                        request={"subscription": self.subscription, "ack_ids": ack_ids}
                    )
            elif not response.received_messages:
                self._stop.wait(0.05)

    def _record(self, message: Any, now: float) -> None:
        attributes = dict(message.attributes)
        if attributes.get(RUN_ATTRIBUTE) != self._run_id:
            self.foreign += 1
            return
        try:
            data = json.loads(bytes(message.data).decode("utf-8"))
        except ValueError:
            data = {"_undecodable": True}
        message_id = str(message.message_id)
        if message_id in self._seen:
            # The emulator's "redeliver acked" fault hits this subscription too: the same Pub/Sub message
            # again is not a second notification from the fleet, so it is not counted as one.
            self.redelivered += 1
            return
        self._seen.add(message_id)
        note = Notification(data, attributes, message_id, now)
        self._by_key.setdefault(attributes.get(KEY_ATTRIBUTE, ""), []).append(note)

    def snapshot(self) -> dict[str, list[Notification]]:
        with self._lock:
            return {k: list(v) for k, v in self._by_key.items()}

    def wait_for(self, keys: Iterable[str], *, timeout_s: float, poll_s: float = 0.5) -> set[str]:
        """Wait until every key has at least one notification; return the keys still missing."""
        missing = set(keys)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                missing = {k for k in missing if k not in self._by_key}
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0:
                    return missing
                self._lock.wait(min(poll_s, remaining))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._subscriber.delete_subscription(request={"subscription": self.subscription})
        with contextlib.suppress(Exception):
            self._subscriber.close()


# --- fake GCE metadata server ------------------------------------------------------------------------
class FakeMetadataServer:
    """Serves ``instance/preempted`` per simulated instance on 127.0.0.1 (port chosen by the OS).

    Point a worker at ``url_for(name)`` with ``FLEET_METADATA_URL``. ``?wait_for_change=true`` blocks
    until the flag changes (or ``timeout_sec``), like the real server. Requests without the
    ``Metadata-Flavor: Google`` header get 403, like the real server.
    """

    def __init__(self) -> None:
        self._flags: dict[str, bool] = {}
        self._changed = threading.Condition()
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-metadata", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url_for(self, instance: str) -> str:
        return f"http://127.0.0.1:{self.port}/{instance}/computeMetadata/v1"

    def start(self) -> FakeMetadataServer:
        self._thread.start()
        return self

    def set_preempted(self, instance: str, value: bool) -> None:
        with self._changed:
            self._flags[instance] = value
            self._changed.notify_all()

    def _handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        self.requests += 1
        url = urllib.parse.urlsplit(request.path)
        parts = url.path.strip("/").split("/")
        if request.headers.get("Metadata-Flavor") != "Google":
            self._reply(request, 403, "Missing Metadata-Flavor:Google header.")
            return
        if len(parts) < 2 or parts[1:] != ["computeMetadata", "v1", "instance", "preempted"]:
            self._reply(request, 404, "not found")
            return
        instance = parts[0]
        query = urllib.parse.parse_qs(url.query)
        with self._changed:
            current = self._flags.get(instance, False)
            last_etag = query.get("last_etag", [None])[0]
            wait = query.get("wait_for_change", ["false"])[0].lower() == "true"
            # Like the real server: with a stale last_etag answer at once, else hang until a change.
            if wait and (not last_etag or last_etag == self._etag(current)):
                timeout_s = float(query.get("timeout_sec", ["30"])[0])
                self._changed.wait_for(lambda: self._flags.get(instance, False) != current, timeout=timeout_s)
                current = self._flags.get(instance, False)
        self._reply(request, 200, "TRUE" if current else "FALSE")

    @staticmethod
    def _etag(value: bool) -> str:
        return "etag-true" if value else "etag-false"

    @classmethod
    def _reply(cls, request: http.server.BaseHTTPRequestHandler, status: int, body: str) -> None:
        payload = body.encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/text")
            request.send_header("Metadata-Flavor", "Google")
            request.send_header("ETag", cls._etag(body == "TRUE"))
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except OSError:  # the worker went away mid-wait (kill -9)
            pass

    def close(self) -> None:
        with self._changed:
            self._changed.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()


# --- worker processes --------------------------------------------------------------------------------
def with_parent_death_signal(command: list[str]) -> list[str]:
    """``command`` wrapped so the kernel SIGKILLs it when the harness dies (``setpriv --pdeathsig``).

    A harness killed by a test timeout must not leave workers and emulators running on a shared machine.
    The signal fires when the *thread* that started the child ends, so only children started from
    long-lived threads (the main thread, the supervisor) are wrapped. Without setpriv: unchanged.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


def fleet_command(*args: str) -> list[str]:
    """``fleet <args>`` run with the current interpreter (no dependence on PATH)."""
    return [sys.executable, "-m", "worker.cli", *args]


@dataclass
class ManagedProcess:
    """One supervised process slot: restarted after it exits, like systemd's ``Restart=always``."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    stats_path: Path | None = None
    restart: bool = True
    restart_delay_s: float = 0.5
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    #: Called once before the next restart (e.g. a replacement VM's metadata says "not preempted").
    before_restart: Callable[[], None] | None = None
    _restart_at: float | None = None

    def start(self) -> None:
        self.starts += 1
        env = dict(self.env)
        if self.stats_path is not None:
            env["FLEET_STATS_FILE"] = str(self.stats_path.with_suffix(f".{self.starts}.json"))
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                with_parent_death_signal(self.command),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        finally:
            log.close()

    def signal(self, sig: int) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, sig)
        return True

    def poll(self) -> None:
        """Notice an exit and restart after the delay (call regularly)."""
        if self.process is not None:
            code = self.process.poll()
            if code is not None:
                self.exits.append(code)
                self._collect_stats()
                self.process = None
                self._restart_at = time.monotonic() + self.restart_delay_s
        due = self._restart_at
        if self.process is None and self.restart and due is not None and time.monotonic() >= due:
            self._restart_at = None
            hook, self.before_restart = self.before_restart, None
            if hook is not None:
                hook()
            self.start()

    def _collect_stats(self) -> None:
        if self.stats_path is None:
            return
        path = self.stats_path.with_suffix(f".{self.starts}.json")
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text(encoding="utf-8").strip().splitlines()
            if text:
                self.stats.append(json.loads(text[-1]))

    def stop(self, *, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; no restart afterwards."""
        self.restart = False
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.process.wait(timeout=10)
        self.exits.append(code)
        self._collect_stats()
        self.process = None
        return code

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Runs a set of ``ManagedProcess`` slots and restarts them from a background thread."""

    def __init__(self, slots: Sequence[ManagedProcess], *, poll_s: float = 0.1) -> None:
        self.slots = list(slots)
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        for slot in self.slots:
            slot.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            with self._lock:
                for slot in self.slots:
                    slot.poll()

    def signal(self, index: int, sig: int) -> bool:
        with self._lock:
            return self.slots[index].signal(sig)

    def stop(self, *, timeout_s: float = 30.0) -> list[int | None]:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for slot in self.slots:
                slot.restart = False
                slot.signal(signal.SIGTERM)
            return [slot.stop(timeout_s=timeout_s) for slot in self.slots]


def worker_slot(
    name: str,
    stack: StackEnv,
    workdir: Path,
    *,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    command: str = "worker",
) -> ManagedProcess:
    """A supervised ``fleet worker`` (or ``fleet dlq-handler``) with its own log and stats files."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = stack.process_env(FLEET_INSTANCE_NAME=name, **dict(extra_env or {}))
    return ManagedProcess(
        name=name,
        command=fleet_command(command, *args),
        env=env,
        log_path=workdir / f"{name}.log",
        stats_path=workdir / f"{name}.stats",
    )


# --- auditing results --------------------------------------------------------------------------------
@dataclass
class Audit:
    """The outcome of counting every job: the soak's and the corpus test's verdict."""

    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    lost: int = 0
    overwritten: int = 0
    missing_objects: list[str] = field(default_factory=list)
    missing_notifications: list[str] = field(default_factory=list)
    duplicate_notifications: int = 0
    conflicting_notifications: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)


def list_result_objects(storage_client: Any, bucket: str, prefix: str = "results/") -> dict[str, Any]:
    """Every object under ``prefix``: name -> blob (with generation and metageneration)."""
    return {blob.name: blob for blob in storage_client.list_blobs(bucket, prefix=prefix)}


def audit_jobs(
    expected_objects: Mapping[str, str],
    notifications: Mapping[str, Sequence[Notification]],
    objects: Mapping[str, Any],
    *,
    writes_by_object: Mapping[str, int] | None = None,
) -> Audit:
    """Count outcomes for ``expected_objects`` (key -> result object name).

    A job is lost unless it has exactly one result object and at least one terminal notification. An
    object is overwritten when the storage write log shows more than one successful write to it, or
    (without a log) when its metageneration or generation history says it was replaced.
    """
    audit = Audit(jobs=len(expected_objects))
    for key, object_name in expected_objects.items():
        notes = [n for n in notifications.get(key, []) if n.status in ("succeeded", "failed", "expired")]
        blob = objects.get(object_name)
        if blob is None:
            audit.missing_objects.append(key)
        if not notes:
            audit.missing_notifications.append(key)
        if blob is None or not notes:
            audit.lost += 1
            continue
        if len(notes) > 1:
            audit.duplicate_notifications += len(notes) - 1
            if len({(n.status, n.error_code) for n in notes}) > 1:
                audit.conflicting_notifications += 1
        status = notes[0].status
        if status == "succeeded":
            audit.succeeded += 1
        elif status == "expired":
            audit.expired += 1
        else:
            audit.failed += 1
            code = notes[0].error_code or "?"
            audit.error_codes[code] = audit.error_codes.get(code, 0) + 1
        if writes_by_object is not None:
            if writes_by_object.get(object_name, 0) > 1:
                audit.overwritten += 1
        elif int(getattr(blob, "metageneration", 1) or 1) > 1:
            audit.overwritten += 1
    return audit


# --- small helpers -----------------------------------------------------------------------------------
def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (``p50`` ...); NaN for an empty sample."""
    ordered = sorted(values)
    out: dict[str, float] = {}
    for q in qs:
        name = f"p{q:g}"
        if not ordered:
            out[name] = math.nan
            continue
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        out[name] = ordered[rank - 1]
    return out


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


def proc_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of a live process and its reaped children, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[0] is state (field 3): utime is field 14, stime 15, cutime 16, cstime 17.
    return sum(int(x) for x in fields[11:15]) / ticks


def find_pids(pattern: str) -> list[int]:
    """Pids whose command line contains ``pattern`` (for CPU accounting of the stack's processes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if pattern in cmdline:
                pids.append(int(entry.name))
    return pids


def run_script(command: list[str], *, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run a harness script; on timeout SIGTERM it (it cleans up its stack), then SIGKILL after 60 s."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        stderr += f"\n[run_script: timed out after {timeout_s} s]"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - start)


# --- hostile inputs (generated at run time so the repository stays small) ---------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def drawing_png(side_px: int = 256, *, seed: int = 0) -> bytes:
    """A small line drawing (black ink on white), PNG-encoded: cheap to decode, valid for the model."""
    rng = random.Random(seed)
    image = Image.new("L", (side_px, side_px), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        points = [(rng.randrange(side_px), rng.randrange(side_px)) for _ in range(2)]
        draw.line(points, fill=0, width=2)
    draw.rectangle((side_px // 4, side_px // 4, 3 * side_px // 4, 3 * side_px // 4), outline=0, width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drawing_jpeg(side_px: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(drawing_png(side_px))).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bomb(side_px: int = 40000) -> bytes:
    """A *valid* 1-bit PNG of side_px² pixels whose zlib stream inflates ~1000x (all-zero rows)."""
    row = b"\x00" * (1 + (side_px + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = []
    rows_per_chunk = 1000
    block = row * rows_per_chunk
    full, rest = divmod(side_px, rows_per_chunk)
    for _ in range(full):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(row * rest))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side_px, side_px, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def png_header_only(side_px: int = 1_000_000) -> bytes:
    """A PNG whose header claims side_px² 8-bit pixels, followed by a tiny (truncated) data stream."""
    ihdr = struct.pack(">IIBBBBB", side_px, side_px, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))


def jpeg_header_claiming(side_px: int = 65000) -> bytes:
    """A small real JPEG whose start-of-frame header is patched to claim side_px x side_px."""
    data = bytearray(drawing_jpeg(64))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = side_px.to_bytes(2, "big") * 2
            return bytes(data)
    raise ValueError("no start-of-frame marker found")


def gif_header_claiming(side_px: int = 65535) -> bytes:
    """A tiny GIF whose logical screen and frame claim side_px x side_px."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 255).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = side_px.to_bytes(2, "little") * 2
    at = data.find(b"\x2c")  # image descriptor: left, top, width, height
    if at >= 0:
        data[at + 5 : at + 9] = side_px.to_bytes(2, "little") * 2
    return bytes(data)


def input_recipe(recipe: Mapping[str, Any]) -> tuple[bytes, str]:
    """Bytes and content type for a corpus input recipe (``{"recipe": name, ...options}``)."""
    name = recipe["recipe"]
    content_type = str(recipe.get("content_type", "image/png"))
    png = drawing_png
    builders: dict[str, Any] = {
        "drawing_png": png,
        "zero_bytes": lambda: b"",
        "truncated_png": lambda: _cut(png(), 0.6),
        "truncated_jpeg": lambda: _cut(drawing_jpeg(), 0.5),
        "random_bytes": lambda: random_bytes(4096),
        "text": lambda: b"this is not an image, it is a sentence.\n" * 20,
        "html": lambda: b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>\n",
        "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><rect/></svg>',
        "png_bomb": lambda: png_bomb(int(recipe.get("side_px", 40000))),
        "png_header": lambda: png_header_only(int(recipe.get("side_px", 1_000_000))),
        "jpeg_header": lambda: jpeg_header_claiming(int(recipe.get("side_px", 65000))),
        "gif_header": lambda: gif_header_claiming(int(recipe.get("side_px", 65535))),
        "oversized_object": lambda: png() + b"\x00" * int(recipe["bytes"]),
    }
    if name == "truncated_jpeg":
        content_type = str(recipe.get("content_type", "image/jpeg"))
    return builders[name](), content_type


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def random_bytes(size: int, *, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


# --- per-run topics and subscriptions ----------------------------------------------------------------
@dataclass(frozen=True)
class RunTopology:
    """A private copy of the fleet's topics and lane subscriptions for one harness run.

    Isolating a run keeps its delivery counts and backlog its own while other engineers' tests share
    the emulator; the lanes copy ``terraform/fleet.json`` (filters, retry and dead-letter policies).
    """

    run_id: str
    jobs_topic: str
    results_topic: str
    dead_letter_topic: str
    interactive_subscription: str
    batch_subscription: str
    dead_letter_subscription: str
    dead_letter_handler_subscription: str

    @classmethod
    def named(cls, run_id: str) -> RunTopology:
        base = f"lg-{run_id}"
        return cls(
            run_id=run_id,
            jobs_topic=f"{base}-jobs",
            results_topic=f"{base}-results",
            dead_letter_topic=f"{base}-dead-letter",
            interactive_subscription=f"{base}-jobs-interactive",
            batch_subscription=f"{base}-jobs-batch",
            dead_letter_subscription=f"{base}-dead-letter-hold",
            dead_letter_handler_subscription=f"{base}-dead-letter-handler",
        )

    def env(self) -> dict[str, str]:
        """Environment overrides that point a worker (and the collector) at this topology."""
        return {
            "FLEET_JOBS_TOPIC": self.jobs_topic,
            "FLEET_RESULTS_TOPIC": self.results_topic,
            "FLEET_DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "FLEET_INTERACTIVE_SUBSCRIPTION": self.interactive_subscription,
            "FLEET_BATCH_SUBSCRIPTION": self.batch_subscription,
            "FLEET_DEAD_LETTER_SUBSCRIPTION": self.dead_letter_subscription,
            "FLEET_DEAD_LETTER_HANDLER_SUBSCRIPTION": self.dead_letter_handler_subscription,
        }

    def subscriptions(self) -> tuple[str, ...]:
        return (
            self.interactive_subscription,
            self.batch_subscription,
            self.dead_letter_subscription,
            self.dead_letter_handler_subscription,
        )

    def create(
        self,
        stack: StackEnv,
        *,
        max_delivery_attempts: int | None = None,
        time_divisor: float | None = None,
    ) -> None:
        """Create the topics and subscriptions with the official clients, as Terraform would.

        ``time_divisor`` labels the lane subscriptions so the local emulator divides their ack deadlines
        and retry backoffs (``devstack-time-divisor``): a kill -9'd worker's leases come back sooner.
        """
        labels = {"devstack-time-divisor": f"{time_divisor:g}"} if time_divisor else {}
        resources = load_resources()
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            for topic in (self.jobs_topic, self.results_topic, self.dead_letter_topic):
                publisher.create_topic(request={"name": stack.topic_path(topic)})
            lanes = {"interactive": self.interactive_subscription, "batch": self.batch_subscription}
            for lane in resources.lanes:
                subscriber.create_subscription(
                    request={
                        "name": stack.subscription_path(lanes[lane.name]),
                        "topic": stack.topic_path(self.jobs_topic),
                        "filter": lane.filter,
                        "labels": labels,
                        "ack_deadline_seconds": lane.ack_deadline_s,
                        "retry_policy": {
                            "minimum_backoff": duration_pb2.Duration(seconds=lane.retry_min_backoff_s),
                            "maximum_backoff": duration_pb2.Duration(seconds=lane.retry_max_backoff_s),
                        },
                        "dead_letter_policy": {
                            "dead_letter_topic": stack.topic_path(self.dead_letter_topic),
                            "max_delivery_attempts": max_delivery_attempts or lane.max_delivery_attempts,
                        },
                    }
                )
            for name in (self.dead_letter_subscription, self.dead_letter_handler_subscription):
                subscriber.create_subscription(
                    request={
                        "name": stack.subscription_path(name),
                        "topic": stack.topic_path(self.dead_letter_topic),
                        "ack_deadline_seconds": 60,
                    }
                )
        finally:
            subscriber.close()

    def delete(self, stack: StackEnv) -> None:
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            for name in self.subscriptions():
                with contextlib.suppress(Exception):
                    subscriber.delete_subscription(request={"subscription": stack.subscription_path(name)})
            for topic in (self.jobs_topic, self.results_topic, self.dead_letter_topic):
                with contextlib.suppress(Exception):
                    publisher.delete_topic(request={"topic": stack.topic_path(topic)})
        finally:
            subscriber.close()


def stack_for_run(stack: StackEnv, topology: RunTopology) -> StackEnv:
    """The stack's environment with the run's topics and subscriptions substituted."""
    values = dict(stack.values)
    values.update(topology.env())
    return StackEnv(values)


def delivery_stats(admin_url: str | None, subscriptions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per-subscription delivery counters from the Pub/Sub emulator's admin ``/stats`` (empty if absent)."""
    if not admin_url:
        return {}
    try:
        stats = AdminClient(admin_url).stats(messages=1)
    except OSError:
        return {}
    subs: dict[str, dict[str, Any]] = stats.get("subscriptions", {})
    return {name: subs[name] for name in subscriptions if name in subs}


def upload(storage_client: Any, bucket: str, name: str, data: bytes, content_type: str) -> str:
    """Upload an input object; returns its gs:// URI."""
    storage_client.bucket(bucket).blob(name).upload_from_string(data, content_type=content_type)
    return f"gs://{bucket}/{name}"


# --- a private stack for one harness run -------------------------------------------------------------
def _wait_ready_file(
    path: Path, process: subprocess.Popen[bytes], *, timeout_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return info
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode} before it was ready")
        time.sleep(0.05)
    raise TimeoutError(f"{process.args!r} not ready after {timeout_s} s")


def serve_gcs_with_write_log(ready_file: str | None) -> int:
    """The stack's GCS emulator plus a write log: every stored object version, counted per object.

    The emulator enforces ``ifGenerationMatch`` but keeps no history, so an overwrite would leave no
    trace. Counting writes where the storage layer persists them (``Storage.create_file``) is the
    soak's ground truth for "overwritten = 0". Served on a second admin port at ``GET /writes``.
    """
    # Lazy: the emulator is a dev dependency, and only this sub-command needs it.
    from worker.dev.devstack.gcs_emulator import GcsEmulator  # noqa: PLC0415

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    emulator = GcsEmulator()
    storage = emulator.state.storage
    writes: dict[str, int] = {}
    original = storage.create_file

    def create_file(bucket_name: str, file_name: str, *args: Any, **kwargs: Any) -> Any:
        result = original(bucket_name, file_name, *args, **kwargs)
        key = f"{bucket_name}/{file_name}"
        writes[key] = writes.get(key, 0) + 1
        return result

    storage.create_file = create_file

    def get_writes(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        prefix = query.get("prefix", "")
        with emulator.state.lock:
            return {k: v for k, v in writes.items() if k.startswith(prefix)}

    emulator.start()
    admin = serve_admin({("GET", "/writes"): get_writes})
    info = {"port": emulator.port, "writes_port": int(admin.server_address[1]), "pid": os.getpid()}
    announce_and_wait(info, ready_file, echo=False)
    admin.shutdown()
    emulator.stop()
    return 0


def object_writes(writes_url: str, prefix: str = "") -> dict[str, int]:
    """``bucket/object`` -> number of times the GCS emulator stored it (see serve_gcs_with_write_log)."""
    query = "?" + urllib.parse.urlencode({"prefix": prefix}) if prefix else ""
    with urllib.request.urlopen(writes_url.rstrip("/") + "/writes" + query, timeout=30) as response:
        data: dict[str, int] = json.loads(response.read())
    return data


class PrivateStack:
    """Pub/Sub and GCS emulators (and tritonserver) on free ports, owned by one harness run.

    Chaos kills and restarts Triton and injects faults into the emulators; doing that to a private stack
    keeps other engineers' tests (sharing the machine, each with its own stack) unaffected.
    """

    def __init__(
        self, workdir: Path, *, project: str = "local-project", model_repository: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.project = project
        self.model_repository = model_repository
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.values: dict[str, str] = {}
        self.triton: Any = None

    def _spawn(self, name: str, args: list[str]) -> dict[str, Any]:
        ready = self.workdir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        log = (self.workdir / f"{name}.log").open("ab")
        try:
            process = subprocess.Popen(
                with_parent_death_signal([*args, "--ready-file", str(ready)]),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        finally:
            log.close()
        self.processes[name] = process
        return _wait_ready_file(ready, process)

    def start(self, *, triton: bool = True) -> StackEnv:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Outlives this process on purpose: if the harness is SIGKILLed (a test timeout), it kills
        # tritonserver and anything else whose command line names this stack's work directory.
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.dev.loadgen",
                "watchdog",
                "--parent",
                str(os.getpid()),
                str(self.workdir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        pubsub = self._spawn("pubsub", [sys.executable, "-m", "worker.dev.devstack.pubsub_emulator"])
        gcs = self._spawn("gcs", [sys.executable, "-m", "worker.dev.loadgen", "gcs"])
        resources = load_resources()
        self.values = {
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub['port']}",
            "FLEET_PUBSUB_ADMIN_URL": f"http://127.0.0.1:{pubsub['admin_port']}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs['port']}",
            "FLEET_GCS_ADMIN_URL": f"http://127.0.0.1:{gcs['port']}/_devstack",
            "LOADGEN_WRITES_URL": f"http://127.0.0.1:{gcs['writes_port']}",
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FLEET_INPUT_BUCKET": resources.inputs_bucket(self.project),
            "FLEET_RESULTS_BUCKET": resources.results_bucket(self.project),
            "FLEET_MODEL_NAME": "drawing_analyzer",
        }
        os.environ.update(self.values)
        client = storage.Client(project=self.project)
        for bucket in (self.values["FLEET_INPUT_BUCKET"], self.values["FLEET_RESULTS_BUCKET"]):
            client.create_bucket(bucket)
        if triton:
            self.start_triton()
        return StackEnv(dict(self.values))

    # Triton: the stack's launcher (worker/dev/devstack/tritonserver.py); restarts reuse the same ports so
    # running workers reconnect to the address they were given, as they would to a local server.
    def start_triton(self) -> None:
        # Lazy: only runs that need Triton import the launcher (and need .venv-triton).
        launcher = importlib.import_module("worker.dev.devstack.tritonserver")
        if self.triton is None:
            repository = {"model_repository": self.model_repository} if self.model_repository else {}
            self.triton = launcher.TritonServer(
                work_dir=self.workdir / "triton", log_path=self.workdir / "tritonserver.log", **repository
            )
            self.triton.start()
        else:
            self.triton.relaunch()
        self.values["TRITON_GRPC_URL"] = self.triton.grpc_url
        self.values["TRITON_HTTP_URL"] = self.triton.http_url
        os.environ.update(self.values)

    def kill_triton(self) -> None:
        """kill -9 the server's whole process group (the python-backend stubs too)."""
        server = self.triton
        if server is None or server.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=10)
        server.process = None

    @property
    def env(self) -> StackEnv:
        return StackEnv(dict(self.values))

    def stop(self) -> None:
        if self.triton is not None:
            with contextlib.suppress(Exception):
                self.triton.stop()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


# --- a sampling profiler for the worker (all threads; py-spy cannot attach on this machine) -----------
#: Frames where a thread waits rather than works; samples ending there are counted as idle.
IDLE_FUNCTIONS = frozenset(
    {
        "select",
        "poll",
        "wait",
        "_worker",
        "get",
        "recv",
        "recv_into",
        "readinto",
        "_recv",
        "accept",
        "sleep",
        "_run_once",
        "read",
        "_wait_for_tstate_lock",
        "do_poll",
        "wait_for_read",
    }
)


class StackSampler:
    """Samples every Python thread's stack each ``interval_s``; reports per-thread CPU and hot stacks.

    Wall-clock sampling of ``sys._current_frames()`` (so a thread blocked in C shows its blocking frame,
    filtered as idle), combined with each thread's CPU seconds from ``/proc/self/task``.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.samples: Counter[tuple[str, str]] = Counter()
        self.thread_samples: Counter[str] = Counter()
        self.names: dict[int, str] = {}
        self.cpu_by_tid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen-sampler", daemon=True)

    def start(self) -> StackSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        me = threading.get_ident()
        self.names[threading.get_native_id()] = "loadgen-sampler (profiler overhead)"
        rounds = 0
        while not self._stop.wait(self.interval_s):
            rounds += 1
            if rounds % 100 == 0:
                self._read_thread_cpu()
            threads = {t.ident: t for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                thread = threads.get(ident)
                name = _thread_kind(thread.name if thread else "?")
                if thread is not None and thread.native_id is not None:
                    self.names[thread.native_id] = name
                stack: list[str] = []
                current: Any = frame
                while current is not None and len(stack) < 4:
                    code = current.f_code
                    stack.append(f"{Path(code.co_filename).name}:{code.co_name}")
                    current = current.f_back
                leaf = stack[0].split(":", 1)[1]
                if leaf in IDLE_FUNCTIONS:
                    continue
                if stack[0] == "threading.py:run":
                    stack[0] = "threading.py:run (in C: grpc/native code)"
                self.thread_samples[name] += 1
                self.samples[(name, " < ".join(stack))] += 1

    def _read_thread_cpu(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                self.cpu_by_tid[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks

    def report(self, top: int = 30) -> str:
        self._stop.set()
        self._thread.join(timeout=2)
        self._read_thread_cpu()
        cpu: dict[str, float] = {}
        for tid, seconds in self.cpu_by_tid.items():
            name = self.names.get(tid, "native (grpc core, ...)")
            cpu[name] = cpu.get(name, 0.0) + seconds
        lines = [
            "CPU seconds by thread kind (/proc/self/task, read every 0.5 s; an ended thread loses < 0.5 s):"
        ]
        lines += [f"  {seconds:8.2f}  {name}" for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])]
        total = sum(self.samples.values()) or 1
        lines.append(
            f"busy samples by thread kind (every {self.interval_s * 1000:g} ms, idle frames excluded):"
        )
        lines += [f"  {count:8d}  {name}" for name, count in self.thread_samples.most_common()]
        lines.append(f"hottest stacks (leaf < caller < ...), share of {total} busy samples:")
        for (name, stack), count in self.samples.most_common(top):
            lines.append(f"  {100 * count / total:5.1f}%  [{name}] {stack}")
        return "\n".join(lines) + "\n"


def _thread_kind(name: str) -> str:
    """``gcs_3`` -> ``gcs``; ``ThreadPoolExecutor-0_1`` -> ``ThreadPoolExecutor``; keeps others."""
    base = name.rsplit("_", 1)[0] if "_" in name else name
    return base.split("-", 1)[0] if base.startswith(("ThreadPoolExecutor", "Thread")) else base


def profile_worker(argv: Sequence[str], out_path: str) -> int:
    """Run ``fleet <argv>`` in this process under the sampler and write its report on exit."""
    from worker import cli  # noqa: PLC0415 (the profiled program itself)

    sampler = StackSampler().start()
    try:
        return cli.main(list(argv))
    finally:
        Path(out_path).write_text(sampler.report(), encoding="utf-8")


def watchdog(parent: int, marker: str, *, poll_s: float = 1.0) -> int:
    """Wait for ``parent`` to exit, then SIGKILL every process whose command line contains ``marker``."""
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            break
        time.sleep(poll_s)
    me = os.getpid()
    for pid in find_pids(marker):
        if pid != me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.dev.loadgen gcs --ready-file F``: the GCS emulator with a write log."""
    parser = argparse.ArgumentParser(prog="python -m worker.dev.loadgen")
    sub = parser.add_subparsers(dest="command", required=True)
    gcs = sub.add_parser("gcs", help="serve the GCS emulator with a write log")
    gcs.add_argument("--ready-file")
    prof = sub.add_parser("profile", help="run `fleet ARGS...` under the all-threads sampler")
    prof.add_argument("--out", required=True, help="write the report here")
    prof.add_argument("fleet_args", nargs=argparse.REMAINDER)
    dog = sub.add_parser("watchdog", help="kill a dead harness's leftovers")
    dog.add_argument("--parent", type=int, required=True)
    dog.add_argument("marker", help="kill processes whose command line contains this (a work directory)")
    args = parser.parse_args(argv)
    if args.command == "watchdog":
        return watchdog(args.parent, args.marker)
    if args.command == "profile":
        return profile_worker([a for a in args.fleet_args if a != "--"], args.out)
    return serve_gcs_with_write_log(args.ready_file)


if __name__ == "__main__":
    sys.exit(main())
