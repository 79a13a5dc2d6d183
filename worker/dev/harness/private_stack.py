"""A private stack for one harness run: emulators (GCS with its write log) and tritonserver on free ports."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from google.cloud import storage  # type: ignore[attr-defined]  # storage has no py.typed

from worker.dev.harness.gcs_write_log import WRITES_URL
from worker.dev.harness.processes import REPO_ROOT, with_parent_death_signal
from worker.dev.harness.stack_env import StackEnv
from worker.shared import environment
from worker.shared.resources import load_resources


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
                "worker.dev.harness",
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
        gcs = self._spawn("gcs", [sys.executable, "-m", "worker.dev.harness", "gcs"])
        buckets = environment.resource_environment(load_resources(), self.project)
        self.values = {
            environment.PUBSUB_EMULATOR_HOST: f"127.0.0.1:{pubsub['port']}",
            environment.PUBSUB_ADMIN_URL: f"http://127.0.0.1:{pubsub['admin_port']}",
            environment.STORAGE_EMULATOR_HOST: f"http://127.0.0.1:{gcs['port']}",
            environment.GCS_ADMIN_URL: f"http://127.0.0.1:{gcs['port']}/_devstack",
            WRITES_URL: f"http://127.0.0.1:{gcs['writes_port']}",
            environment.PROJECT: self.project,
            # Topics and subscriptions are each run's own (RunTopology); the buckets are the fleet's.
            environment.INPUT_BUCKET: buckets[environment.INPUT_BUCKET],
            environment.RESULTS_BUCKET: buckets[environment.RESULTS_BUCKET],
        }
        os.environ.update(self.values)
        client = storage.Client(project=self.project)
        for bucket in (self.values[environment.INPUT_BUCKET], self.values[environment.RESULTS_BUCKET]):
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
        self.values[environment.TRITON_GRPC_URL] = self.triton.grpc_url
        self.values[environment.TRITON_HTTP_URL] = self.triton.http_url
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
