"""Capacity projection: the jobs/s each stage of a worker VM allows, per GCE machine type, and the defaults.

Three stages bound one VM's throughput (docs/performance.md "Capacity projection"):

- **decode cores**: the vCPUs left after the reserved ones (tritonserver's CPU side, the OS) and the
  worker's main loop(s), each doing ``decode_ms`` of CPU per drawing. The main loop's CPU grows with the
  rate, so the bound solves ``r = (vcpus - reserved - r * main_ms / 1000) * 1000 / decode_ms``, i.e.
  ``r = (vcpus - reserved) * 1000 / (decode_ms + main_ms)``;
- **main loop**: one asyncio process per worker does ``main_ms`` per job: ``1000 / main_ms`` jobs/s each;
- **GPU**: a published TensorRT throughput of a reference network (MLPerf ResNet-50 offline) scaled by
  the ratio of multiply-accumulates per image, by the precision the engine runs in, and by an assumed
  efficiency for a network this small (see ``GpuScaling``).

The CPU figures are inputs (``CpuCosts``), not constants: the decoder and the main loop are being sped
up, and the table is recomputed from whatever figures are passed
(``python -m worker.dev.capacity --decode-ms 6 --main-ms 1.5``). The fleet simulator takes its service
rate per VM from ``projection_for(machine_type)`` (``worker.dev.fleet_simulator.config``).

The autoscaler's batch assignment follows the rate too (``backlog_per_vm``): one VM per the messages a VM
clears in the time a new VM takes to come up, so the group grows only by VMs that would finish work the
running ones could not.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from worker.models.drawing_analyzer import model_spec

#: MACs of ResNet-50 v1.5 at 224 x 224 (the MLPerf reference network): 4.09 G multiply-accumulates
#: (He et al. 2015 quote 3.8-4.1 "FLOPs" meaning MACs; torchvision's model card lists 4.09 GFLOPS = MACs).
RESNET50_MACS = 4.09e9


@dataclass(frozen=True)
class Gpu:
    """One GPU model and its published TensorRT throughput on the reference network."""

    name: str
    resnet50_offline_per_s: float  # MLPerf Inference closed, ResNet-50 v1.5 offline, samples/s, 1 GPU
    source: str


L4 = Gpu(
    "NVIDIA L4",
    13157.8,
    "MLPerf Inference v3.0 closed, NVIDIA, L4x1_TRT, resnet50 Offline: 13,157.8 samples/s (INT8, TensorRT) "
    "https://github.com/mlcommons/inference_results_v3.0/blob/main/closed/NVIDIA/results/L4x1_TRT/"
    "resnet50/Offline/performance/run_1/mlperf_log_summary.txt",
)
A100 = Gpu(
    "NVIDIA A100 40GB",
    42379.3,
    "MLPerf Inference v3.0 closed, NVIDIA, DGX-A100_A100-SXM-80GBx1_TRT, resnet50 Offline: 42,379.3 "
    "samples/s (INT8, TensorRT; the 80 GB part: a2-highgpu-1g carries the 40 GB SXM4, same SMs and clocks, "
    "1.6 vs 2.0 TB/s) https://github.com/mlcommons/inference_results_v3.0/blob/main/closed/NVIDIA/results/"
    "DGX-A100_A100-SXM-80GBx1_TRT/resnet50/Offline/performance/run_1/mlperf_log_summary.txt",
)

#: Spot / on-demand for g2-standard-4 in the simulator's price inputs ($0.28 / $0.7068), applied to every
#: type: an assumption (spot prices move daily, 60-91 % below on-demand).
SPOT_FRACTION = 0.28 / 0.7068
PRICE_SOURCE = (
    "on-demand us-central1 list prices, approximate as of 2025-06, not fetched live "
    "(cloud.google.com/compute/vm-instance-pricing); spot = on-demand x 0.396 (the simulator's g2-standard-4 "
    "ratio; cloud.google.com/spot-vms/pricing)"
)


@dataclass(frozen=True)
class VmType:
    """A GCE machine type with one GPU: vCPUs, memory and its on-demand price."""

    name: str
    vcpus: int
    memory_gb: int
    gpu: Gpu
    on_demand_per_h: float

    @property
    def spot_per_h(self) -> float:
        return round(self.on_demand_per_h * SPOT_FRACTION, 4)


VM_TYPES: tuple[VmType, ...] = (
    VmType("g2-standard-4", 4, 16, L4, 0.7068),
    VmType("g2-standard-8", 8, 32, L4, 0.8536),
    VmType("g2-standard-12", 12, 48, L4, 1.0004),
    VmType("a2-highgpu-1g", 12, 85, A100, 3.6731),
)


@dataclass(frozen=True)
class CpuCosts:
    """CPU per job on this project's worker, and the vCPUs kept for everything but the worker."""

    decode_ms: float = 12.3
    main_ms: float = 4.98
    reserved_vcpus: float = 1.0
    source: str = (
        "decode + preprocess 12.3: docs/performance.md 'Decoders', the adopted libpng path on A4 150-dpi PNG "
        "drawings (`make bench-decode` at eeb36b3, process_time medians, +-20 %); main process 4.98: "
        "Session 4 (issue 15) `make bench` worker CPU ms/job 'other' median after ebd0774 (+-30 %); reserved "
        "1 vCPU for tritonserver's gRPC/CUDA host threads and the OS (assumption)"
    )


