"""A smoke run of ``scripts/bench`` (seconds, no thresholds) so the benchmark cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from worker.dev.harness import run_script

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
KEYS = {
    "raw_infer_per_s",
    "e2e_jobs_per_s",
    "naive_jobs_per_s",
    "e2e_over_raw",
    "e2e_over_naive",
    "latency_ms",
    "worker_cpu_ms_per_job",
    "preprocess_scaling_2x",
    "rss_mb",
    "decode_ceiling_jobs_per_s",
    "e2e_over_decode_ceiling",
    "preprocess_cpu_ms_per_page",
    "cpu_ms_per_job",
    "interactive_idle_p50_ms",
    "interactive_idle_p95_ms",
    "interactive_loaded_p50_ms",
    "interactive_loaded_p95_ms",
    "interactive_loaded_over_idle_p50",
    "commit",
    "machine",
}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(280)
def test_bench_smoke_prints_the_json_line(tmp_path: Path) -> None:
    done = run_script([sys.executable, str(BENCH), "--smoke", f"--workdir={tmp_path}"], timeout_s=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) >= KEYS
    assert set(result["latency_ms"]) == {"p50", "p95", "p99"}
    assert set(result["worker_cpu_ms_per_job"]) == {"preprocess", "other"}
    assert result["e2e_jobs_per_s"] > 0
    assert result["raw_infer_per_s"] > 0
    assert result["decode_ceiling_jobs_per_s"] > 0
    assert set(result["cpu_ms_per_job"]) >= {"preprocess", "main_process", "triton"}
    assert result["cpu_ms_per_job"]["main_process"] > 0
    # CPU per PDF page next to CPU per PNG, each measured (the PDF's render child counted)
    assert set(result["preprocess_cpu_ms_per_page"]) == {"png", "pdf_raster", "pdf_vector"}
    assert all(ms > 0 for ms in result["preprocess_cpu_ms_per_page"].values())
    assert 0 < result["interactive_idle_p50_ms"] <= result["interactive_idle_p95_ms"]
    assert 0 < result["interactive_loaded_p50_ms"] <= result["interactive_loaded_p95_ms"]
