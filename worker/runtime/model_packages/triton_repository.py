"""Write a Triton model repository from model packages: the CPU variant or the GPU (TensorRT) variant.

- ``cpu`` (the local stack, CI): Triton's python backend runs the package's ONNX graph with onnxruntime
  (``onnx_python_model.py``), so tests exercise the same graph the fleet converts.
- ``gpu`` (a VM): ``platform: tensorrt_plan``; ``<version>/model.plan`` is the engine the boot fetches
  from the engine cache or builds from the ONNX on that GPU (the parity gate picks its precision).

Both variants: no server-side dynamic batcher (the worker forms batches and sends interactive tensors
alone), ``instances`` model instances (one stays free for interactive work), warm-up on zero data. Free
sizes are -1 in the config's dims; tritonserver refuses a warm-up with -1 dims, so a package with free
inputs warms up once per bucket (one bucket index sizes every bucketed input) or, without buckets, once
at ``opt_shape`` — free inputs without buckets at their ``opt_shape``, fixed ones at their shape — at
batch 1 on CPU (a free size can be large: the warm-up loads the model, it does not rehearse batches)
and at ``preferred_batch_size`` on GPU (the engine profile's optimum). A fixed-shape package keeps one
warm-up at ``min(8, max_batch_size)`` on CPU and ``max_batch_size`` on GPU.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Literal

from worker.runtime.model_packages.declaration import Declaration
from worker.runtime.model_packages.loader import ModelPackage
from worker.runtime.model_packages.tensors import Shape, Tensor

Variant = Literal["cpu", "gpu"]
PYTHON_MODEL: Final = Path(__file__).resolve().parent / "onnx_python_model.py"
ENGINE_FILE: Final = "model.plan"
#: Warm-up batch on the CPU variant (a full batch would cost seconds of CPU at every start).
CPU_WARMUP_BATCH: Final = 8


def config_pbtxt(declaration: Declaration, variant: Variant) -> str:
    """The ``config.pbtxt`` text of one package for one variant."""
    d = declaration
    free = any(t.free for t in d.inputs)
    if variant == "cpu":
        header = f'name: "{d.name}"\nbackend: "python"\nmax_batch_size: {d.max_batch_size}\n'
        kind, warmup = "KIND_CPU", 1 if free else min(CPU_WARMUP_BATCH, d.max_batch_size)
        extra = 'parameters: {\n  key: "intra_op_threads"\n  value: { string_value: "1" }\n}\n'
    else:
        header = (
            f'name: "{d.name}"\nplatform: "tensorrt_plan"\nmax_batch_size: {d.max_batch_size}\n'
            f'default_model_filename: "{ENGINE_FILE}"\n'
        )
        kind, extra = "KIND_GPU", ""
        warmup = d.preferred_batch_size if free else d.max_batch_size
    return (
        f"# Generated from model package {d.name!r} version {d.version} (worker.runtime.model_packages);\n"
        "# edit the package's model.toml, not this file.\n"
        + header
        + _tensors("input", d.inputs)
        + _tensors("output", d.outputs)
        + f"instance_group [\n  {{\n    count: {d.instances}\n    kind: {kind}\n  }}\n]\n"
        + extra
        + _warmups(d.inputs, warmup)
    )


def _dims(shape: Shape) -> str:
    return ", ".join(str(n) for n in shape)


def _tensors(kind: str, tensors: Iterable[Tensor]) -> str:
    entries = ",\n".join(
        f'  {{\n    name: "{t.name}"\n    data_type: {t.config_dtype}\n    dims: [ {_dims(t.shape)} ]\n  }}'
        for t in tensors
    )
    return f"{kind} [\n{entries}\n]\n"


def warmup_shapes(inputs: Sequence[Tensor]) -> list[dict[str, Shape]]:
    """The concrete shapes of each warm-up: one per bucket index, else one at ``opt_shape``."""
    count = max((len(t.buckets) for t in inputs), default=0)

    def shape(tensor: Tensor, index: int) -> Shape:
        if tensor.buckets:
            return tensor.buckets[index]
        return tensor.bounds.opt if tensor.bounds is not None else tensor.shape

    return [{t.name: shape(t, index) for t in inputs} for index in range(max(count, 1))]


def _warmups(inputs: Sequence[Tensor], batch: int) -> str:
    samples = []
    for shapes in warmup_shapes(inputs):
        values = "".join(
            f'    inputs: {{\n      key: "{t.name}"\n      value: {{\n        data_type: {t.config_dtype}\n'
            f"        dims: [ {_dims(shapes[t.name])} ]\n        zero_data: true\n      }}\n    }}\n"
            for t in inputs
        )
        label = (
            "x".join(str(n) for t in inputs for n in shapes[t.name]) if any(t.free for t in inputs) else ""
        )
        name = f"zero_batch_{batch}" + (f"_{label}" if label else "")
        samples.append(f'  {{\n    name: "{name}"\n    batch_size: {batch}\n{values}  }}')
    return "model_warmup [\n" + ",\n".join(samples) + "\n]\n"


def write_repository(packages: Iterable[ModelPackage], root: Path, variant: Variant) -> list[Path]:
    """Write ``root/<model>/config.pbtxt`` and the version folder of every package; returns the folders.

    The CPU variant copies the ONNX graph and the python model; the GPU variant leaves
    ``<version>/model.plan`` to the engine step (``engine_path``).
    """
    written = []
    for package in packages:
        d = package.declaration
        folder = root / d.name
        version = folder / d.version
        version.mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(config_pbtxt(d, variant), encoding="utf-8")
        if variant == "cpu":
            shutil.copyfile(package.model_path, version / "model.onnx")
            shutil.copyfile(PYTHON_MODEL, version / "model.py")
        written.append(folder)
    return written


def engine_path(root: Path, declaration: Declaration) -> Path:
    """Where the GPU variant expects the package's TensorRT engine."""
    return root / declaration.name / declaration.version / ENGINE_FILE
