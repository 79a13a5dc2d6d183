"""The bench's main-thread CPU profile: C functions' time goes to their Python callers' groups."""

from __future__ import annotations

import cProfile
import json
import pstats
import time

from worker.dev.harness import cpu_profile


def _encode_a_lot() -> None:
    """json's C encoder called from here (a test file: 'other')."""
    document = {"values": list(range(2000))}
    for _ in range(200):
        json.dumps(document)


def test_the_json_encoder_s_time_goes_to_the_caller_s_group_not_to_json_alone() -> None:
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    _encode_a_lot()
    profiler.disable()
    summary = cpu_profile.summarise(pstats.Stats(profiler))
    groups = summary["groups_s"]
    # json.dumps's Python part is json's; the C encoder it calls is attributed to json (its caller)
    assert groups.get("json", 0.0) > 0
    assert cpu_profile.C_UNATTRIBUTED not in groups or groups[cpu_profile.C_UNATTRIBUTED] < groups["json"]
    assert abs(sum(groups.values()) - summary["total_s"]) < 1e-6  # every second is in one group
    assert any("iterencode" in label or "encode" in label for label, _calls, _s in summary["top_self"])


def test_code_files_fall_in_their_library_s_group() -> None:
    assert cpu_profile.category("/x/site-packages/grpc/aio/_call.py").startswith("grpc")
    assert cpu_profile.category("/usr/lib/python3.11/asyncio/base_events.py").startswith("asyncio")
    assert cpu_profile.category("/repo/worker/runtime/intake/settler.py") == "worker code"
    assert cpu_profile.category("/x/site-packages/structlog/_base.py").startswith("logging")
    assert cpu_profile.category("/somewhere/else.py") == cpu_profile.OTHER


def test_the_report_gives_ms_per_job_when_told_the_jobs() -> None:
    summary = {"total_s": 1.0, "groups_s": {"json": 1.0}, "top_self": [], "top_cumulative_worker": []}
    text = cpu_profile.report_text(summary, {"MainThread": 2.0}, jobs=1000)
    assert "2.000 ms/job  MainThread" in text
    assert "1.000 ms/job  json" in text
