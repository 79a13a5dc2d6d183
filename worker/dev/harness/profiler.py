"""A sampling profiler for the worker: all threads, since py-spy cannot attach on this machine."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.dev.harness.cpu_profile import thread_cpu_seconds

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
        self.cpu_by_tid.update(thread_cpu_seconds())

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
