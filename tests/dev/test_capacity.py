"""worker.dev.capacity: projection arithmetic on given inputs, the model MACs, the defaults that follow
(terraform's machine type, preprocess processes, batch assignment; the simulator's service and policies)."""

from __future__ import annotations

import pytest

from worker.dev import capacity
from worker.dev.capacity import CpuCosts, Gpu, GpuScaling, VmType, project
from worker.dev.fleet_simulator.autoscaler import signal_recommendation
from worker.dev.fleet_simulator.config import BootTimeline, Prices, ServiceModel
from worker.dev.fleet_simulator.scenario import AGREED_DEFAULTS, build_policies
from worker.dev.fleet_simulator.terraform import (
    DEFAULT_VARIABLES_PATH,
    load_deployed_settings,
    variable_defaults,
)
from worker.shared.resources import load_resources

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


def test_terraform_machine_type_is_among_the_cheapest_projected() -> None:
    """The deployed type costs at most 10 % more per job than the cheapest projection: the CPU inputs are
    measured on a shared machine to +-20-30 %, so a closer race is not a reason to move every VM."""
    variables = variable_defaults(DEFAULT_VARIABLES_PATH)
    rows = capacity.projections()
    deployed = next(row for row in rows if row.machine_type == variables["machine_type"])
    best = capacity.cheapest(rows)
    assert deployed.spot_usd_per_million_jobs <= 1.10 * best.spot_usd_per_million_jobs, (deployed, best)


def test_terraform_preprocess_processes_follow_the_projection() -> None:
    variables = variable_defaults(DEFAULT_VARIABLES_PATH)
    rows = capacity.projections()
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


def test_batch_assignment_is_what_one_vm_clears_while_a_new_one_comes_up() -> None:
    assert capacity.batch_backlog_per_vm(200.8, new_vm_ready_s=90.0) == 18_000  # 18,072 to 2 figures
    assert capacity.batch_backlog_per_vm(5.0, new_vm_ready_s=90.0) == 450
    assert capacity.batch_backlog_per_vm(0.001, new_vm_ready_s=90.0) == 1
    row = project(_vm(8), CpuCosts(10.0, 4.0, 1.0), NO_SCALING, max_worker_processes=1)  # 250 jobs/s
    assert capacity.backlog_per_vm(row, new_vm_ready_s=40.0) == {"interactive": 10, "batch": 10_000}


@pytest.mark.parametrize("running_vms", [1, 3, 7])
def test_the_assignment_adds_a_vm_only_for_work_the_running_ones_cannot_finish_before_it_serves(
    running_vms: int,
) -> None:
    rate, ready_s = 200.0, 90.0  # 18,000: exact at two significant figures
    assignment = capacity.batch_backlog_per_vm(rate, new_vm_ready_s=ready_s)
    cleared_before_a_new_vm = running_vms * rate * ready_s
    # a backlog the running VMs clear before a new VM would serve asks for no more VMs than are running
    assert signal_recommendation(cleared_before_a_new_vm, assignment) == running_vms
    # one more job than that is work the running VMs cannot finish in time: one more VM
    assert signal_recommendation(cleared_before_a_new_vm + 1, assignment) == running_vms + 1


def test_new_vm_ready_time_is_the_simulators_baked_boot() -> None:
    assert BootTimeline(baked=True).total_s == capacity.NEW_VM_READY_S


def test_terraform_backlog_per_vm_and_the_simulators_policies_follow_the_projection() -> None:
    settings = load_deployed_settings()
    row = capacity.projection_for(settings.machine_type)
    expected = capacity.backlog_per_vm(row)
    assert variable_defaults(DEFAULT_VARIABLES_PATH)["autoscaler_backlog_per_vm"] == expected
    assert AGREED_DEFAULTS.backlog_per_vm == expected  # the fallback without variables.tf
    service = ServiceModel.from_capacity(row)
    policies = build_policies(settings, load_resources(), service)
    batch = {s.lane: s.single_instance_assignment for s in policies["spot-schedules"].signals}["batch"]
    assert batch == expected["batch"]
    # the work-seconds policy assigns a VM the same work, in slot-seconds: rate x ready time x mean service
    (work,) = (s for s in policies["spot-work-seconds"].signals if s.kind == "work_seconds")
    assert work.single_instance_assignment == pytest.approx(
        row.jobs_per_s * capacity.NEW_VM_READY_S * service.mean_service_s
    )
