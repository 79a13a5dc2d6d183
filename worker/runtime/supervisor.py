"""Several worker processes on one VM: ``fleet worker`` with ``FLEET_WORKER_PROCESSES`` > 1.

One process's event loop costs a few ms of CPU per job (docs/performance.md "Per-job overhead"), so one
process caps a VM below what its decode cores allow. The supervisor starts N child ``fleet worker``
processes with the same settings, except that the VM's ``pipeline_slots`` and ``preprocess_processes`` are
split between them (the children's slots add up to the configured slots: the VM leases no more than
before). The children share the VM's one Triton; each watches the metadata server itself.

Lifecycle: SIGTERM/SIGINT are forwarded to every child, which drains as a single worker does; the
supervisor waits for all and exits with the worst exit code. A child that exits non-zero is restarted, at
most ``MAX_RESTARTS`` times in ``RESTART_WINDOW_S`` (its leased jobs go back through Pub/Sub when their
leases lapse); past that the rest are drained and the supervisor exits with that child's code, so systemd
and the MIG's health check see the failure as they see a single worker's. A child that exits 0 drained on
purpose (the metadata server's preemption notice): the others are drained too. Children's log lines
(stderr) are passed through whole; the supervisor logs ``worker processes started`` once every child
logged ``worker started``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import sys
import time
from collections import deque
from typing import Any, BinaryIO

from worker.runtime import telemetry
from worker.runtime.settings import FIELDS, WorkerSettings
from worker.shared import exit_codes

log = telemetry.get_logger("worker.runtime.supervisor")
#: A child may be restarted this many times within the window; one more exit stops the supervisor.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0
RESTART_DELAY_S = 1.0
#: The line a child's worker logs when it is ready (worker/runtime/app.py ``_start``).
READY_MARKER = b'"worker started"'
_PR_SET_PDEATHSIG = 1
#: Set by the supervisor in each child's environment: the pid its child checks it still belongs to.
SUPERVISOR_PID_ENV = "FLEET_SUPERVISOR_PID"
#: Longest child log line passed through as a line (longer output is passed on in chunks).
LINE_LIMIT_BYTES = 1 << 20


def split(total: int, parts: int) -> list[int]:
    """``total`` shared by ``parts`` as evenly as integers allow (the first get the remainder), >= 1 each."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if index < extra else 0)) for index in range(parts)]


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def child_environments(settings: WorkerSettings) -> list[dict[str, str]]:
    """The ``FLEET_*`` variables of each child: every resolved setting (flags included), one process each,
    its share of slots and decode processes, its label and its own stats file."""
    count = settings.worker_processes
    slots = split(settings.pipeline_slots, count)
    decoders = split(settings.preprocess_processes, count)
    common = {option.env: _env_value(getattr(settings, option.field)) for option in FIELDS}
    children = []
    for index in range(count):
        env = dict(common)
        env["FLEET_WORKER_PROCESSES"] = "1"
        env["FLEET_PIPELINE_SLOTS"] = str(slots[index])
        env["FLEET_PREPROCESS_PROCESSES"] = str(decoders[index])
        env["FLEET_WORKER_PROCESS_LABEL"] = f"p{index}"
        env["FLEET_STATS_FILE"] = child_stats_path(settings.stats_file, index) if settings.stats_file else ""
        children.append(env)
    return children


def child_stats_path(stats_file: str, index: int) -> str:
    return f"{stats_file}.p{index}"


def worst_exit_code(codes: list[int]) -> int:
    """The exit code the supervisor reports: a signal death counts as 128 + signal, the highest wins."""
    return max((128 - code if code < 0 else code for code in codes), default=exit_codes.OK)


def merge_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """One stats document (telemetry.process_stats' keys) for all children's runs, plus each run's own."""
    jobs = sum(int(s.get("jobs", 0)) for s in stats)
    main_ms = sum(float(s.get("main_cpu_ms", 0.0)) for s in stats)
    startup_ms = sum(float(s.get("startup_cpu_ms", 0.0)) for s in stats)
    pre_ms = sum(float(s.get("preprocess_cpu_ms", 0.0)) for s in stats)
    completed: dict[str, int] = {}
    for s in stats:
        for outcome, count in s.get("completed", {}).items():
            completed[outcome] = completed.get(outcome, 0) + int(count)
    return {
        "jobs": jobs,
        "completed": completed,
        "wall_s": max((float(s.get("wall_s", 0.0)) for s in stats), default=0.0),
        "main_cpu_ms": round(main_ms, 1),
        "startup_cpu_ms": round(startup_ms, 1),
        "preprocess_cpu_ms": round(pre_ms, 1),
        "cpu_ms_per_job": {
            "preprocess": round(pre_ms / jobs, 3) if jobs else None,
            "other": round((main_ms - startup_ms) / jobs, 3) if jobs else None,
        },
        "peak_rss_mb": max((float(s.get("peak_rss_mb", 0.0)) for s in stats), default=0.0),
        "children_peak_rss_mb": max((float(s.get("children_peak_rss_mb", 0.0)) for s in stats), default=0.0),
        "processes": stats,
    }


def die_with_supervisor() -> None:
    """In a child worker process, first thing: the kernel SIGKILLs it when its supervisor dies.

    Called after exec by the child itself (``fleet worker`` with ``SUPERVISOR_PID_ENV`` set), not as a
    ``preexec_fn``: code between fork and exec in the threaded supervisor (or a test runner holding gRPC
    threads) can deadlock or abort the child; after exec the child is single-threaded. A supervisor that
    died before the prctl took effect leaves the child with another parent: it exits at once.
    """
    supervisor_pid = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor_pid:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(supervisor_pid):
        raise SystemExit(exit_codes.FAILED)


