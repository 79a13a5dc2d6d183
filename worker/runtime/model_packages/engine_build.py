"""``fleet engine plan|reference|decide``: the steps of a VM's boot that need the packages' Python side.

The boot script (packer/files/bin/fleet-boot-models) runs these inside the worker image and does the rest
with ``gsutil`` and ``trtexec``:

- ``plan MODELS_DIR --gpu-name --compute-capability --trt-version`` prints one tab-separated line per
  package: name, version, ONNX path, engine cache key, trtexec's min/opt/max shapes. An engine runs only
  on the GPU architecture and TensorRT version it was built from, so the key is the model's digest (sha256
  of its ONNX) x the GPU x the TensorRT version: ``<model>/<digest>/<model>.<gpu>.sm<cc>.trt<x.y>.plan``
  (the GPU part named as scripts/build_trt_engine names it).
- ``reference PACKAGE_DIR --out WORK`` runs the package's reference inputs through its preprocess and
  its ONNX graph (onnxruntime): ``WORK/inputs/<tensor>.bin`` (raw, for ``trtexec --loadInputs``),
  ``WORK/reference.json``; prints trtexec's ``--shapes``/``--loadInputs`` arguments, one per line.
- ``decide PACKAGE_DIR --work WORK`` applies ``parity.choose_precision`` to the candidates measured so
  far (``WORK/<PRECISION>.json``, ``trtexec --exportOutput``): prints ``build <PRECISION> <flags...>``
  when the next precision (fastest first) has to be built and run, ``chosen <PRECISION>`` with
  ``WORK/decision.json`` (the provenance uploaded beside the engine) when one is within tolerance, and
  fails with the measured errors when none is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from worker.shared import exit_codes

#: trtexec flags that build an engine of each declared precision. FP32 turns TF32 off (on by default on
#: Ampere and newer); INT8 without a calibration cache gets placeholder scales, which the gate rejects.
TRTEXEC_FLAGS: Final[dict[str, tuple[str, ...]]] = {
    "INT8": ("--int8", "--fp16"),
    "FP16": ("--fp16",),
    "TF32": (),
    "FP32": ("--noTF32",),
}
REFERENCE_FILE: Final = "reference.json"
DECISION_FILE: Final = "decision.json"


class CandidateMissing(Exception):
    """The parity gate needs a precision that has not been built and run yet."""

    def __init__(self, precision: str) -> None:
        super().__init__(precision)
        self.precision = precision


def target_slug(gpu_name: str, compute_capability: str, trt_version: str) -> str:
    """``nvidia-l4.sm89.trt10.3``: the GPU and TensorRT part of an engine's name (build_trt_engine's)."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    if not re.fullmatch(r"\d+\.\d+", compute_capability.strip()):
        raise ValueError(f"compute capability {compute_capability!r} is not like 8.9")
    if not re.fullmatch(r"\d+(\.\d+)+", trt_version.strip()):
        raise ValueError(f"TensorRT version {trt_version!r} is not like 10.3.0")
    sm = "sm" + compute_capability.strip().replace(".", "")
    trt = "trt" + ".".join(trt_version.strip().split(".")[:2])
    return f"{gpu}.{sm}.{trt}"


def cache_key(name: str, digest: str, slug: str) -> str:
    """The engine's object name under the cache prefix; provenance is the same name with ``.json``."""
    return f"{name}/{digest}/{name}.{slug}.plan"


def _shapes(inputs: Sequence[Any], batch: int) -> str:
    return ",".join(f"{t.name}:{'x'.join(str(n) for n in (batch, *t.shape))}" for t in inputs)


def plan_lines(models_dir: Path, slug: str) -> list[str]:
    """One tab-separated line per package (see the module docstring)."""
    from worker.runtime.model_packages.loader import load_packages  # noqa: PLC0415

    lines = []
    for package in load_packages(models_dir).packages:
        d = package.declaration
        dynamic = [t.name for t in d.inputs if -1 in t.shape]
        if dynamic:
            raise ValueError(
                f"{d.name}: inputs {dynamic} have free dimensions; a TensorRT profile needs sizes"
            )
        fields = (
            d.name,
            d.version,
            str(package.model_path),
            cache_key(d.name, package.model_digest, slug),
            _shapes(d.inputs, 1),
            _shapes(d.inputs, d.preferred_batch_size),
            _shapes(d.inputs, d.max_batch_size),
        )
        lines.append("\t".join(fields))
    return lines


