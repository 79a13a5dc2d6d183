"""worker.dev.capacity: projection arithmetic on given inputs, the model MACs, the defaults that follow."""

from __future__ import annotations

import pytest

from worker.dev import capacity
from worker.dev.capacity import CpuCosts, Gpu, GpuScaling, VmType, project
from worker.dev.fleet_simulator.config import Prices, ServiceModel
from worker.dev.fleet_simulator.terraform import (
    DEFAULT_VARIABLES_PATH,
    load_deployed_settings,
    variable_defaults,
)

FAST_GPU = Gpu("test gpu", 1e6, "test")
SLOW_GPU = Gpu("slow gpu", 100.0, "test")
NO_SCALING = GpuScaling(model_macs=capacity.RESNET50_MACS, precision_factor=1.0, efficiency=1.0)


def _vm(vcpus: int, gpu: Gpu = FAST_GPU, price: float = 1.0) -> VmType:
    return VmType(f"vm-{vcpus}", vcpus, 16, gpu, price)


def test_decode_bound_solves_for_the_main_loop_cpu_at_that_rate() -> None:
    # 8 vCPUs, 1 reserved, 10 ms decode + 4 ms main: r = 7 x 1000 / 14 = 500 jobs/s
    row = project(_vm(8), CpuCosts(10.0, 4.0, 1.0), NO_SCALING, max_worker_processes=8)
    assert row.decode_jobs_per_s == pytest.approx(500.0)
    # and at 500 jobs/s the main loops use 2 cores, decode the other 5: the cores add up to 7
    assert pytest.approx(8 - 1) == 500 * 4.0 / 1000 + 500 * 10.0 / 1000
    assert row.main_loop_jobs_per_s_per_process == pytest.approx(250.0)
    assert row.worker_processes == 2  # 500 / 250
    assert row.bottleneck == "decode" and row.jobs_per_s == pytest.approx(500.0)
    assert row.preprocess_processes == 3  # 5 decode cores over 2 workers, rounded up


def test_one_worker_process_makes_the_main_loop_the_bound() -> None:
    row = project(_vm(8), CpuCosts(10.0, 4.0, 1.0), NO_SCALING, max_worker_processes=1)
    assert row.worker_processes == 1
    assert row.bottleneck == "main loop" and row.jobs_per_s == pytest.approx(250.0)
    assert row.preprocess_processes == 3  # 250 jobs/s x 10 ms = 2.5 cores


def test_gpu_bound_and_its_scaling() -> None:
    # 100 reference images/s x (4.09e9 / 4.09e8 MACs) x 0.5 x 0.1 = 50 infer/s
    scaling = GpuScaling(model_macs=capacity.RESNET50_MACS / 10, precision_factor=0.5, efficiency=0.1)
    assert scaling.infer_per_s(SLOW_GPU) == pytest.approx(50.0)
    row = project(_vm(12, SLOW_GPU), CpuCosts(10.0, 4.0, 1.0), scaling, max_worker_processes=4)
    assert row.bottleneck == "gpu" and row.jobs_per_s == pytest.approx(50.0)
    assert row.worker_processes == 1  # one main loop (250/s) keeps a 50/s GPU fed
    assert row.preprocess_processes == 1


def test_cheapest_is_lowest_spot_cost_per_job() -> None:
    cpu = CpuCosts(10.0, 4.0, 1.0)
    small = project(_vm(4, price=1.0), cpu, NO_SCALING, max_worker_processes=4)  # 214 jobs/s
    big = project(_vm(12, price=2.0), cpu, NO_SCALING, max_worker_processes=4)  # 786 jobs/s
    assert big.spot_usd_per_million_jobs < small.spot_usd_per_million_jobs
    assert capacity.cheapest([small, big]) is big
    capped = project(_vm(12, price=2.0), cpu, NO_SCALING, max_worker_processes=1)  # 250 jobs/s
    assert capacity.cheapest([small, capped]) is small


def test_drawing_analyzer_macs_from_the_committed_onnx() -> None:
    # 6 convolutions and 2 Gemm heads of the bundled model (shape inference at batch 1)
    assert capacity.drawing_analyzer_macs() == 62_113_536


def test_unknown_machine_type_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="g2-standard-8"):
        capacity.projection_for("n1-standard-1")


def test_terraform_defaults_follow_the_projection() -> None:
    variables = variable_defaults(DEFAULT_VARIABLES_PATH)
    rows = capacity.projections()
    assert variables["machine_type"] == capacity.cheapest(rows).machine_type
    by_type = {k.strip('"'): v for k, v in variables["preprocess_processes_by_machine_type"].items()}
    assert by_type == {row.machine_type: row.preprocess_processes for row in rows}


def test_simulator_service_rate_and_prices_come_from_the_table() -> None:
    row = capacity.projection_for(load_deployed_settings().machine_type)
    service = ServiceModel.from_capacity(row, job_latency_s=0.1)
    assert service.throughput_per_vm == pytest.approx(row.jobs_per_s)
    assert service.slots == round(row.jobs_per_s * 0.1)
    assert service.mean_service_s == pytest.approx(0.1, rel=0.05)
    prices = Prices.for_machine(row)
    assert (prices.spot_per_h, prices.on_demand_per_h) == (row.spot_per_h, row.on_demand_per_h)
