"""``fleet engine plan|reference|decide``: the steps of a VM's boot that need the packages' Python side.

The boot script (packer/files/bin/fleet-boot-models) runs these inside the worker image and does the rest
with ``gsutil`` and ``trtexec``:

- ``plan MODELS_DIR --gpu-name --compute-capability --trt-version`` prints one tab-separated line per
  package: name, version, ONNX path, engine cache key, trtexec's min/opt/max shapes. An engine runs only
  on the GPU architecture and TensorRT version it was built from, so the key is the model's digest (sha256
  of its ONNX) x the GPU x the TensorRT version: ``<model>/<digest>/<model>.<gpu>.sm<cc>.trt<x.y>.plan``
  (the GPU part named as scripts/build_trt_engine names it). The shapes are one optimization profile:
  batch 1 / ``preferred_batch_size`` / ``max_batch_size`` with each input's declared min / opt / max
  (docs/models.md "Free sizes").
- ``reference PACKAGE_DIR --out WORK [--models DIR]`` runs the package's reference inputs through its
  step as the worker would (the packages it ``needs``, from ``DIR``, default the package's parent folder,
  run first with their ONNX graphs) and writes what one trtexec run and ``decide`` need: the items of
  every reference input as one batch, each input padded to one shape that holds them all (the smallest
  bucket that does, else the largest size: ``items.common_shapes``; reference inputs are taken while
  their items fit ``max_batch_size``), as ``WORK/inputs/<k>.bin`` (raw, for ``trtexec --loadInputs``),
  ``WORK/reference.json`` (the ONNX outputs of that batch, a dict per item) and ``WORK/stage.pkl`` (each
  reference input's params, items' context and shapes, and the reference answers); prints trtexec's
  ``--shapes``/``--loadInputs`` arguments, one per line.
- ``decide PACKAGE_DIR --work WORK [--models DIR]`` applies ``parity.choose_precision`` to the candidates
  measured so far (``WORK/<PRECISION>.json``, ``trtexec --exportOutput``) by the package's rule (raw
  ``max_abs_error``, or its ``[parity.answers]`` on the answers its postprocess gives from the trtexec
  outputs): prints ``build <PRECISION> <flags...>`` when the next precision (fastest first) has to be
  built and run, ``chosen <PRECISION>`` with ``WORK/decision.json`` (the provenance uploaded beside the
  engine) when one passes, and fails with the measured disagreements when none does.

trtexec reads a tensor name up to the last ``:`` of a spec, or between single quotes: names with other
characters than letters, digits and ``_`` are quoted (``'x/in.0':1x3x32x32``); the declaration refuses
the characters trtexec cannot carry (``,`` and ``'``).
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from worker.shared import exit_codes

if TYPE_CHECKING:
    from worker.runtime.model_packages.chain import StagePage
    from worker.runtime.model_packages.declaration import Declaration
    from worker.runtime.model_packages.loader import ModelPackage

#: trtexec flags that build an engine of each declared precision. FP32 turns TF32 off (on by default on
#: Ampere and newer); INT8 without a calibration cache gets placeholder scales, which the gate rejects.
TRTEXEC_FLAGS: Final[dict[str, tuple[str, ...]]] = {
    "INT8": ("--int8", "--fp16"),
    "FP16": ("--fp16",),
    "TF32": (),
    "FP32": ("--noTF32",),
}
REFERENCE_FILE: Final = "reference.json"
STAGE_FILE: Final = "stage.pkl"
DECISION_FILE: Final = "decision.json"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


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


def spec_name(name: str) -> str:
    """A tensor name as trtexec's ``--shapes``/``--loadInputs`` specs read it (quoted unless plain)."""
    return name if _PLAIN_NAME.fullmatch(name) else f"'{name}'"


def _spec(batch: int, shapes: Mapping[str, Sequence[int]]) -> str:
    return ",".join(
        f"{spec_name(name)}:{'x'.join(str(n) for n in (batch, *dims))}" for name, dims in shapes.items()
    )


def profile(declaration: Declaration) -> tuple[str, str, str]:
    """trtexec's min / opt / max shapes: batch 1 / preferred / max, each input at its min / opt / max.

    One profile serves every size within the bounds: TensorRT tunes its kernels for ``opt`` and runs any
    shape between ``min`` and ``max`` with them (docs/models.md "Free sizes" says why not one per bucket).
    """
    inputs = declaration.inputs
    bounds = {t.name: t.bounds for t in inputs if t.bounds is not None}
    return (
        _spec(1, {name: b.min for name, b in bounds.items()}),
        _spec(declaration.preferred_batch_size, {name: b.opt for name, b in bounds.items()}),
        _spec(declaration.max_batch_size, {name: b.max for name, b in bounds.items()}),
    )


def plan_lines(models_dir: Path, slug: str) -> list[str]:
    """One tab-separated line per package (see the module docstring)."""
    from worker.runtime.model_packages.loader import load_packages  # noqa: PLC0415

    lines = []
    for package in load_packages(models_dir).packages:
        d = package.declaration
        fields = (
            d.name,
            d.version,
            str(package.model_path),
            cache_key(d.name, package.model_digest, slug),
            *profile(d),
        )
        lines.append("\t".join(fields))
    return lines


