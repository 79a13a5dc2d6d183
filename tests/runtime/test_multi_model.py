"""The multi-model pipeline on packages written in the test: one result per job across models, ``needs``
run in order with their outputs in params, bad handler behaviour answered on the first delivery.

The packages' real handlers run (in-process preprocessor); the models are fakes computing the tiny
graph's function in numpy (the real tritonserver serves the same packages in the integration tests).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.runtime.model_packages.loader import load_packages
from worker.runtime.pipeline.core import Pipeline
from worker.runtime.pipeline.ports import Ports
from worker.runtime.pipeline.preprocessors import InlinePreprocessor
from worker.runtime.telemetry import Metrics

from .model_packages import tiny
from .test_pipeline import SETTINGS
from .worker_fakes import FakeNotifier, FakeSource, FakeStore, delivery

#: Misbehaves as the job's params say.
BAD_HANDLER = textwrap.dedent(
    """
    import json
    import numpy as np

    def preprocess(data, params):
        mode = params.get("mode")
        if mode == "raise":
            raise ValueError("boom")
        if mode == "shape":
            return {"FEATURES": np.zeros(3, dtype=np.float32)}
        if mode == "dtype":
            return {"FEATURES": np.zeros(4, dtype=np.float64)}
        return {"FEATURES": np.asarray(json.loads(data), dtype=np.float32)}

    def postprocess(outputs, params):
        mode = params.get("mode")
        if mode == "post_raise":
            raise RuntimeError("late boom")
        if mode == "nan":
            return {"bad_score": float("nan")}
        if mode == "object":
            return {"bad_score": object()}
        if mode == "missing":
            return {}
        return {"bad_score": {"ok": True}}
    """
)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    tiny.write_chain(root)
    tiny.write_package(
        root, "bad", handler=BAD_HANDLER, toml=tiny.declaration("bad", tiny.analysis("bad_score"))
    )
    return root


class TinyModel:
    """The tiny graph's function (softmax(FEATURES @ W + B)) with the package's own weights."""

    def __init__(self, name: str, folder: Path) -> None:
        import onnx  # noqa: PLC0415 - the models extra, present in the dev venv
        from onnx import numpy_helper  # noqa: PLC0415

        weights = {
            i.name: numpy_helper.to_array(i) for i in onnx.load(str(folder / "model.onnx")).graph.initializer
        }
        self.name, self.version = name, "1"
        self._w, self._b = weights["W"], weights["B"]
        self.batches: list[int] = []

    async def ready(self) -> bool:
        return True

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        self.batches.append(len(inputs["FEATURES"]))
        logits = inputs["FEATURES"] @ self._w + self._b
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"SCORES": (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)}


class World:
    def __init__(self, models_dir: Path) -> None:
        self.catalog = load_packages(models_dir)
        self.models = {p.name: TinyModel(p.name, p.folder) for p in self.catalog.packages}
        self.source, self.store, self.notifier = FakeSource(), FakeStore(), FakeNotifier()
        self.store.objects["in/ok.png"] = b"[1, 2, 3, 4]"
        metrics = Metrics(slots=SETTINGS.pipeline_slots)
        ports = Ports(
            self.source,
            self.store,
            self.store,
            self.catalog,
            self.models,
            self.notifier,
            InlinePreprocessor(metrics=metrics),
        )
        self.pipeline = Pipeline(SETTINGS, ports, metrics=metrics)

    def run(self, jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for body in jobs:
            self.source.put(delivery({"input_uri": "gs://inputs/in/ok.png", **body}))

        async def scenario() -> int:
            task = asyncio.create_task(self.pipeline.run())
            async with asyncio.timeout(10):
                while len(self.notifier.sent) < len(jobs):
                    await asyncio.sleep(0.005)
            self.pipeline.drain("test")
            return await task

        assert asyncio.run(scenario()) == 0
        return {
            name.removeprefix("results/").removesuffix(".json"): json.loads(data)
            for name, data in self.store.results.items()
        }


def test_a_job_asking_two_models_gets_one_result_with_needs_run_first(models_dir: Path) -> None:
    # Given alpha, beta (needs alpha's answer) and a third package
    world = World(models_dir)
    # When jobs ask for alpha alone, beta (which pulls alpha in), and both
    results = world.run(
        [
            {"job_id": "a", "analyses": ["alpha_score"]},
            {"job_id": "b", "analyses": ["beta_score"]},
            {"job_id": "ab", "analyses": ["beta_score", "alpha_score"]},
        ]
    )
    # Then each job has exactly one result, holding exactly the analyses it asked for
    assert sorted(results) == ["a", "ab", "b"]
    assert set(results["a"]["outputs"]) == {"alpha_score"}
    assert set(results["b"]["outputs"]) == {"beta_score"}
    assert set(results["ab"]["outputs"]) == {"alpha_score", "beta_score"}
    # and beta ran after alpha, on alpha's answer
    alpha_label = results["ab"]["outputs"]["alpha_score"]["label"]
    assert results["ab"]["outputs"]["beta_score"]["after"] == alpha_label
    assert results["b"]["outputs"]["beta_score"]["after"] == alpha_label
    # and the timeline has each model's timings; the result names the models, in run order
    assert set(results["ab"]["timeline"]["models"]) == {"alpha", "beta"}
    assert set(results["a"]["timeline"]["models"]) == {"alpha"}
    assert results["ab"]["model"] == {"name": "alpha+beta", "version": "1+1"}
    assert results["a"]["model"] == {"name": "alpha", "version": "1"}
    print("timeline.models of ab:", results["ab"]["timeline"]["models"])
    assert world.models["bad"].batches == []


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("raise", "MODEL_PREPROCESS_FAILED"),
        ("shape", "MODEL_PREPROCESS_FAILED"),
        ("dtype", "MODEL_PREPROCESS_FAILED"),
        ("post_raise", "MODEL_OUTPUT_INVALID"),
        ("nan", "MODEL_OUTPUT_INVALID"),
        ("object", "MODEL_OUTPUT_INVALID"),
        ("missing", "MODEL_OUTPUT_INVALID"),
    ],
)
def test_a_misbehaving_handler_fails_its_job_on_the_first_delivery_and_no_other(
    models_dir: Path, mode: str, code: str
) -> None:
    # Given a package whose handler misbehaves for one job, next to jobs of another model
    world = World(models_dir)
    results = world.run(
        [
            {"job_id": "bad", "analyses": ["bad_score"], "params": {"mode": mode}},
            {"job_id": "good", "analyses": ["alpha_score"]},
            {"job_id": "bad-ok", "analyses": ["bad_score"]},
        ]
    )
    # Then that job is answered failed with a clear code on its first delivery, and acked
    assert results["bad"]["status"] == "failed" and results["bad"]["error"]["code"] == code
    assert "bad" in results["bad"]["error"]["message"]
    assert len(world.source.acked) == 3 and not world.source.nacked
    # and the other jobs, of this model and of another, succeed
    assert results["good"]["status"] == "succeeded" and results["bad-ok"]["status"] == "succeeded"


def test_an_unknown_analysis_is_answered_on_the_first_delivery(models_dir: Path) -> None:
    world = World(models_dir)
    results = world.run([{"job_id": "u", "analyses": ["alpha_score", "ocr"]}])
    assert results["u"]["error"]["code"] == "UNKNOWN_ANALYSIS"
    assert "ocr" in results["u"]["error"]["message"]
    assert not world.source.nacked


def test_a_job_naming_no_analyses_asks_for_every_offered_one_without_the_drawing_model(
    models_dir: Path,
) -> None:
    # classify+embed stay the default where the drawing model is served (tests/runtime/test_pipeline.py)
    world = World(models_dir)
    results = world.run([{"job_id": "all", "params": {}}])
    assert set(results["all"]["outputs"]) == {"alpha_score", "beta_score", "bad_score"}
