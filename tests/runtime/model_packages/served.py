"""Serving model packages on the real local stack in a test: a private tritonserver generated from a
directory of packages, the expected answer of a package computed by onnxruntime, Triton's per-model
statistics.

The session stack (tests/conftest.py) keeps serving the bundled drawing model; a test that serves its own
packages starts a tritonserver of its own on that directory (``devstack.tritonserver.TritonServer`` with
``models_dir``: the same CPU repository ``fleet devstack up --models DIR`` writes) and points a
``fleet worker`` at both with ``TRITON_GRPC_URL`` and ``FLEET_MODELS_DIR``: no product code changes.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from worker.dev import harness
from worker.dev.devstack.tritonserver import MODELS_DIR_ENV, TritonServer
from worker.runtime.model_packages.loader import load_package
from worker.shared import environment

TRITON_START_TIMEOUT_S = 240.0


@contextmanager
def private_triton(models_dir: Path, work_dir: Path) -> Iterator[TritonServer]:
    """A tritonserver serving the CPU repository of ``models_dir``; stopped on exit."""
    server = TritonServer(models_dir=models_dir, work_dir=work_dir)
    started = time.monotonic()
    server.start(timeout_s=TRITON_START_TIMEOUT_S)
    print(
        f"private tritonserver for {sorted(server.model_names())} ready in {time.monotonic() - started:.1f} s"
    )
    try:
        yield server
    finally:
        server.stop()


def worker_env(server: TritonServer, models_dir: Path) -> dict[str, str]:
    """The extra environment of a ``fleet worker`` serving ``models_dir`` through ``server``."""
    return {environment.TRITON_GRPC_URL: server.grpc_url, MODELS_DIR_ENV: str(models_dir)}


def onnx_answer(folder: Path, data: bytes, params: Mapping[str, Any]) -> dict[str, Any]:
    """What the package in ``folder`` should answer for one input: its own preprocess and postprocess
    around its ONNX graph run by onnxruntime (the reference the Triton CPU variant must equal)."""
    import onnxruntime  # noqa: PLC0415 - the models extra, present in the dev venv

    package = load_package(folder)
    tensors = package.preprocess(data, dict(params))
    session = onnxruntime.InferenceSession(str(package.model_path), providers=["CPUExecutionProvider"])
    names = [t.name for t in package.declaration.outputs]
    rows = session.run(names, {name: np.asarray(value)[None] for name, value in tensors.items()})
    return package.postprocess({n: r[0] for n, r in zip(names, rows, strict=True)}, dict(params))


def model_stats(server: TritonServer, model: str) -> tuple[int, int]:
    """(inferences, executions) Triton has counted for ``model`` (HTTP ``/v2/models/<m>/stats``)."""
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/stats", timeout=5) as reply:
        stats = json.loads(reply.read())["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def settled_stats(
    server: TritonServer, model: str, *, inferences: int, timeout_s: float = 5.0
) -> tuple[int, int]:
    """``model_stats`` once at least ``inferences`` are counted: Triton records an execution's statistics
    after it sends the responses, so the last batch may still be missing right after the answers."""
    deadline = time.monotonic() + timeout_s
    counted = model_stats(server, model)
    while counted[0] < inferences and time.monotonic() < deadline:
        time.sleep(0.05)
        counted = model_stats(server, model)
    return counted


def assert_close(actual: Any, expected: Any, *, atol: float = 2e-4, where: str = "outputs") -> None:
    """``actual`` equals ``expected`` with numbers within ``atol`` (Triton's batch vs onnxruntime's single
    run, after the handler's rounding); anything else exactly."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), (where, actual, expected)
        for key, value in expected.items():
            assert_close(actual[key], value, atol=atol, where=f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (where, actual, expected)
        for index, (got, value) in enumerate(zip(actual, expected, strict=True)):
            assert_close(got, value, atol=atol, where=f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert abs(float(actual) - expected) <= atol, (where, actual, expected)
    else:
        assert actual == expected, (where, actual, expected)


def upload_inputs(
    stack: Any, storage_client: Any, prefix: str, blobs: list[tuple[str, bytes, str]]
) -> list[tuple[str, bytes]]:
    """Upload ``(name, bytes, content type)`` under a fresh ``prefix/<hex>/`` of the inputs bucket;
    returns each one's (gs:// URI, bytes)."""
    folder = f"{prefix}/{uuid.uuid4().hex[:8]}"
    bucket = stack.env[environment.INPUT_BUCKET]
    return [
        (harness.upload(storage_client, bucket, f"{folder}/{name}", data, content_type), data)
        for name, data, content_type in blobs
    ]