@dataclass(frozen=True)
class GpuScaling:
    """From the reference network's throughput to this model's: MAC ratio x precision x efficiency.

    ``precision_factor`` 0.5: MLPerf runs ResNet-50 in INT8; the engine here is FP16 unless the parity
    gate accepts INT8, and dense FP16 tensor throughput is half of INT8 on Ampere and Ada.
    ``efficiency`` 0.1: a 62 M-MAC network at batch 16 does not fill the GPU the way ResNet-50 at large
    batch does (short kernels, launch and copy overhead, 147 KB of FP32 input per image over gRPC);
    an assumption, and the weakest input of the table.
    """

    model_macs: float
    precision_factor: float = 0.5
    efficiency: float = 0.1

    def infer_per_s(self, gpu: Gpu) -> float:
        return (
            gpu.resnet50_offline_per_s
            * RESNET50_MACS
            / self.model_macs
            * self.precision_factor
            * self.efficiency
        )


@dataclass(frozen=True)
class Projection:
    """What each stage of one VM allows, the stage that saturates first, and the sizing that follows."""

    machine_type: str
    vcpus: int
    gpu: str
    decode_jobs_per_s: float
    main_loop_jobs_per_s_per_process: float
    gpu_infer_per_s: float
    worker_processes: int  # processes needed so the main loops do not bound the VM (capped at the max)
    jobs_per_s: float  # min over the stages with that many worker processes
    bottleneck: str  # "decode" | "main loop" | "gpu"
    preprocess_processes: int  # decode processes per worker process
    spot_per_h: float
    on_demand_per_h: float

    @property
    def spot_usd_per_million_jobs(self) -> float:
        return self.spot_per_h / (self.jobs_per_s * 3600.0) * 1e6


def conv_gemm_macs(onnx_path: Path | str) -> int:
    """Multiply-accumulates per image of the Conv, Gemm and MatMul nodes (batch 1, ONNX shape inference)."""
    import onnx  # noqa: PLC0415 - only the projection needs it
    from onnx import shape_inference  # noqa: PLC0415

    model = onnx.load(str(onnx_path))
    for tensor in model.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in (*model.graph.value_info, *model.graph.output, *model.graph.input)
    }
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            kernel = weights[node.input[1]]  # [out, in/group, kh, kw]
            out = shapes[node.output[0]]  # [1, out, h, w]
            total += math.prod(out[1:]) * math.prod(kernel[1:])
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in weights:
            total += math.prod(weights[node.input[1]])
    return total


