"""tritonserver on CPU: the stack's model over tritonclient gRPC, and the launcher on a generated model."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from worker.dev.devstack.tritonserver import TritonServer
from worker.models.drawing_analyzer import model_spec

pytestmark = pytest.mark.integration


def test_grpc_inference_against_the_stack_model(stack: Any) -> None:
    client = triton_grpc.InferenceServerClient(stack.env["TRITON_GRPC_URL"])
    name = model_spec.MODEL_NAME
    assert name in stack.env["FLEET_MODEL_NAMES"].split(",") and client.is_model_ready(name)
    images = np.zeros((2, *model_spec.INPUT.shape), dtype=np.float32)
    images[:, :, 40:150, 90:100] = 1.0
    tensor = triton_grpc.InferInput(model_spec.INPUT.name, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = client.infer(name, [tensor])
    probs = result.as_numpy(model_spec.OUTPUT_PROBS.name)
    embedding = result.as_numpy(model_spec.OUTPUT_EMBEDDING.name)
    assert probs.shape == (2, model_spec.NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    assert embedding.shape == (2, model_spec.EMBEDDING_DIM)
    client.close()


ECHO_CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "NUMPY" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

ECHO_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            version = np.array([[np.__version__.encode()]] * x.shape[0], dtype=object)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32)),
                pb_utils.Tensor("NUMPY", version),
            ]))
        return responses
"""


def test_launcher_serves_a_python_backend_model_with_the_venv_numpy(tmp_path: Path) -> None:
    model_dir = tmp_path / "repo" / "echo"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(ECHO_CONFIG))
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(ECHO_MODEL))
    server = TritonServer(model_repository=tmp_path / "repo", work_dir=tmp_path / "work")
    server.start(timeout_s=120)
    try:
        client = triton_grpc.InferenceServerClient(server.grpc_url)
        tensor = triton_grpc.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32)[None])
        result = client.infer("echo", [tensor])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [[0.0, 2.0, 4.0, 6.0]])
        # The stub must run on .venv-triton's numpy<2, not whatever the base interpreter has.
        assert result.as_numpy("NUMPY")[0][0].decode().startswith("1.")
        client.close()
        # A killed server relaunched comes back on the same address (chaos restarts rely on it)
        url, killed = server.grpc_url, server.process
        assert killed is not None
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=10)
        server.relaunch(timeout_s=120)
        assert server.grpc_url == url and server.process is not killed
        client = triton_grpc.InferenceServerClient(url)
        assert client.is_model_ready("echo")
        client.close()
    finally:
        process = server.process
        server.stop()
    assert process is not None and process.poll() is not None
