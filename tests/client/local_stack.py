"""Helpers of the client's integration tests: the ``fleet`` CLI as a user runs it, and fleet workers.

The workers are real ``fleet worker`` processes serving the session's local stack (tests/conftest.py
``stack``); each module that needs them starts its own through ``serving_workers``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.client import sdk
from worker.dev.drawings import render_drawing

WARM_UP_SIZE = (320, 226)


def fleet(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``fleet`` CLI as a user would, with the stack's environment."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=timeout_s,
        check=False,
    )


def run_id() -> str:
    return uuid.uuid4().hex[:8]


@contextmanager
def serving_workers(stack: Any, logs: Path, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` fleet workers on the stack, proven to answer jobs; stopped (log tails printed) on exit."""
    processes = []
    for index in range(count):
        env = {
            **os.environ,
            **stack.env,
            "FLEET_INSTANCE_NAME": f"client-test-worker-{index}",
            "FLEET_WATCH_METADATA": "false",
            "FLEET_LOG_LEVEL": "WARNING",
        }
        with (logs / f"worker-{index}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "worker.cli", "worker"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        # Workers wait for Triton and warm up: one answered job each way proves they are serving.
        (logs / "warm-up.png").write_bytes(render_drawing(99, size=WARM_UP_SIZE)[0])
        with sdk.FleetClient(sdk.ClientSettings.from_env()) as client:
            jobs = [
                sdk.JobRequest(f"warm-up-{run_id()}-{i}", str(logs / "warm-up.png")) for i in range(count)
            ]
            outcomes = client.wait(client.submit(jobs).job_ids, timeout_s=180)
        assert all(o.succeeded for o in outcomes.values()), outcomes
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for index, process in enumerate(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            print(f"worker {index} log tail:\n" + (logs / f"worker-{index}.log").read_text()[-2000:])
