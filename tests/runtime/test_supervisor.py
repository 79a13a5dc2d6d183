"""The worker-process supervisor (worker/runtime/supervisor.py): the split, the children's settings, exit
codes, merged stats, and its lifecycle with real child processes (a small Python script stands in for
``fleet worker``: it logs ``worker started`` and drains on SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from worker.runtime import supervisor
from worker.runtime.settings import WorkerSettings
from worker.shared import exit_codes

# A child: logs the ready line, then waits for SIGTERM and exits 0; FLEET_TEST_CHILD says otherwise:
# "crash" exits 3 at once, "p1-drains" makes p1 exit 0 by itself (as after a preemption notice).
CHILD = """
import os, signal, sys, time
mode, label = os.environ.get("FLEET_TEST_CHILD", ""), os.environ["FLEET_WORKER_PROCESS_LABEL"]
if mode == "crash":
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if mode == "long-line":
    sys.stderr.write("x" * (3 << 20) + "\\n")
sys.stderr.write('{"message": "worker started", "slots": %s}\\n' % os.environ["FLEET_PIPELINE_SLOTS"])
sys.stderr.flush()
if mode == "p1-drains" and label == "p1":
    sys.exit(0)
while True:
    time.sleep(0.05)
"""


def settings(**overrides: object) -> WorkerSettings:
    return WorkerSettings.from_env({}, **overrides)


def test_split_shares_the_total_and_gives_each_part_at_least_one() -> None:
    assert supervisor.split(32, 3) == [11, 11, 10]
    assert supervisor.split(3, 2) == [2, 1]
    assert supervisor.split(1, 2) == [1, 1]


def test_more_worker_processes_than_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="worker_processes must be <= pipeline_slots"):
        settings(worker_processes=5, pipeline_slots=4)
    with pytest.raises(ValueError, match="worker_processes must be >= 1"):
        settings(worker_processes=0)
    assert WorkerSettings.from_env({"FLEET_WORKER_PROCESSES": "3"}).worker_processes == 3


def test_children_split_the_slots_and_keep_every_other_setting() -> None:
    parent = settings(
        worker_processes=3,
        pipeline_slots=10,
        preprocess_processes=2,
        max_batch_delay_ms=2.5,
        allowed_input_buckets=("a", "b"),
        watch_metadata=False,
        stats_file="/tmp/s.json",
    )
    children = [WorkerSettings.from_env(env) for env in supervisor.child_environments(parent)]
    assert [c.pipeline_slots for c in children] == [4, 3, 3]  # 10 in all: the VM leases no more
    assert [c.preprocess_processes for c in children] == [1, 1, 1]
    assert [c.worker_process_label for c in children] == ["p0", "p1", "p2"]
    assert [c.stats_file for c in children] == ["/tmp/s.json.p0", "/tmp/s.json.p1", "/tmp/s.json.p2"]
    assert all(c.worker_processes == 1 for c in children)
    changed = {"pipeline_slots", "preprocess_processes", "worker_process_label", "stats_file"}
    for child in children:
        same = {k: v for k, v in vars(child).items() if k not in changed | {"worker_processes"}}
        assert same == {k: v for k, v in vars(parent).items() if k in same}


def test_the_worst_exit_code_wins_and_a_signal_death_counts_as_128_plus_the_signal() -> None:
    assert supervisor.worst_exit_code([0, 0]) == 0
    assert supervisor.worst_exit_code([0, exit_codes.TRITON_OUTAGE]) == exit_codes.TRITON_OUTAGE
    assert supervisor.worst_exit_code([exit_codes.TRITON_OUTAGE, -signal.SIGKILL]) == 128 + signal.SIGKILL
    assert supervisor.worst_exit_code([]) == 0


def test_merged_stats_add_the_children_and_recompute_the_per_job_figures() -> None:
    one = {"jobs": 10, "completed": {"succeeded": 10}, "main_cpu_ms": 150.0, "startup_cpu_ms": 50.0}
    two = {"jobs": 30, "completed": {"succeeded": 29, "failed": 1}, "main_cpu_ms": 250.0}
    merged = supervisor.merge_stats([{**one, "preprocess_cpu_ms": 40.0}, {**two, "preprocess_cpu_ms": 80.0}])
    assert merged["jobs"] == 40 and merged["completed"] == {"succeeded": 39, "failed": 1}
    assert merged["cpu_ms_per_job"] == {"preprocess": 3.0, "other": 8.75}  # (400 - 50) / 40
    assert len(merged["processes"]) == 2
    assert supervisor.merge_stats([])["cpu_ms_per_job"] == {"preprocess": None, "other": None}


def run_supervisor(sup: supervisor.Supervisor, *, stop_when_ready: bool, timeout_s: float = 30.0) -> int:
    async def main() -> int:
        task = asyncio.create_task(sup.run())
        if stop_when_ready:
            while not sup.ready:
                assert not task.done(), sup.exits()
                await asyncio.sleep(0.02)
            sup.stop("sigterm")
        return await asyncio.wait_for(task, timeout_s)

    return asyncio.run(main())


def child_supervisor(
    monkeypatch: pytest.MonkeyPatch, mode: str = "", **overrides: object
) -> supervisor.Supervisor:
    monkeypatch.setenv("FLEET_TEST_CHILD", mode)
    parent = settings(worker_processes=2, pipeline_slots=8, **overrides)
    return supervisor.Supervisor(parent, [sys.executable, "-c", CHILD], restart_delay_s=0.01)


def test_stop_drains_every_child_once_all_are_ready_and_the_stats_are_merged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stats = tmp_path / "stats.json"
    for index in range(2):  # what each child's worker would write on exit
        Path(supervisor.child_stats_path(str(stats), index)).write_text(json.dumps({"jobs": 2 + index}))
    sup = child_supervisor(monkeypatch, stats_file=str(stats))
    assert run_supervisor(sup, stop_when_ready=True) == 0
    assert sup.exits() == [[0], [0]]  # each started once, drained, not restarted
    assert json.loads(stats.read_text())["jobs"] == 5


def test_a_log_line_past_the_limit_is_passed_on_and_readiness_still_seen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    passed_on = tmp_path / "stderr"
    sup = child_supervisor(monkeypatch, "long-line")
    with passed_on.open("w", encoding="utf-8") as stderr, monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", stderr)  # the supervisor's stderr, and nobody else's
        assert run_supervisor(sup, stop_when_ready=True) == 0  # it stops once both were seen ready
    text = passed_on.read_text(encoding="utf-8")
    assert text.count("x") == 2 * (3 << 20) and text.count('"worker started"') == 2


def test_a_child_that_drains_by_itself_drains_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    sup = child_supervisor(monkeypatch, "p1-drains")
    assert run_supervisor(sup, stop_when_ready=False) == 0
    assert sup.exits() == [[0], [0]]


def test_a_crashing_child_is_restarted_up_to_the_limit_then_the_supervisor_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEET_TEST_CHILD", "crash")
    parent = settings(worker_processes=2, pipeline_slots=8)
    sup = supervisor.Supervisor(parent, [sys.executable, "-c", CHILD], max_restarts=2, restart_delay_s=0.01)
    code = run_supervisor(sup, stop_when_ready=False)
    # the first run and two restarts of one child, then the limit: its exit code is the supervisor's
    assert code == exit_codes.TRITON_OUTAGE
    assert [exit_codes.TRITON_OUTAGE] * 3 in sup.exits()


def test_a_child_whose_supervisor_is_gone_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(supervisor.SUPERVISOR_PID_ENV, str(os.getppid()))
    supervisor.die_with_supervisor()  # its parent is the supervisor: carries on
    monkeypatch.setenv(supervisor.SUPERVISOR_PID_ENV, str(os.getpid()))  # not its parent
    with pytest.raises(SystemExit):
        supervisor.die_with_supervisor()
