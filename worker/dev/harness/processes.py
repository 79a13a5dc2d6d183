"""Managed processes: ``fleet worker`` slots restarted like systemd's ``Restart=always``, and their cleanup.

Every child the harness starts dies with it (``setpriv --pdeathsig`` and a watchdog), because a harness
killed by a test timeout must not leave workers and emulators running on a machine others share.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.dev.harness.stack_env import StackEnv

REPO_ROOT = Path(__file__).resolve().parents[3]
#: The log line a worker writes once its model is ready and its pool warm.
WORKER_STARTED = "worker started"


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


def wait_started(slot: ManagedProcess, *, timeout_s: float = 180.0) -> None:
    """Return once ``slot``'s log says the worker started; raise if it exits or times out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if WORKER_STARTED in slot.log_path.read_text(errors="replace"):
                return
        if slot.process is None or slot.process.poll() is not None:
            tail = slot.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"worker {slot.name} exited before it started:\n{tail}")
        time.sleep(0.2)
    raise TimeoutError(f"worker {slot.name} not started after {timeout_s} s")


def exit_on_sigterm() -> None:
    """Make SIGTERM (a test timeout, ``make`` interrupted) unwind through ``finally`` blocks.

    The harness's clean-up (workers, emulators, Triton) lives in ``finally``; the default SIGTERM action
    would skip it and leave them running.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


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
