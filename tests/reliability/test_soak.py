"""The small chaos soak: >= 500 jobs through 3 workers under every fault kind; lost must be 0.

It runs ``scripts/chaos`` exactly as ``make chaos`` does (a private stack: its own emulators and
tritonserver, so killing Triton here disturbs nothing else), only smaller, and reads its last-line JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from worker.dev.harness import run_script

CHAOS = Path(__file__).resolve().parents[2] / "scripts" / "chaos"
JOBS = 500
BOUND_S = 200


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(BOUND_S + 120)
def test_small_soak_loses_nothing(tmp_path: Path) -> None:
    """Given 500 jobs and kill -9 every ~5 s plus all other faults; then lost 0, overwritten 0, in time."""
    command = [
        sys.executable,
        str(CHAOS),
        f"--jobs={JOBS}",
        "--workers=3",
        f"--seconds={BOUND_S}",
        "--rate=6",
        "--kill-every-s=5",
        f"--workdir={tmp_path}",
    ]
    done = run_script(command, timeout_s=BOUND_S + 100)
    lines = done.stdout.strip().splitlines()
    assert lines, f"chaos printed nothing; stderr:\n{done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    summary = "\n".join(lines[:-1])
    assert result["jobs"] == JOBS
    assert result["lost"] == 0, summary
    assert result["overwritten"] == 0, summary
    # and no job of the run's own (never reused) ids was taken for another: no false conflicts
    assert result["job_id_conflicts"] == 0, summary
    assert result["within_bound"], summary
    assert result["succeeded"] + result["failed"] + result["expired"] == JOBS, summary
    # The run must actually have been chaotic, or lost = 0 proves nothing.
    for kind in ("kill9", "stream_drop", "gcs_503_window", "duplicate_window"):
        assert result["faults"].get(kind, 0) >= 1, (kind, result["faults"])
    assert done.returncode == 0, summary