@functools.cache
def drawing_analyzer_macs() -> int:
    """MACs per image of the bundled drawing_analyzer (62,113,536 for the committed ONNX)."""
    return conv_gemm_macs(model_spec.ONNX_PATH)


def project(vm: VmType, cpu: CpuCosts, gpu: GpuScaling, *, max_worker_processes: int) -> Projection:
    """The stages' jobs/s on ``vm`` and the sizing: worker processes up to ``max_worker_processes``."""
    decode = (vm.vcpus - cpu.reserved_vcpus) * 1000.0 / (cpu.decode_ms + cpu.main_ms)
    per_process = 1000.0 / cpu.main_ms
    gpu_rate = gpu.infer_per_s(vm.gpu)
    needed = max(1, math.ceil(min(decode, gpu_rate) / per_process - 1e-9))
    processes = min(needed, max_worker_processes)
    stages = {"decode": decode, "main loop": processes * per_process, "gpu": gpu_rate}
    bottleneck = min(stages, key=lambda name: stages[name])
    rate = stages[bottleneck]
    # Decode processes: the cores left at that rate, rounded up (the batch decode processes are niced,
    # so a little oversubscription costs the main loop nothing), split over the worker processes.
    decode_cores = rate * cpu.decode_ms / 1000.0
    preprocess = max(1, math.ceil(decode_cores / processes - 1e-9))
    return Projection(
        machine_type=vm.name,
        vcpus=vm.vcpus,
        gpu=vm.gpu.name,
        decode_jobs_per_s=round(decode, 1),
        main_loop_jobs_per_s_per_process=round(per_process, 1),
        gpu_infer_per_s=round(gpu_rate, -2),
        worker_processes=processes,
        jobs_per_s=round(rate, 1),
        bottleneck=bottleneck,
        preprocess_processes=preprocess,
        spot_per_h=vm.spot_per_h,
        on_demand_per_h=vm.on_demand_per_h,
    )


#: Worker processes one VM runs today: `fleet worker` is one process per VM (no FLEET_WORKER_PROCESSES yet).
DEPLOYED_WORKER_PROCESSES = 1


#: Seconds from "the MIG creates a VM" to "its worker pulls" with the Packer image: the simulator's baked
#: boot timeline (VM + OS 45, first reads of the disk's image blocks 60, docker start 5, worker image pull 15,
#: engines from the cache 10, Triton model load 30, worker ready 10; docs/capacity.md, docs/deploy.md);
#: tests/dev/test_capacity.py keeps it equal to ``fleet_simulator.config.BootTimeline().total_s``.
NEW_VM_READY_S = 175.0

#: Interactive lane: a small assignment, so any interactive backlog brings a VM at the next evaluation and a
#: flood of them the group; the lane is latency-bound, and its traffic small next to one VM's rate.
INTERACTIVE_BACKLOG_PER_VM = 10


def batch_backlog_per_vm(jobs_per_s: float, *, new_vm_ready_s: float = NEW_VM_READY_S) -> int:
    """Batch messages one VM is assigned: what it clears while a new VM comes up (rate x ready time).

    With N = ceil(backlog / assignment), the N VMs asked for clear the backlog in about the time a new one
    takes to start, so a VM is added only when the running ones could not finish before it arrives (a
    VM that arrives after the work is done is billed its boot and minimum for nothing). Two significant
    figures: the rate's inputs are +-20-30 %.
    """
    return max(1, int(float(f"{jobs_per_s * new_vm_ready_s:.2g}")))


def backlog_per_vm(projection: Projection, *, new_vm_ready_s: float = NEW_VM_READY_S) -> dict[str, int]:
    """``autoscaler_backlog_per_vm`` for a machine type: interactive small, batch from its projected rate."""
    return {
        "interactive": INTERACTIVE_BACKLOG_PER_VM,
        "batch": batch_backlog_per_vm(projection.jobs_per_s, new_vm_ready_s=new_vm_ready_s),
    }