def _reference_pages(package: ModelPackage, pages: Sequence[StagePage]) -> list[StagePage]:
    """The reference inputs whose items fit one trtexec batch (``max_batch_size``), in order."""
    limit = package.declaration.max_batch_size
    taken: list[StagePage] = []
    count = 0
    for page in pages:
        if count + len(page.page.items) > limit:
            break
        taken.append(page)
        count += len(page.page.items)
    if not taken:
        first = len(pages[0].page.items) if pages else 0
        raise ValueError(
            f"{package.name}: the first reference input gives {first} items, more than max_batch_size "
            f"{limit}: one trtexec run cannot hold them; choose smaller reference inputs"
        )
    if count == 0:
        raise ValueError(f"{package.name}: the reference inputs give no item: the gate has nothing to run")
    return taken


def write_reference(package_dir: Path, work: Path, models: Path | None = None) -> list[str]:
    """The reference items as trtexec input files, the ONNX outputs and answers; trtexec's arguments."""
    import numpy as np  # noqa: PLC0415

    from worker.runtime.model_packages import chain, onnx_tools  # noqa: PLC0415

    catalog, package = chain.load_chain(package_dir, models)
    d = package.declaration
    infer = onnx_tools.OnnxInfer()
    every = [
        chain.stage_page(catalog, package, path, {"page": 1}, infer) for path in package.reference_inputs()
    ]
    pages = _reference_pages(package, every)
    batch = chain.one_batch(package, [item for p in pages for item in p.page.items])
    count = sum(len(p.page.items) for p in pages)
    rows = chain.split_rows(infer(package, batch), count)
    judged = chain.answers_for(package, pages, rows) if d.parity.answers is not None else []
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    loads = []
    for index, tensor in enumerate(d.inputs):
        path = work / "inputs" / f"input{index}.bin"
        path.write_bytes(np.ascontiguousarray(batch[tensor.name]).tobytes())
        loads.append(f"{spec_name(tensor.name)}:{path}")
    reference = [{name: np.asarray(v).tolist() for name, v in row.items()} for row in rows]
    (work / REFERENCE_FILE).write_text(json.dumps(reference), encoding="utf-8")
    stage = {"pages": pages, "answers": judged, "inputs": len(every)}
    (work / STAGE_FILE).write_bytes(pickle.dumps(stage))
    shapes = {t.name: batch[t.name].shape[1:] for t in d.inputs}
    return [f"--shapes={_spec(count, shapes)}", f"--loadInputs={','.join(loads)}"]


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


def decide(package_dir: Path, work: Path, models: Path | None = None) -> tuple[str, str]:
    """``("build", precision)`` for the next candidate to measure, or ``("chosen", precision)``.

    Raises ``parity.NoPrecisionWithinTolerance`` when every declared precision was measured and rejected.
    """
    import numpy as np  # noqa: PLC0415

    from worker.runtime.model_packages import chain, parity  # noqa: PLC0415
    from worker.runtime.model_packages.declaration import read_declaration  # noqa: PLC0415

    declaration = read_declaration(package_dir)
    rows: list[Mapping[str, Any]] = json.loads((work / REFERENCE_FILE).read_text(encoding="utf-8"))
    dtypes = {t.name: t.numpy_dtype for t in declaration.outputs}
    reference_rows = [{n: np.asarray(v, dtype=dtypes.get(n, "float64")) for n, v in r.items()} for r in rows]
    rules = declaration.parity.answers
    stage: dict[str, Any] = pickle.loads((work / STAGE_FILE).read_bytes()) if rules is not None else {}
    pages: list[StagePage] = stage.get("pages", [])
    package = chain.load_chain(package_dir, models)[1] if rules is not None else None

    def run(precision: str) -> parity.StageRun:
        candidate = work / f"{precision}.json"
        if not candidate.is_file():
            raise CandidateMissing(precision)
        got = [
            {n: v.astype(dtypes.get(n, "float64")) for n, v in row.items()}
            for row in read_trtexec_outputs(candidate, len(rows))
        ]
        if package is None:
            return parity.StageRun(got)
        return parity.StageRun(got, chain.answers_for(package, pages, got, candidate=True))

    try:
        decision = parity.choose_precision(
            declaration.parity.precisions,
            reference=parity.StageRun(reference_rows, stage.get("answers", [])),
            run=run,
            tolerance=declaration.parity.max_abs_error,
            rules=rules,
        )
    except CandidateMissing as missing:
        return "build", missing.precision
    provenance = {"model": declaration.name, "version": declaration.version, **decision.provenance()}
    if stage:
        provenance["reference_inputs"] = {"judged": len(pages), "declared": stage["inputs"]}
    (work / DECISION_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return "chosen", decision.chosen


def _plan(args: argparse.Namespace) -> int:
    slug = target_slug(args.gpu_name, args.compute_capability, args.trt_version)
    for line in plan_lines(Path(args.models_dir), slug):
        sys.stdout.write(line + "\n")
    return exit_codes.OK


def _models(args: argparse.Namespace) -> Path | None:
    return Path(args.models) if args.models else None


def _reference(args: argparse.Namespace) -> int:
    for argument in write_reference(Path(args.package_dir), Path(args.out), _models(args)):
        sys.stdout.write(argument + "\n")
    return exit_codes.OK


def _decide(args: argparse.Namespace) -> int:
    from worker.runtime.model_packages.parity import NoPrecisionWithinTolerance  # noqa: PLC0415

    try:
        action, precision = decide(Path(args.package_dir), Path(args.work), _models(args))
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
    reference.add_argument("--models", help="the packages it needs (default: the package's parent folder)")
    reference.set_defaults(func=_reference)
    choose = steps.add_parser("decide", help="the parity gate over the candidates measured so far")
    choose.add_argument("package_dir")
    choose.add_argument("--work", required=True)
    choose.add_argument("--models", help="the packages it needs (default: the package's parent folder)")
    choose.set_defaults(func=_decide)
