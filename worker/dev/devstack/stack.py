"""The local stack: start Pub/Sub + GCS emulators and tritonserver, create the fleet's resources, write env.

``up()`` starts the three services in the background (each in its own process group, on free loopback
ports), creates the topics, subscriptions and buckets named by ``worker.shared.resources.load_resources()``
(the same config Terraform reads), and writes ``<work_dir>/env`` (``export`` lines) and
``<work_dir>/state.json`` (pids, ports). ``down()`` stops exactly the pids that ``up()`` recorded, after
checking each still runs the command we started (pids get reused), and removes both files. ``status()``
reports each service.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage  # type: ignore[attr-defined]  # no py.typed in google-cloud-storage
from google.protobuf import duration_pb2
from google.pubsub_v1 import PublisherClient, SubscriberClient, types
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from worker.dev.devstack.admin_http import AdminClient
from worker.dev.devstack.tritonserver import (
    CHILDREN,
    DEFAULT_TRITON_VENV,
    MODELS_DIR_ENV,
    REPO_ROOT,
    TritonError,
    TritonServer,
    stop_process_group,
)
from worker.shared import environment
from worker.shared.resources import FleetResources, load_resources

DEFAULT_WORK_DIR = REPO_ROOT / ".devstack"
#: The models the stack's tritonserver serves, comma-separated (for tools and people: a worker takes its
#: models from the packages in FLEET_MODELS_DIR).
MODEL_NAMES_ENV = "FLEET_MODEL_NAMES"
LOCAL_PROJECT = "local-project"
HOST = "127.0.0.1"
EMULATOR_START_TIMEOUT_S = 30.0


class StackError(RuntimeError):
    """The local stack could not be started, or its state is inconsistent."""


@dataclass
class Stack:
    """A running local stack, as the tests and tools see it."""

    env: dict[str, str]
    project: str
    resources: FleetResources
    work_dir: Path
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def pubsub_admin(self) -> AdminClient:
        return AdminClient(self.env[environment.PUBSUB_ADMIN_URL])

    @property
    def gcs_admin(self) -> AdminClient:
        return AdminClient(self.env[environment.GCS_ADMIN_URL])


def fleet_env(
    resources: FleetResources,
    project: str,
    *,
    pubsub_host: str,
    storage_url: str,
    triton_grpc: str,
    triton_http: str,
    pubsub_admin_url: str,
    gcs_admin_url: str,
    model_names: Sequence[str],
) -> dict[str, str]:
    """Every variable of the shared ``.devstack/env`` contract (names: ``worker.shared.environment``)."""
    return {
        environment.PUBSUB_EMULATOR_HOST: pubsub_host,
        environment.STORAGE_EMULATOR_HOST: storage_url,
        environment.PROJECT: project,
        environment.TRITON_GRPC_URL: triton_grpc,
        environment.TRITON_HTTP_URL: triton_http,
        **environment.resource_environment(resources, project),
        environment.PUBSUB_ADMIN_URL: pubsub_admin_url,
        environment.GCS_ADMIN_URL: gcs_admin_url,
        MODEL_NAMES_ENV: ",".join(model_names),
    }


def _start_python_service(
    module: str, work_dir: Path, name: str, extra: list[str]
) -> tuple[int, dict[str, Any]]:
    ready_file = work_dir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)
    log = open(work_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--ready-file", str(ready_file), *extra],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    finally:
        log.close()
    CHILDREN[process.pid] = process
    return process.pid, {"ready_file": str(ready_file), "process": process}


def _wait_ready_file(name: str, handle: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    ready_file = Path(handle["ready_file"])
    process: subprocess.Popen[bytes] = handle["process"]
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready_file.exists():
            info: dict[str, Any] = json.loads(ready_file.read_text())
            return info
        if process.poll() is not None:
            break
        time.sleep(0.05)
    log_tail = (work_dir / f"{name}.log").read_text(errors="replace")[-2000:]
    raise StackError(f"{name} did not start (exit code {process.poll()}):\n{log_tail}")


def _start_gcloud_pubsub(work_dir: Path, project: str) -> tuple[int, str]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise StackError(
            "--pubsub=gcloud needs `gcloud` on PATH (with the beta and pubsub-emulator components)"
        )
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
    with open(work_dir / "pubsub.log", "ab") as log:
        process = subprocess.Popen(
            [
                gcloud,
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port={HOST}:{port}",
                f"--project={project}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    CHILDREN[process.pid] = process
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return process.pid, f"{HOST}:{port}"
        if process.poll() is not None:
            break
        time.sleep(0.2)
    stop_process_group(process.pid)
    raise StackError("the gcloud Pub/Sub emulator did not start; see pubsub.log")


def create_resources(env: Mapping[str, str], resources: FleetResources, project: str) -> None:
    """Create the fleet's topics, subscriptions and buckets (idempotent: existing ones are kept)."""
    channel = grpc.insecure_channel(env[environment.PUBSUB_EMULATOR_HOST])
    try:
        publisher = PublisherClient(transport=PublisherGrpcTransport(channel=channel))
        subscriber = SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))

        def topic(short: str) -> str:
            return f"projects/{project}/topics/{short}"

        def subscription(short: str) -> str:
            return f"projects/{project}/subscriptions/{short}"

        for name in (environment.JOBS_TOPIC, environment.RESULTS_TOPIC, environment.DEAD_LETTER_TOPIC):
            with contextlib.suppress(exceptions.AlreadyExists):
                publisher.create_topic(request={"name": topic(env[name])})
        wanted: list[types.Subscription] = []
        for lane in resources.lanes:
            wanted.append(
                types.Subscription(
                    name=subscription(resources.full(lane.subscription)),
                    topic=topic(env[environment.JOBS_TOPIC]),
                    filter=lane.filter,
                    ack_deadline_seconds=lane.ack_deadline_s,
                    message_retention_duration=duration_pb2.Duration(seconds=lane.message_retention_s),
                    retry_policy=types.RetryPolicy(
                        minimum_backoff=duration_pb2.Duration(seconds=lane.retry_min_backoff_s),
                        maximum_backoff=duration_pb2.Duration(seconds=lane.retry_max_backoff_s),
                    ),
                    dead_letter_policy=types.DeadLetterPolicy(
                        dead_letter_topic=topic(env[environment.DEAD_LETTER_TOPIC]),
                        max_delivery_attempts=lane.max_delivery_attempts,
                    ),
                )
            )
        for name in (environment.DEAD_LETTER_SUBSCRIPTION, environment.DEAD_LETTER_HANDLER_SUBSCRIPTION):
            wanted.append(
                types.Subscription(
                    name=subscription(env[name]),
                    topic=topic(env[environment.DEAD_LETTER_TOPIC]),
                    ack_deadline_seconds=60,
                )
            )
        for sub in wanted:
            with contextlib.suppress(exceptions.AlreadyExists):
                subscriber.create_subscription(request=sub)
    finally:
        channel.close()

    client = storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": env[environment.STORAGE_EMULATOR_HOST]},
    )
    for name in (environment.INPUT_BUCKET, environment.RESULTS_BUCKET):
        with contextlib.suppress(exceptions.Conflict):
            client.create_bucket(env[name])


