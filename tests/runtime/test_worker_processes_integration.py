"""Several worker processes per VM (``FLEET_WORKER_PROCESSES``) on the local stack.

One ``fleet worker`` supervisor with two child worker processes, on a private copy of the fleet's topics
and lanes (the fixtures of test_worker_integration.py): the children split the slots, answer every job
exactly once between them, and a SIGTERM to the supervisor drains both without losing a job.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from worker.dev import harness

from .test_worker_integration import (
    RESULTS_PREFIX,
    Run,
    _wait_for,
    inputs,
    log_lines,
    log_tail,
    make_run,
    wait_exit,
)

pytestmark = pytest.mark.integration
__all__ = ["inputs", "make_run"]  # fixtures, used by name

PROCESSES = {"FLEET_WORKER_PROCESSES": "2", "FLEET_PIPELINE_SLOTS": "8", "FLEET_PREPROCESS_PROCESSES": "2"}
JOBS = 60


def start_supervisor(run: Run, name: str, **extra_env: str) -> harness.ManagedProcess:
    """A ``fleet worker`` with two worker processes, returned once both children are ready."""
    slot = run.worker(name, **PROCESSES, **extra_env)
    _wait_for(
        lambda: (
            any(line.get("message") == "worker processes started" for line in log_lines(slot))
            or (slot.process is not None and slot.process.poll() is not None)
        ),
        f"{name}'s worker processes did not start",
        timeout_s=120,
    )
    assert slot.process is not None and slot.process.poll() is None, log_tail(slot)
    return slot


def results(run: Run, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Each job's one result document (one object per job, none for another key), all succeeded."""
    assert sorted(run.result_objects()) == sorted(f"{RESULTS_PREFIX}{run.job_id(k)}.json" for k in keys)
    documents = {key: run.result(key)[0] for key in keys}
    assert all(document["status"] == "succeeded" for document in documents.values()), documents
    return documents


@pytest.mark.timeout(120)
def test_two_worker_processes_split_the_slots_and_answer_each_job_once(
    make_run: Callable[..., Run], inputs: list[str]
) -> None:
    # Given a supervisor running two worker processes on 8 slots
    run = make_run()
    supervisor = start_supervisor(run, "sup")
    started = [line for line in log_lines(supervisor) if line.get("message") == "worker started"]
    assert len({line["pid"] for line in started}) == 2
    assert [line["slots"] for line in started] == [4, 4]  # the VM still leases at most 8
    # When 60 jobs are published
    keys = [f"j{i:02d}" for i in range(JOBS)]
    run.publish([run.job(key, inputs[i % len(inputs)]) for i, key in enumerate(keys)])
    run.wait(keys)
    time.sleep(0.5)  # a second notification would have arrived by now
    # Then every job has one notification and one result object, answered by both processes
    notes = run.collector.snapshot()
    assert all(len(notes[key]) == 1 and notes[key][0].status == "succeeded" for key in keys)
    pids = {key: document["worker"]["pid"] for key, document in results(run, keys).items()}
    assert len(set(pids.values())) == 2, f"results name pids {set(pids.values())}"
    assert supervisor.process is not None and supervisor.process.pid not in pids.values()


@pytest.mark.timeout(150)
def test_a_sigtermed_supervisor_drains_both_processes_and_no_job_is_lost(
    make_run: Callable[..., Run], inputs: list[str], gcs_faults: Any
) -> None:
    # Given two worker processes holding leases on slow jobs (GCS answers after 1 s)
    run = make_run(time_divisor=5)
    drain_budget_s = 0.3  # shorter than a job takes: the leases are given back
    supervisor = start_supervisor(run, "first", FLEET_DRAIN_BUDGET_S=str(drain_budget_s))
    keys = [f"k{i:02d}" for i in range(JOBS)]
    gcs_faults.set_faults(latency_ms=1000)
    run.publish([run.job(key, inputs[i % len(inputs)]) for i, key in enumerate(keys)])
    _wait_for(lambda: run.sub_stats()["outstanding"] >= 6, "the workers leased nothing", timeout_s=60)
    # When the supervisor is SIGTERM'd mid-run
    assert supervisor.signal(signal.SIGTERM)
    code = wait_exit(supervisor, drain_budget_s + 15)
    gcs_faults.clear_faults()
    # Then both children drained and exited 0, and so did the supervisor, with no lease kept
    assert code == 0, log_tail(supervisor)
    lines = log_lines(supervisor)
    drained = [line for line in lines if line.get("message") == "worker stats"]
    assert [(line["exit_code"], line["reason"]) for line in drained] == [(0, "sigterm"), (0, "sigterm")]
    stopped = [line for line in lines if line.get("message") == "worker processes stopped"]
    assert [(line["exit_code"], line["count"]) for line in stopped] == [(0, 2)]  # two exits, no restart
    assert run.sub_stats()["outstanding"] == 0
    # and after a restart of the worker every job is answered, exactly once
    second = start_supervisor(run, "second")
    notes = run.wait(keys, timeout_s=90)
    assert all(notes[key][0].status == "succeeded" for key in keys)
    documents = results(run, keys)
    given_back = [
        key
        for key, document in documents.items()
        if document["worker"]["instance"] == second.name and document["delivery_attempt"] > 1
    ]
    assert given_back, "no job leased by the drained processes was answered after the restart"
