"""The drawing package's model_spec.py agrees with the package: its model.toml, the Triton configs generated
from it (both variants) and the ONNX graph say the same names, shapes and dtypes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from worker.models.drawing_analyzer import model_spec
from worker.runtime.model_packages import triton_repository
from worker.runtime.model_packages.declaration import read_declaration

DECLARATION = read_declaration(model_spec.PACKAGE_DIR)
CONFIGS = {
    "cpu": triton_repository.config_pbtxt(DECLARATION, "cpu"),
    "gpu": triton_repository.config_pbtxt(DECLARATION, "gpu"),
}

_TENSOR = re.compile(
    r"\{\s*name:\s*\"(?P<name>[^\"]+)\"\s*data_type:\s*(?P<dtype>\w+)\s*dims:\s*\[(?P<dims>[^\]]*)\]\s*\}"
)


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _section(text: str, key: str) -> str:
    """The bracketed body of a top-level ``key [ ... ]`` list."""
    match = re.search(rf"^{key}\s*\[(.*?)^\]", text, re.S | re.M)
    assert match, f"no {key} section"
    return match.group(1)


def _tensors(text: str, key: str) -> list[model_spec.TensorSpec]:
    return [
        model_spec.TensorSpec(
            m["name"],
            m["dtype"].removeprefix("TYPE_"),
            tuple(int(d) for d in m["dims"].replace(",", " ").split()),
        )
        for m in _TENSOR.finditer(_section(text, key))
    ]


def _scalar(text: str, key: str) -> str:
    match = re.search(rf"^\s*{key}:\s*\"?([^\"\n]+)\"?", text, re.M)
    assert match, f"no {key}"
    return match.group(1).strip()


@pytest.fixture(params=["cpu", "gpu"])
def config(request: pytest.FixtureRequest) -> str:
    return _strip_comments(CONFIGS[request.param])


def test_name_and_batch(config: str) -> None:
    assert _scalar(config, "name") == model_spec.MODEL_NAME
    assert int(_scalar(config, "max_batch_size")) == model_spec.MAX_BATCH_SIZE


def test_tensors_match_model_spec(config: str) -> None:
    assert _tensors(config, "input") == [model_spec.INPUT]
    assert _tensors(config, "output") == list(model_spec.OUTPUTS)


def test_requests_run_as_sent_on_an_instance_kept_for_interactive_work(config: str) -> None:
    # The worker forms batches; a dynamic batcher would merge interactive requests into batch ones.
    assert "dynamic_batching" not in config
    assert "sequence_batching" not in config
    assert int(_scalar(config, "count")) == model_spec.INSTANCES >= 2
    assert "model_warmup" in config


def test_variants(tmp_path: Path) -> None:
    cpu = _strip_comments(CONFIGS["cpu"])
    gpu = _strip_comments(CONFIGS["gpu"])
    assert _scalar(cpu, "backend") == "python"
    assert "KIND_CPU" in cpu
    assert _scalar(gpu, "platform") == "tensorrt_plan"
    assert "KIND_GPU" in gpu
    assert DECLARATION.version == model_spec.MODEL_VERSION
    assert DECLARATION.preferred_batch_size == model_spec.WORKER_BATCH_SIZE


def test_onnx_graph_matches_model_spec() -> None:
    onnx = pytest.importorskip("onnxruntime")
    path = model_spec.ONNX_PATH
    session = onnx.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == model_spec.INPUT.name
    assert inp.type == "tensor(float)"
    assert tuple(inp.shape[1:]) == model_spec.INPUT.shape
    assert isinstance(inp.shape[0], str)  # dynamic batch axis
    outputs = {o.name: tuple(o.shape[1:]) for o in session.get_outputs()}
    assert outputs == {spec.name: spec.shape for spec in model_spec.OUTPUTS}


def test_analyses() -> None:
    assert model_spec.ANALYSES == ("classify", "embed")
    assert len(model_spec.CLASS_NAMES) >= 6


def test_committed_metrics_describe_the_committed_onnx() -> None:
    version_dir = model_spec.PACKAGE_DIR
    metrics = json.loads((version_dir / "model.metrics.json").read_text())
    assert metrics["onnx_sha256"] == hashlib.sha256((version_dir / "model.onnx").read_bytes()).hexdigest()
    assert metrics["heldout"]["class_accuracy"] >= 0.95
    assert metrics["heldout"]["embedding_recall_at_1"] >= 0.90
    assert metrics["opset"] >= 17
    assert (version_dir / "model.onnx").stat().st_size < 20 * 1024 * 1024