def _read_state(work_dir: Path) -> dict[str, Any] | None:
    state_file = work_dir / "state.json"
    if not state_file.exists():
        return None
    state: dict[str, Any] = json.loads(state_file.read_text())
    return state


def _cmdline(pid: int) -> str:
    try:
        return (
            (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _is_ours(pid: int, marker: str) -> bool:
    """The pid still runs what we started (not a reused pid) and is not a zombie."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker in _cmdline(pid)


def _start_pubsub(
    mode: str,
    *,
    work_dir: Path,
    project: str,
    args: list[str],
    services: dict[str, dict[str, Any]],
    checkpoint: Callable[[], None],
) -> tuple[str, str]:
    """Start the chosen Pub/Sub emulator; return (host:port, admin URL or "")."""
    if mode == "gcloud":
        pid, host = _start_gcloud_pubsub(work_dir, project)
        services["pubsub"] = {"pid": pid, "marker": "gcloud"}
        return host, ""
    if mode != "builtin":
        raise StackError(f"--pubsub must be builtin or gcloud, not {mode!r}")
    pid, handle = _start_python_service("worker.dev.devstack.pubsub_emulator", work_dir, "pubsub", args)
    services["pubsub"] = {"pid": pid, "marker": "worker.dev.devstack.pubsub_emulator"}
    checkpoint()
    info = _wait_ready_file("pubsub", handle, work_dir)
    services["pubsub"]["port"] = info["port"]
    return f"{HOST}:{info['port']}", f"http://{HOST}:{info['admin_port']}"


def up(
    *,
    work_dir: Path | str = DEFAULT_WORK_DIR,
    pubsub: str = "builtin",
    model_repository: Path | str | None = None,
    models_dir: Path | str | None = None,
    project: str = LOCAL_PROJECT,
    resources: FleetResources | None = None,
    triton_venv: Path | str = DEFAULT_TRITON_VENV,
    pubsub_args: list[str] | None = None,
    gcs_args: list[str] | None = None,
) -> Stack:
    """Start the stack (or return the running one found in ``work_dir``)."""
    work_dir = Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    resources = resources or load_resources()
    existing = _read_state(work_dir)
    if existing is not None:
        if all(_is_ours(svc["pid"], svc["marker"]) for svc in existing["services"].values()):
            return _stack_from_state(existing, resources, work_dir)
        down(work_dir=work_dir)
    # A ready repository when given (FLEET_DEVSTACK_MODEL_REPOSITORY too); otherwise the CPU repository
    # generated from the model packages (models_dir, FLEET_MODELS_DIR, the bundled ones) in work_dir.
    repo = model_repository or os.environ.get("FLEET_DEVSTACK_MODEL_REPOSITORY") or None
    services: dict[str, dict[str, Any]] = {}

    def record_state(env: Mapping[str, str]) -> None:
        state = {"project": project, "services": services, "env": dict(env), "started": time.time()}
        tmp = work_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(work_dir / "state.json")

    triton = TritonServer(model_repository=repo, models_dir=models_dir, venv=triton_venv, work_dir=work_dir)
    try:
        # tritonserver takes longest (model load + warmup): launch it first, wait for it last.
        triton.launch()
        assert triton.process is not None
        services["triton"] = {"pid": triton.process.pid, "marker": "tritonserver", "port": triton.grpc_port}
        record_state({})
        gcs_pid, gcs_handle = _start_python_service(
            "worker.dev.devstack.gcs_emulator", work_dir, "gcs", gcs_args or []
        )
        services["gcs"] = {"pid": gcs_pid, "marker": "worker.dev.devstack.gcs_emulator"}
        pubsub_host, pubsub_admin_url = _start_pubsub(
            pubsub,
            work_dir=work_dir,
            project=project,
            args=pubsub_args or [],
            services=services,
            checkpoint=lambda: record_state({}),
        )
        record_state({})
        gcs_info = _wait_ready_file("gcs", gcs_handle, work_dir)
        services["gcs"]["port"] = gcs_info["port"]
        storage_url = f"http://{HOST}:{gcs_info['port']}"
        env = fleet_env(
            resources,
            project,
            pubsub_host=pubsub_host,
            storage_url=storage_url,
            triton_grpc=triton.grpc_url,
            triton_http=triton.http_url,
            pubsub_admin_url=pubsub_admin_url,
            gcs_admin_url=storage_url + "/_devstack",
            model_names=triton.model_names(),
        )
        if triton.models_dir is not None:
            # The worker that sources .devstack/env loads the packages this server was generated from.
            env[MODELS_DIR_ENV] = str(triton.models_dir)
        create_resources(env, resources, project)
        try:
            triton.wait_ready(timeout_s=180)
        except TritonError as exc:
            raise StackError(f"{exc}\n--- tritonserver log tail ---\n{triton.log_tail()}") from exc
        record_state(env)
        (work_dir / "env").write_text(environment.render_env_file(env))
    except BaseException:
        record_state({})
        down(work_dir=work_dir)
        raise
    return Stack(
        env=env,
        project=project,
        resources=resources,
        work_dir=work_dir,
        pids={name: svc["pid"] for name, svc in services.items()},
    )


def _stack_from_state(state: dict[str, Any], resources: FleetResources, work_dir: Path) -> Stack:
    return Stack(
        env=dict(state["env"]),
        project=state["project"],
        resources=resources,
        work_dir=work_dir,
        pids={name: svc["pid"] for name, svc in state["services"].items()},
    )


def down(*, work_dir: Path | str = DEFAULT_WORK_DIR) -> dict[str, str]:
    """Stop the services ``up`` recorded (by pid, checking they are still ours); return what happened."""
    work_dir = Path(work_dir).absolute()
    state = _read_state(work_dir)
    outcome: dict[str, str] = {}
    if state is not None:
        for name, svc in state["services"].items():
            if _is_ours(svc["pid"], svc["marker"]):
                stop_process_group(svc["pid"], timeout_s=15.0)
                outcome[name] = f"stopped pid {svc['pid']}"
            else:
                outcome[name] = f"pid {svc['pid']} was not running"
    for leftover in ("env", "state.json", "pubsub.ready.json", "gcs.ready.json"):
        (work_dir / leftover).unlink(missing_ok=True)
    return outcome


def status(*, work_dir: Path | str = DEFAULT_WORK_DIR) -> dict[str, Any]:
    """Each recorded service: pid, whether it runs, its port; plus the env when the stack is complete."""
    work_dir = Path(work_dir).absolute()
    state = _read_state(work_dir)
    if state is None:
        return {"up": False, "services": {}}
    services = {
        name: {"pid": svc["pid"], "running": _is_ours(svc["pid"], svc["marker"]), "port": svc.get("port")}
        for name, svc in state["services"].items()
    }
    complete = bool(state["env"]) and all(svc["running"] for svc in services.values())
    return {"up": complete, "services": services, "env": state["env"]}
