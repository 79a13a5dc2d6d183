"""Free sizes on the real tritonserver: the CPU repository generated from the free-size packages made in the
test (shaped.py: tensor names with ``/``, ``.`` and ``:``, a bucketed fan-out input) loads — its warm-ups
have concrete dims, one per bucket or at opt_shape — and answers different sizes in separate requests
with what onnxruntime gives for the same graph."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as triton_grpc

from worker.dev.devstack.tritonserver import TritonServer

from . import served, shaped

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("free") / "models"
    shaped.write_chain(root)
    return root


@pytest.fixture(scope="module")
def triton(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with served.private_triton(models, tmp_path_factory.mktemp("triton")) as server:
        yield server


def infer(server: TritonServer, model: str, name: str, array: np.ndarray[Any, Any]) -> Any:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    try:
        tensor = triton_grpc.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        return client.infer(model, [tensor])
    finally:
        client.close()


def onnx_outputs(folder: Path, name: str, array: np.ndarray[Any, Any]) -> dict[str, Any]:
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {name: array}), strict=True))


def page(height: int, width: int) -> np.ndarray[Any, Any]:
    image = np.zeros((1, 1, height, width), dtype=np.float32)
    image[0, 0, 2:10, 3 : width // 2] = 1.0
    return image


def test_a_free_size_model_loads_and_answers_two_sizes(models: Path, triton: TritonServer) -> None:
    # Given tritonserver serving the generated CPU repository (it refuses to load a -1 warm-up)
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    assert client.is_model_ready("detector") and client.is_model_ready("reader")
    metadata = client.get_model_metadata("detector", as_json=True)
    client.close()
    assert metadata["inputs"] == [{"name": "image/x.0", "datatype": "FP32", "shape": ["-1", "1", "-1", "-1"]}]
    # When two pages of different sizes are sent in separate requests
    for height, width in ((24, 40), (56, 72)):
        image = page(height, width)
        result = infer(triton, "detector", "image/x.0", image)
        # Then each answer has the page's own size and equals onnxruntime's on the same graph
        expected = onnx_outputs(models / "detector", "image/x.0", image)
        probability_map = result.as_numpy("map/sigmoid:0")
        assert probability_map.shape == (1, 1, height, width)
        np.testing.assert_allclose(probability_map, expected["map/sigmoid:0"], atol=1e-6)
        np.testing.assert_allclose(result.as_numpy("stats.pool"), expected["stats.pool"], atol=1e-6)


def test_a_bucketed_input_answers_a_bucket_and_a_size_past_every_bucket(
    models: Path, triton: TritonServer
) -> None:
    for width in (32, 100):  # bucket 32; 100 is wider than the largest bucket (64), within max 128
        crops = np.ones((3, 1, 8, width), dtype=np.float32)
        result = infer(triton, "reader", "crop", crops)
        columns = result.as_numpy("columns")
        assert columns.shape == (3, width)
        np.testing.assert_allclose(columns, onnx_outputs(models / "reader", "crop", crops)["columns"])
        assert float(columns.sum()) == 3 * 8 * width
