"""scripts/simulate: the table, the plot and the last-line JSON; inputs from the benchmark's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.dev.fleet_simulator.cli import main
from worker.dev.fleet_simulator.config import ServiceModel
from worker.dev.fleet_simulator.traces import from_csv


def test_bench_json_sets_throughput_and_shape(tmp_path: Path) -> None:
    bench = {"e2e_jobs_per_s": 40.0, "latency_ms": {"p50": 100.0, "p95": 200.0, "p99": 300.0}}
    path = tmp_path / "bench.log"
    path.write_text("table...\n" + json.dumps(bench) + "\n", encoding="utf-8")
    model = ServiceModel.from_bench_file(path)
    assert model.throughput_per_vm == pytest.approx(40.0)
    assert model.slots == 4
    assert model.sigma == pytest.approx(0.4214, abs=1e-3)


def test_csv_trace(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(
        "timestamp,priority\n2025-06-02T09:00:10Z,interactive\n2025-06-02T09:00:00Z,batch\n", "utf-8"
    )
    trace = from_csv(path, ("interactive", "batch"))
    assert trace.times_s.tolist() == [0.0, 10.0]
    assert trace.lanes.tolist() == [1, 0]


def test_simulate_prints_table_plot_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "plot.png"
    code = main(["--days", "1", "--batch-jobs", "3000", "--plot", str(plot), "--seed", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert any(line.startswith("| always-on-on-demand |") for line in out)
    runs = json.loads(out[-1])
    assert [r["policy"] for r in runs][:3] == ["always-on-on-demand", "spot-scale-to-zero", "spot-schedules"]
    for run in runs:
        assert {
            "cost_per_1k_jobs",
            "p95_time_to_result_s",
            "vm_hours",
            "idle_vm_hours",
            "jobs_redone",
        } <= set(run)
        assert set(run["p95_time_to_result_s"]) == {"interactive", "batch"}
    assert runs[0]["cost_per_1k_jobs"] > runs[2]["cost_per_1k_jobs"]
    assert plot.stat().st_size > 10_000


def test_unknown_policy_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--days", "1", "--policies", "nope", "--no-plot"]) == 2
    assert "unknown policies" in capsys.readouterr().err
