"""Write a Triton model repository from model packages: the CPU variant or the GPU (TensorRT) variant.

- ``cpu`` (the local stack, CI): Triton's python backend runs the package's ONNX graph with onnxruntime
  (``onnx_python_model.py``), so tests exercise the same graph the fleet converts.
- ``gpu`` (a VM): ``platform: tensorrt_plan``; ``<version>/model.plan`` is the engine the boot fetches
  from the engine cache or builds from the ONNX on that GPU (the parity gate picks its precision).

Both variants: no server-side dynamic batcher (the worker forms batches and sends interactive tensors
alone), ``instances`` model instances (one stays free for interactive work), warm-up on zero data. A
package whose inputs have a free size (``-1``) gets no warm-up: Triton refuses a warm-up sample without
every size, and any size picked here would be a guess the graph may not accept.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal

from worker.runtime.model_packages.declaration import Declaration, Tensor
from worker.runtime.model_packages.loader import ModelPackage

Variant = Literal["cpu", "gpu"]
PYTHON_MODEL: Final = Path(__file__).resolve().parent / "onnx_python_model.py"
ENGINE_FILE: Final = "model.plan"
#: Warm-up batch on the CPU variant (a full batch would cost seconds of CPU at every start).
CPU_WARMUP_BATCH: Final = 8


def config_pbtxt(declaration: Declaration, variant: Variant) -> str:
    """The ``config.pbtxt`` text of one package for one variant."""
    d = declaration
    if variant == "cpu":
        header = f'name: "{d.name}"\nbackend: "python"\nmax_batch_size: {d.max_batch_size}\n'
        kind, warmup = "KIND_CPU", min(CPU_WARMUP_BATCH, d.max_batch_size)
        extra = 'parameters: {\n  key: "intra_op_threads"\n  value: { string_value: "1" }\n}\n'
    else:
        header = (
            f'name: "{d.name}"\nplatform: "tensorrt_plan"\nmax_batch_size: {d.max_batch_size}\n'
            f'default_model_filename: "{ENGINE_FILE}"\n'
        )
        kind, warmup, extra = "KIND_GPU", d.max_batch_size, ""
    return (
        f"# Generated from model package {d.name!r} version {d.version} (worker.runtime.model_packages);\n"
        "# edit the package's model.toml, not this file.\n"
        + header
        + _tensors("input", d.inputs)
        + _tensors("output", d.outputs)
        + f"instance_group [\n  {{\n    count: {d.instances}\n    kind: {kind}\n  }}\n]\n"
        + extra
        + ("" if any(-1 in t.shape for t in d.inputs) else _warmup(d.inputs, warmup))
    )


def _dims(tensor: Tensor) -> str:
    return ", ".join(str(n) for n in tensor.shape)


def _tensors(kind: str, tensors: Iterable[Tensor]) -> str:
    entries = ",\n".join(
        f'  {{\n    name: "{t.name}"\n    data_type: {t.config_dtype}\n    dims: [ {_dims(t)} ]\n  }}'
        for t in tensors
    )
    return f"{kind} [\n{entries}\n]\n"


def _warmup(inputs: Iterable[Tensor], batch: int) -> str:
    values = "".join(
        f'    inputs: {{\n      key: "{t.name}"\n      value: {{\n        data_type: {t.config_dtype}\n'
        f"        dims: [ {_dims(t)} ]\n        zero_data: true\n      }}\n    }}\n"
        for t in inputs
    )
    return f'model_warmup [\n  {{\n    name: "zero_batch_{batch}"\n    batch_size: {batch}\n{values}  }}\n]\n'


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
