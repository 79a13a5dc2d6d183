"""``scripts/devstack up`` / ``status`` / ``down`` leave no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from worker.dev.devstack.tritonserver import REPO_ROOT

pytestmark = pytest.mark.integration

SCRIPT = REPO_ROOT / "scripts" / "devstack"
EXPECTED_ENV = {
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "TRITON_GRPC_URL",
    "TRITON_HTTP_URL",
    "FLEET_JOBS_TOPIC",
    "FLEET_RESULTS_TOPIC",
    "FLEET_DEAD_LETTER_TOPIC",
    "FLEET_INTERACTIVE_SUBSCRIPTION",
    "FLEET_BATCH_SUBSCRIPTION",
    "FLEET_DEAD_LETTER_SUBSCRIPTION",
    "FLEET_DEAD_LETTER_HANDLER_SUBSCRIPTION",
    "FLEET_INPUT_BUCKET",
    "FLEET_RESULTS_BUCKET",
    "FLEET_PUBSUB_ADMIN_URL",
    "FLEET_GCS_ADMIN_URL",
    "FLEET_MODEL_NAMES",  # what tritonserver serves, from the packages (FLEET_MODELS_DIR)
    "FLEET_MODELS_DIR",  # the packages the generated repository came from: the worker loads the same
}


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PUBSUB_EMULATOR_HOST"}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=240, env=env, check=False
    )


def test_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    work = str(tmp_path / "stack")
    started = time.monotonic()
    up = run("up", "--work-dir", work)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        assert time.monotonic() - started < 60
        env_lines = (tmp_path / "stack" / "env").read_text().splitlines()
        assert {line.split("=", 1)[0].removeprefix("export ") for line in env_lines} == EXPECTED_ENV
        status = run("status", "--work-dir", work, "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["up"] is True
        pids = [svc["pid"] for svc in report["services"].values()]
        assert len(pids) == 3 and all(_group_members(pid) for pid in pids)
    finally:
        down = run("down", "--work-dir", work)
    assert down.returncode == 0, down.stdout + down.stderr
    assert all(_group_members(pid) == [] for pid in pids)
    assert run("status", "--work-dir", work).returncode == 1
    assert not (tmp_path / "stack" / "env").exists()