def write_reference(package_dir: Path, work: Path) -> list[str]:
    """The reference inputs as trtexec input files and the ONNX outputs; returns trtexec's arguments."""
    import numpy as np  # noqa: PLC0415

    from worker.runtime.model_packages import onnx_tools  # noqa: PLC0415
    from worker.runtime.model_packages.loader import load_package  # noqa: PLC0415

    package = load_package(package_dir)
    d = package.declaration
    examples = onnx_tools.reference_examples(package)[: d.max_batch_size]
    outputs = onnx_tools.run_graph(package.model_path, d, examples)
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    loads = []
    for tensor in d.inputs:
        path = work / "inputs" / f"{tensor.name}.bin"
        batch = np.stack([np.asarray(e[tensor.name], dtype=tensor.numpy_dtype) for e in examples])
        path.write_bytes(np.ascontiguousarray(batch).tobytes())
        loads.append(f"{tensor.name}:{path}")
    reference = [{name: np.asarray(v).tolist() for name, v in out.items()} for out in outputs]
    (work / REFERENCE_FILE).write_text(json.dumps(reference), encoding="utf-8")
    return [f"--shapes={_shapes(d.inputs, len(examples))}", f"--loadInputs={','.join(loads)}"]


def read_trtexec_outputs(path: Path, examples: int) -> list[dict[str, Any]]:
    """``trtexec --exportOutput`` JSON (``[{name, dimensions: "4x3", values: [...]}]``) split per example."""
    import numpy as np  # noqa: PLC0415

    per_example: list[dict[str, Any]] = [{} for _ in range(examples)]
    for entry in json.loads(path.read_text(encoding="utf-8")):
        dims = [int(n) for n in str(entry["dimensions"]).split("x")]
        values = np.asarray(entry["values"], dtype=np.float64).reshape(dims)
        if dims[0] != examples:
            raise ValueError(f"{path.name}: output {entry['name']} has batch {dims[0]}, expected {examples}")
        for index in range(examples):
            per_example[index][entry["name"]] = values[index]
    return per_example


def decide(package_dir: Path, work: Path) -> tuple[str, str]:
    """``("build", precision)`` for the next candidate to measure, or ``("chosen", precision)``.

    Raises ``parity.NoPrecisionWithinTolerance`` when every declared precision was measured and rejected.
    """
    from worker.runtime.model_packages.declaration import read_declaration  # noqa: PLC0415
    from worker.runtime.model_packages.parity import choose_precision  # noqa: PLC0415

    declaration = read_declaration(package_dir)
    reference: list[Mapping[str, Any]] = json.loads((work / REFERENCE_FILE).read_text(encoding="utf-8"))

    def run(precision: str) -> list[dict[str, Any]]:
        candidate = work / f"{precision}.json"
        if not candidate.is_file():
            raise CandidateMissing(precision)
        return read_trtexec_outputs(candidate, len(reference))

    try:
        decision = choose_precision(
            declaration.parity.precisions,
            reference=reference,
            run=run,
            tolerance=declaration.parity.max_abs_error,
        )
    except CandidateMissing as missing:
        return "build", missing.precision
    provenance = {"model": declaration.name, "version": declaration.version, **decision.provenance()}
    (work / DECISION_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return "chosen", decision.chosen


def _plan(args: argparse.Namespace) -> int:
    slug = target_slug(args.gpu_name, args.compute_capability, args.trt_version)
    for line in plan_lines(Path(args.models_dir), slug):
        sys.stdout.write(line + "\n")
    return exit_codes.OK


def _reference(args: argparse.Namespace) -> int:
    for argument in write_reference(Path(args.package_dir), Path(args.out)):
        sys.stdout.write(argument + "\n")
    return exit_codes.OK


def _decide(args: argparse.Namespace) -> int:
    from worker.runtime.model_packages.parity import NoPrecisionWithinTolerance  # noqa: PLC0415

    try:
        action, precision = decide(Path(args.package_dir), Path(args.work))
    except NoPrecisionWithinTolerance as exc:
        sys.stderr.write(f"fleet engine decide: {Path(args.package_dir).name}: {exc}\n")
        return exit_codes.FAILED
    flags = TRTEXEC_FLAGS[precision] if action == "build" else ()
    sys.stdout.write(" ".join((action, precision, *flags)) + "\n")
    return exit_codes.OK


def register(subparsers: Any) -> None:
    """``fleet engine plan|reference|decide`` (run by the VM's boot inside the worker image)."""
    engine = subparsers.add_parser("engine", help="TensorRT engine steps of a VM's boot (cache key, parity)")
    steps = engine.add_subparsers(dest="engine_command", metavar="STEP", required=True)
    plan = steps.add_parser("plan", help="one line per package: name, version, ONNX, cache key, shapes")
    plan.add_argument("models_dir")
    plan.add_argument("--gpu-name", required=True)
    plan.add_argument("--compute-capability", required=True)
    plan.add_argument("--trt-version", required=True)
    plan.set_defaults(func=_plan)
    reference = steps.add_parser("reference", help="reference inputs for trtexec and ONNX outputs")
    reference.add_argument("package_dir")
    reference.add_argument("--out", required=True)
    reference.set_defaults(func=_reference)
    choose = steps.add_parser("decide", help="the parity gate over the candidates measured so far")
    choose.add_argument("package_dir")
    choose.add_argument("--work", required=True)
    choose.set_defaults(func=_decide)