def projections(
    cpu: CpuCosts | None = None,
    gpu: GpuScaling | None = None,
    *,
    max_worker_processes: int = DEPLOYED_WORKER_PROCESSES,
    vm_types: Sequence[VmType] = VM_TYPES,
) -> list[Projection]:
    """One projection per machine type (defaults: today's measured CPU figures, the bundled model)."""
    cpu = cpu or CpuCosts()
    gpu = gpu or GpuScaling(model_macs=drawing_analyzer_macs())
    return [project(vm, cpu, gpu, max_worker_processes=max_worker_processes) for vm in vm_types]


def cheapest(rows: Sequence[Projection]) -> Projection:
    """The machine type with the lowest spot cost per job at its projected rate."""
    return min(rows, key=lambda row: row.spot_usd_per_million_jobs)


def projection_for(machine_type: str, **kwargs: Any) -> Projection:
    """The projection of one machine type; ``ValueError`` naming the known ones otherwise."""
    for row in projections(**kwargs):
        if row.machine_type == machine_type:
            return row
    known = ", ".join(vm.name for vm in kwargs.get("vm_types", VM_TYPES))
    raise ValueError(f"no capacity figures for machine type {machine_type!r} (known: {known})")


def markdown_table(rows: Sequence[Projection]) -> str:
    head = (
        "| machine type | vCPUs | GPU | decode cores allow | main loop allows (per process) | GPU allows "
        "(infer/s) | worker processes | projected jobs/s | saturates first | preprocess_processes "
        f"| spot $/h | spot $ per 1M jobs | batch backlog per VM (x {NEW_VM_READY_S:.0f} s) |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r.machine_type} | {r.vcpus} | {r.gpu} | {r.decode_jobs_per_s:,.0f} | "
            f"{r.main_loop_jobs_per_s_per_process:,.0f} | {r.gpu_infer_per_s:,.0f} | {r.worker_processes} | "
            f"{r.jobs_per_s:,.0f} | {r.bottleneck} | {r.preprocess_processes} | {r.spot_per_h:.4f} | "
            f"{r.spot_usd_per_million_jobs:.3f} | {batch_backlog_per_vm(r.jobs_per_s):,} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.dev.capacity``: the table for given CPU figures, then one JSON line."""
    parser = argparse.ArgumentParser(prog="capacity", description=__doc__.splitlines()[0])
    defaults = CpuCosts()
    parser.add_argument("--decode-ms", type=float, default=defaults.decode_ms, help="decode CPU ms/drawing")
    parser.add_argument("--main-ms", type=float, default=defaults.main_ms, help="main-process CPU ms/job")
    parser.add_argument("--reserved-vcpus", type=float, default=defaults.reserved_vcpus)
    parser.add_argument("--gpu-efficiency", type=float, default=GpuScaling(1.0).efficiency)
    parser.add_argument("--max-worker-processes", type=int, default=DEPLOYED_WORKER_PROCESSES)
    args = parser.parse_args(argv)
    cpu = replace(
        defaults, decode_ms=args.decode_ms, main_ms=args.main_ms, reserved_vcpus=args.reserved_vcpus
    )
    if (args.decode_ms, args.main_ms) != (defaults.decode_ms, defaults.main_ms):
        cpu = replace(cpu, source="command line")
    gpu = GpuScaling(model_macs=drawing_analyzer_macs(), efficiency=args.gpu_efficiency)
    rows = projections(cpu, gpu, max_worker_processes=args.max_worker_processes)
    print(
        f"CPU: decode {cpu.decode_ms} ms, main {cpu.main_ms} ms, reserved {cpu.reserved_vcpus} vCPU "
        f"({cpu.source})"
    )
    print(
        f"GPU: {gpu.model_macs:,.0f} MACs/image, precision x{gpu.precision_factor}, "
        f"efficiency x{gpu.efficiency}"
    )
    print(markdown_table(rows))
    best = cheapest(rows)
    print(f"cheapest per job: {best.machine_type} ({best.spot_usd_per_million_jobs:.3f} $ per 1M jobs, spot)")
    print(json.dumps([asdict(row) for row in rows], separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