@dataclasses.dataclass
class _Child:
    index: int
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    pid: int = 0
    ready: bool = False
    exit_codes: list[int] = dataclasses.field(default_factory=list)
    restarts: deque[float] = dataclasses.field(default_factory=deque)


class Supervisor:
    """Runs the children until every one has ended; ``stop`` drains them."""

    def __init__(
        self,
        settings: WorkerSettings,
        command: list[str] | None = None,
        *,
        max_restarts: int = MAX_RESTARTS,
        restart_delay_s: float = RESTART_DELAY_S,
    ) -> None:
        self._settings = settings
        self._command = command or [sys.executable, "-m", "worker.cli", "worker"]
        self._max_restarts = max_restarts
        self._restart_delay_s = restart_delay_s
        self._children = [_Child(i, env) for i, env in enumerate(child_environments(settings))]
        self._stopping: asyncio.Event | None = None
        #: The exit code of a child that kept exiting past the restart limit: the supervisor's own.
        self._failure_code: int | None = None
        self._all_ready = False
        self._stats: list[dict[str, Any]] = []

    @property
    def ready(self) -> bool:
        """Every child has logged ``worker started`` (since the supervisor started)."""
        return self._all_ready

    def exits(self) -> list[list[int]]:
        """Each child's exit codes, one per run, in order."""
        return [list(child.exit_codes) for child in self._children]

    def stop(self, reason: str) -> None:
        """Forward a drain to every running child (from a signal handler or a failure)."""
        assert self._stopping is not None
        if not self._stopping.is_set():
            log.info("draining worker processes", reason=reason, count=len(self._children))
        self._stopping.set()
        for child in self._children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)

    async def run(self) -> int:
        """Start every child, keep them running, return the worst exit code once all have ended."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name.lower())
        log.info(
            "starting worker processes",
            count=len(self._children),
            slots=[int(c.env["FLEET_PIPELINE_SLOTS"]) for c in self._children],
        )
        await asyncio.gather(*(self._keep_running(child) for child in self._children))
        self._write_stats()
        finals = [child.exit_codes[-1] for child in self._children if child.exit_codes]
        code = worst_exit_code(finals) if self._failure_code is None else self._failure_code
        exits = sum(len(child.exit_codes) for child in self._children)
        log.info("worker processes stopped", exit_code=code, count=exits)
        return code

    async def _keep_running(self, child: _Child) -> None:
        assert self._stopping is not None
        while True:
            code = await self._run_once(child)
            if self._stopping.is_set():
                return
            if code == exit_codes.OK:  # drained by its own trigger (preemption): drain the rest
                self.stop("worker process drained")
                return
            now = time.monotonic()
            while child.restarts and now - child.restarts[0] > RESTART_WINDOW_S:
                child.restarts.popleft()
            if len(child.restarts) >= self._max_restarts:
                log.error("worker process keeps exiting; stopping", pid=child.pid, exit_code=code)
                self._failure_code = worst_exit_code([code])
                self.stop("restart limit")
                return
            child.restarts.append(now)
            log.warning("worker process exited; restarting", pid=child.pid, exit_code=code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._restart_delay_s)
            if self._stopping.is_set():
                return

    async def _run_once(self, child: _Child) -> int:
        """Start the child, pass its output through, wait for its exit; returns the exit code."""
        env = {**os.environ, **child.env, SUPERVISOR_PID_ENV: str(os.getpid())}
        child.ready = False
        child.process = await asyncio.create_subprocess_exec(
            *self._command,
            env=env,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT_BYTES,
        )
        child.pid = child.process.pid
        assert self._stopping is not None
        if self._stopping.is_set():  # a signal arrived while it started
            child.process.send_signal(signal.SIGTERM)
        await self._pass_output(child, child.process)
        code = await child.process.wait()
        if code == -signal.SIGTERM and self._stopping.is_set():
            # the drain's SIGTERM reached a child still starting (before it installs its handler, so before
            # it leases any job): an orderly stop, not a failure
            code = exit_codes.OK
        child.exit_codes.append(code)
        self._collect_stats(child)
        return code

    async def _pass_output(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        out = sys.stderr.buffer  # the children log JSON lines to stderr (telemetry.configure_logging)
        stream = process.stderr
        while True:
            try:
                data = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:  # EOF: the child closed its stderr
                self._forward(child, out, end.partial)
                return
            except asyncio.LimitOverrunError as long_line:  # passed on in pieces, nothing dropped
                data = await stream.read(max(1, long_line.consumed))
            self._forward(child, out, data)

    def _forward(self, child: _Child, out: BinaryIO, data: bytes) -> None:
        out.write(data)
        out.flush()
        if not child.ready and READY_MARKER in data:
            child.ready = True
            self._note_ready()

    def _note_ready(self) -> None:
        if not self._all_ready and all(c.ready for c in self._children):
            self._all_ready = True
            log.info(
                "worker processes started",
                count=len(self._children),
                pid=[c.process.pid for c in self._children if c.process is not None],
            )

    def _collect_stats(self, child: _Child) -> None:
        path = child.env["FLEET_STATS_FILE"]
        if not path:
            return
        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="utf-8") as handle:
                self._stats.append(json.load(handle))
            os.unlink(path)

    def _write_stats(self) -> None:
        if self._settings.stats_file:
            telemetry.write_stats(merge_stats(self._stats), self._settings.stats_file)


async def run_supervisor(settings: WorkerSettings) -> int:
    """``fleet worker`` with ``worker_processes`` > 1: the exit code."""
    telemetry.configure_logging(settings.log_level)
    return await Supervisor(settings).run()
