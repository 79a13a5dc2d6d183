"""The CPU model repository in the real tritonserver, through tritonclient gRPC, on generated drawings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.models.drawing_analyzer import model_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ONNX_PATH = model_spec.ONNX_PATH
MIN_ACCURACY = 0.95  # the held-out target


@pytest.fixture(scope="module")
def triton_url(stack: Any) -> str:
    """The session stack's tritonserver: the CPU repository generated from the bundled packages."""
    return str(stack.env["TRITON_GRPC_URL"])


@pytest.fixture(scope="module")
def client(triton_url: str) -> Iterator[object]:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    with grpcclient.InferenceServerClient(triton_url) as triton:
        assert triton.is_model_ready(model_spec.MODEL_NAME)
        yield triton


@pytest.fixture(scope="module")
def test_set(eval_drawings: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A set of its own (base seed 3: neither the training set nor the held-out set), at half the A4 size
    to keep the test fast (the model is trained on several resolutions): the model card's evaluation set."""
    return eval_drawings


def _infer(client: object, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    tensor = grpcclient.InferInput(model_spec.INPUT.name, list(batch.shape), model_spec.INPUT.triton_dtype)
    tensor.set_data_from_numpy(batch)
    outputs = [grpcclient.InferRequestedOutput(spec.name) for spec in model_spec.OUTPUTS]
    result = client.infer(model_spec.MODEL_NAME, [tensor], outputs=outputs)  # type: ignore[attr-defined]
    return result.as_numpy(model_spec.OUTPUT_PROBS.name), result.as_numpy(model_spec.OUTPUT_EMBEDDING.name)


def test_model_metadata_matches_spec(client: object) -> None:
    metadata = client.get_model_metadata(model_spec.MODEL_NAME, as_json=True)  # type: ignore[attr-defined]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["inputs"]] == [
        (model_spec.INPUT.name, model_spec.INPUT.triton_dtype, [-1, *model_spec.INPUT.shape])
    ]
    assert {t["name"]: [int(d) for d in t["shape"]] for t in metadata["outputs"]} == {
        spec.name: [-1, *spec.shape] for spec in model_spec.OUTPUTS
    }


def test_accuracy_on_generated_drawings(client: object, test_set: tuple[np.ndarray, np.ndarray]) -> None:
    # Given 240 generated drawings (40 per class, PNG and JPEG) preprocessed by the worker's contract
    x, y = test_set
    # When they are classified through Triton in batches of 32 and a few single requests
    probs, embeddings = zip(*(_infer(client, x[i : i + 32]) for i in range(0, len(x), 32)), strict=True)
    p, e = np.concatenate(probs), np.concatenate(embeddings)
    singles = _infer(client, x[:1])
    # Then the class accuracy and the embedding's nearest-neighbour recall reach the targets
    accuracy = float((p.argmax(1) == y).mean())
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    recall = float((y[sims.argmax(1)] == y).mean())
    print(f"Triton accuracy {accuracy:.4f} recall@1 {recall:.4f} on {len(y)} drawings")
    assert accuracy >= MIN_ACCURACY
    assert recall >= 0.90
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(singles[0], p[:1], atol=1e-5)


def _executions(client: object) -> tuple[int, int]:
    """(requests answered, model executions) so far, from Triton's statistics."""
    stats = client.get_inference_statistics(model_spec.MODEL_NAME, as_json=True)  # type: ignore[attr-defined]
    model = stats["model_stats"][0]
    return int(model["inference_stats"]["success"]["count"]), int(model.get("execution_count", 0))


def test_concurrent_requests_run_as_sent_never_merged(
    triton_url: str, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """The worker forms batches and keeps an instance free for interactive requests; a server-side
    batcher merging a single interactive image into a queued 16-image request would cost it the batch's
    compute. Each request must be one execution of its own images."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    x = test_set[0]
    sizes = [16, 16, 1, 16, 1, 16]
    with grpcclient.InferenceServerClient(triton_url) as triton:
        answered, executions = _executions(triton)
        # When batch and single requests are sent at once (more than there are instances)
        with futures.ThreadPoolExecutor(max_workers=len(sizes)) as pool:
            results = list(pool.map(lambda n: _infer(triton, x[:n]), sizes))
        # Triton records an execution's statistics after it sends the responses: under load the last one
        # can still be missing when the client reads them, so wait (bounded) for the count to settle.
        deadline = time.monotonic() + 5.0
        answered_after, executions_after = _executions(triton)
        while executions_after - executions < len(sizes) and time.monotonic() < deadline:
            time.sleep(0.05)
            answered_after, executions_after = _executions(triton)
    # Then every request was executed alone, with its own outputs
    assert [len(probs) for probs, _ in results] == sizes
    assert answered_after - answered == len(sizes)
    assert executions_after - executions == len(sizes)


def test_triton_matches_onnx_reference(client: object, test_set: tuple[np.ndarray, np.ndarray]) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    x = test_set[0][:32]
    ref_p, ref_e = session.run([s.name for s in model_spec.OUTPUTS], {model_spec.INPUT.name: x})
    p, e = _infer(client, x)
    assert np.abs(p - ref_p).max() < 1e-5
    assert np.abs(e - ref_e).max() < 1e-5


def test_wrong_shape_is_rejected_not_crashing(client: object) -> None:
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    with pytest.raises(InferenceServerException) as info:
        _infer(client, np.zeros((1, 1, 64, 64), dtype=np.float32))
    assert "INVALID_ARGUMENT" in str(info.value.status()) or "shape" in str(info.value).lower()
    # and the model still answers afterwards
    probs, _ = _infer(client, np.zeros((2, *model_spec.INPUT.shape), dtype=np.float32))
    assert probs.shape == (2, model_spec.NUM_CLASSES)


def test_batch_over_max_is_rejected(client: object) -> None:
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    with pytest.raises(InferenceServerException):
        _infer(client, np.zeros((model_spec.MAX_BATCH_SIZE + 1, *model_spec.INPUT.shape), dtype=np.float32))
