"""What a report says about where it ran: CPU seconds of process groups, the machine, the commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return children


class CpuProbe:
    """CPU seconds of named process groups between ``start()`` and ``stop()`` (from /proc)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before: dict[str, float] = {}

    @staticmethod
    def _own(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, no children

    def _sample(self) -> dict[str, float]:
        return {name: sum(self._own(pid) for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        """Take the first sample."""
        self.before = self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds each group used since ``start()``."""
        after = self._sample()
        return {name: after[name] - self.before.get(name, 0.0) for name in after}


def machine() -> dict[str, Any]:
    """CPU model, cores, Python, system and the 1-minute load average (a shared machine's noise)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "gpu": None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def git_commit() -> str:
    """The short commit of the working directory's checkout, or ``unknown``."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
