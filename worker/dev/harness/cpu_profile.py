"""A CPU profile of the worker's main thread (cProfile on ``time.thread_time``), by library and function.

The all-threads sampler (``profiler.py``) can only look at the event loop when that thread lets go of
the GIL, i.e. when it is idle, so it undercounts the loop's work (93 busy samples for 2.06 CPU s in one
run). cProfile on the thread's own CPU clock counts every Python call the loop makes and nothing it
waits for. Its per-call cost inflates call-heavy code, so read the shares, not the absolute figures.

Self time is grouped by where the code lives (``CATEGORIES``); the self time of a C function (a
``builtins`` entry: ``json``'s encoder, ``pickle``, a socket send) goes to its callers' groups in
proportion to what each caller spent in it. Other threads' CPU (storage I/O threads, gRPC, the pool's
feeder) comes from ``/proc/self/task``, read every half second.
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import os
import pstats
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: (group, substrings of a code file's path), first match wins; what matches none is ``other``.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("import (start-up)", ("<frozen importlib", "importlib/", "<frozen zipimport")),
    ("logging (structlog)", ("/structlog/", "/logging/")),
    ("json", ("/json/",)),
    ("pubsub client (google api_core, proto-plus, protobuf)", ("/google/", "/proto/")),
    ("grpc (python side: aio channel, calls)", ("/grpc/",)),
    ("triton client", ("/tritonclient/",)),
    ("http (urllib3, http.client, email headers)", ("/urllib3/", "http/client.py", "/email/", "socket.py")),
    ("pool hand-off (multiprocessing, concurrent.futures, pickle)", ("/multiprocessing/", "/concurrent/")),
    ("asyncio (loop, tasks, futures, timers)", ("/asyncio/", "selectors.py", "contextlib.py")),
    ("numpy", ("/numpy/",)),
    ("worker code", ("/worker/",)),
    ("threading", ("threading.py", "queue.py")),
)
OTHER = "other"
#: Where a C function's own time goes when it has no caller with a file (attributed nowhere else).
C_UNATTRIBUTED = "C functions (no Python caller)"


def category(filename: str) -> str:
    """The group of a code file (``~`` is a C function: no group of its own)."""
    for name, needles in CATEGORIES:
        if any(needle in filename for needle in needles):
            return name
    return OTHER


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else filename
    return f"{short}:{line}({name})"


def summarise(stats: pstats.Stats) -> dict[str, Any]:
    """Self CPU seconds by group, the top functions by self and by cumulative time (worker code)."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps it untyped
    groups: dict[str, float] = {}
    for func, (_cc, _nc, self_s, _cum_s, callers) in table.items():
        if func[0] != "~":
            groups[category(func[0])] = groups.get(category(func[0]), 0.0) + self_s
            continue
        from_python = {caller: v[2] for caller, v in callers.items() if caller[0] != "~"}
        spent = sum(from_python.values())
        if spent <= 0:
            groups[C_UNATTRIBUTED] = groups.get(C_UNATTRIBUTED, 0.0) + self_s
            continue
        for caller, seconds in from_python.items():
            name = category(caller[0])
            groups[name] = groups.get(name, 0.0) + self_s * seconds / spent
    by_self = sorted(table.items(), key=lambda kv: -kv[1][2])[:30]
    ours = [kv for kv in table.items() if "/worker/" in kv[0][0] and "/dev/" not in kv[0][0]]
    by_cum = sorted(ours, key=lambda kv: -kv[1][3])[:30]
    return {
        "total_s": sum(v[2] for v in table.values()),
        "groups_s": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top_self": [(_label(f), v[1], v[2]) for f, v in by_self],
        "top_cumulative_worker": [(_label(f), v[1], v[3]) for f, v in by_cum],
    }


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of this process, by native thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


class ThreadCpu:
    """CPU seconds of every thread of this process by kind, read from /proc every ``interval_s``."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.cpu_by_tid: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profile-thread-cpu", daemon=True)

    def start(self) -> ThreadCpu:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.read()

    def read(self) -> None:
        names = {t.native_id: _kind(t.name) for t in threading.enumerate() if t.native_id is not None}
        for tid, seconds in thread_cpu_seconds().items():
            known = self.cpu_by_tid.get(tid, ("native (grpc core, ...)", 0.0))[0]
            self.cpu_by_tid[tid] = (names.get(tid, known), seconds)

    def stop(self) -> dict[str, float]:
        """CPU seconds by thread kind since the process started."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.read()
        out: dict[str, float] = {}
        for name, seconds in self.cpu_by_tid.values():
            out[name] = out.get(name, 0.0) + seconds
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _kind(name: str) -> str:
    """``gcs_3`` -> ``gcs``; ``ThreadPoolExecutor-0_1`` -> ``ThreadPoolExecutor``; keeps others."""
    base = name.rsplit("_", 1)[0] if "_" in name else name
    return base.split("-", 1)[0] if base.startswith(("ThreadPoolExecutor", "Thread")) else base


def report_text(summary: dict[str, Any], threads: dict[str, float], jobs: int | None = None) -> str:
    """The report as text; with ``jobs``, every figure also in ms per job."""

    def per_job(seconds: float) -> str:
        return f"{seconds * 1000 / jobs:8.3f} ms/job" if jobs else ""

    lines = ["CPU seconds by thread (/proc/self/task):"]
    lines += [f"  {s:8.2f} s {per_job(s)}  {name}" for name, s in threads.items()]
    lines.append(f"main thread, cProfile on thread_time: {summary['total_s']:.2f} s self time, by group:")
    lines += [f"  {s:8.3f} s {per_job(s)}  {name}" for name, s in summary["groups_s"].items()]
    lines.append("top functions by self time (calls, s):")
    lines += [f"  {s:8.3f} s {calls:8d}  {label}" for label, calls, s in summary["top_self"]]
    lines.append("worker functions by cumulative time (calls, s; a coroutine's resumptions are calls):")
    lines += [f"  {s:8.3f} s {calls:8d}  {label}" for label, calls, s in summary["top_cumulative_worker"]]
    return "\n".join(lines) + "\n"


def profile_main_thread(argv: Sequence[str], out_path: str) -> int:
    """Run ``fleet <argv>`` under cProfile (main thread CPU); write the text report and ``<out>.json``."""
    from worker import cli  # noqa: PLC0415 (the profiled program itself)

    threads = ThreadCpu().start()
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        return cli.main(list(argv))
    finally:
        profiler.disable()
        profiler.dump_stats(out_path + ".prof")  # for pstats / snakeviz
        summary = summarise(pstats.Stats(profiler))
        thread_cpu = threads.stop()
        Path(out_path).write_text(report_text(summary, thread_cpu), encoding="utf-8")
        Path(out_path + ".json").write_text(
            json.dumps({"summary": summary, "threads_s": thread_cpu}), encoding="utf-8"
        )
