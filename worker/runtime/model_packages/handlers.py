"""Running a package's handler where the worker needs it, with its results checked.

``run_preprocess`` is what the preprocess pool's processes run: a spawned process imports the package
from its folder on first use (cached per process) and checks the tensors against the declaration there,
so a wrong shape or dtype never reaches a batch. ``run_postprocess`` runs in the worker's event loop and
checks that the outputs are JSON and answer every asked analysis. A handler that misbehaves gets a
permanent error code for the job (``MODEL_PREPROCESS_FAILED`` / ``MODEL_OUTPUT_INVALID``); the worker's
own typed errors (``IMAGE_UNDECODABLE`` ...) raised by a handler keep their code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from worker.runtime.model_packages.declaration import Declaration
from worker.runtime.model_packages.loader import ModelPackage, load_package
from worker.shared import errors

Arrays = dict[str, np.ndarray[Any, Any]]


@functools.cache
def package_at(folder: str) -> ModelPackage:
    """The package in ``folder``, loaded once per process (the pool's processes import it by path)."""
    return load_package(Path(folder))


def warm(folders: tuple[str, ...]) -> None:
    """Import every package in this process now (the pool's warm-up), not on the first job."""
    for folder in folders:
        package_at(folder)


def run_preprocess(folder: str, data: bytes, params: dict[str, Any]) -> Arrays:
    """One job's input tensors from ``package_at(folder)``'s preprocess, checked against its declaration."""
    package = package_at(folder)
    try:
        tensors = package.preprocess(data, params)
    except errors.FleetError:
        raise
    except Exception as exc:
        raise errors.ModelPreprocessFailed(
            f"{package.name}: preprocess raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from None  # the cause may not pickle back from the pool process
    return check_inputs(package.declaration, tensors)


def check_inputs(declaration: Declaration, tensors: object) -> Arrays:
    """The declared inputs, exactly: a mapping of numpy arrays with the declared dtype and shape."""
    name = declaration.name
    if not isinstance(tensors, Mapping):
        raise errors.ModelPreprocessFailed(
            f"{name}: preprocess returned {type(tensors).__name__}, not a dict"
        )
    wanted = [t.name for t in declaration.inputs]
    if sorted(tensors) != sorted(wanted):
        raise errors.ModelPreprocessFailed(
            f"{name}: preprocess returned {sorted(tensors)}, declared {wanted}"
        )
    checked: Arrays = {}
    for tensor in declaration.inputs:
        array = tensors[tensor.name]
        if not isinstance(array, np.ndarray) or array.dtype != np.dtype(tensor.numpy_dtype):
            kind = getattr(array, "dtype", type(array).__name__)
            raise errors.ModelPreprocessFailed(
                f"{name}: input {tensor.name} is {kind}, declared {tensor.dtype} ({tensor.numpy_dtype})"
            )
        if len(array.shape) != len(tensor.shape) or any(
            want not in (-1, got) for want, got in zip(tensor.shape, array.shape, strict=True)
        ):
            raise errors.ModelPreprocessFailed(
                f"{name}: input {tensor.name} has shape {list(array.shape)}, declared {list(tensor.shape)}"
            )
        checked[tensor.name] = array
    return checked


def run_postprocess(
    package: ModelPackage, outputs: Arrays, params: dict[str, Any], analyses: tuple[str, ...]
) -> dict[str, Any]:
    """The outputs of ``analyses`` from the package's postprocess; anything else it returns is dropped."""
    try:
        result = package.postprocess(outputs, params)
    except Exception as exc:
        raise errors.ModelOutputInvalid(
            f"{package.name}: postprocess raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    if not isinstance(result, dict):
        raise errors.ModelOutputInvalid(
            f"{package.name}: postprocess returned {type(result).__name__}, not a dict keyed by analysis"
        )
    missing = [a for a in analyses if a not in result]
    if missing:
        raise errors.ModelOutputInvalid(f"{package.name}: postprocess returned no output for {missing}")
    answered = {a: result[a] for a in analyses}
    try:
        # allow_nan=False: NaN/Infinity are not JSON; the result document is written with the same rule.
        json.dumps(answered, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise errors.ModelOutputInvalid(f"{package.name}: postprocess output is not JSON: {exc}") from exc
    return answered
