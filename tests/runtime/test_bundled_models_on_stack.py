"""Both bundled packages served side by side on the real local stack: drawing_analyzer (classify, embed;
192 px) and symbol_recognizer (symbols; 384 px, multi-label).

A private tritonserver generated from a folder holding just those two packages (links to worker/models/),
and a ``fleet worker`` pointed at it (tests/runtime/model_packages/served.py): jobs asking for one model's
analyses, the other's, and both each get exactly one result, equal to what each package's own functions
around its ONNX give (onnxruntime), and Triton's statistics show batched executions for each model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.dev import drawings
from worker.dev.devstack.tritonserver import TritonServer
from worker.runtime.model_packages.loader import BUNDLED_MODELS_DIR

from .model_packages import served
from .test_worker_integration import Run, make_run, wait_started

pytestmark = pytest.mark.integration
__all__ = ["make_run"]  # the fixture used here, defined there

#: Each bundled package -> the analyses it offers.
OFFERS = {"drawing_analyzer": ("classify", "embed"), "symbol_recognizer": ("symbols",)}
MODELS = tuple(OFFERS)
DRAWINGS = 6
DRAWING_SIZE_PX = (640, 452)  # small enough for a quick run, large enough for the symbols
#: What a job asks for -> the models that must answer it.
ASKS: dict[str, tuple[list[str], set[str]]] = {
    "drawing": (["classify", "embed"], {"drawing_analyzer"}),
    "symbols": (["symbols"], {"symbol_recognizer"}),
    "both": (["classify", "symbols"], {"drawing_analyzer", "symbol_recognizer"}),
}


def link_bundled(root: Path) -> Path:
    """``root`` with exactly the two bundled packages (links), whatever else worker/models/ holds."""
    root.mkdir()
    for name in MODELS:
        assert (BUNDLED_MODELS_DIR / name / "model.toml").is_file(), f"bundled package {name} missing"
        (root / name).symlink_to(BUNDLED_MODELS_DIR / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def bundled_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TritonServer]]:
    """The folder of the two bundled packages and a tritonserver generated from it."""
    work = tmp_path_factory.mktemp("bundled")
    models = link_bundled(work / "models")
    with served.private_triton(models, work / "triton") as server:
        yield models, server


@pytest.fixture(scope="module")
def symbol_drawings(stack: Any, storage_client: Any) -> list[tuple[str, bytes]]:
    """(gs:// URI, bytes) of drawings carrying annotation symbols, uploaded once."""
    blobs = [
        (f"d{i}.png", drawings.render_symbol_drawing(i + 900, size=DRAWING_SIZE_PX)[0], "image/png")
        for i in range(DRAWINGS)
    ]
    return served.upload_inputs(stack, storage_client, "bundled-it", blobs)


@pytest.mark.timeout(420)
def test_two_bundled_models_answer_one_result_per_job_in_batches_per_model(
    make_run: Callable[..., Run],
    bundled_triton: tuple[Path, TritonServer],
    symbol_drawings: list[tuple[str, bytes]],
) -> None:
    bundled_models, triton = bundled_triton
    # Given a worker serving both bundled packages (batches wait up to 50 ms to fill)
    run = make_run()
    env = served.worker_env(triton, bundled_models)
    wait_started(run.worker("w", FLEET_MAX_BATCH_DELAY_MS="50", **env))
    before = {m: served.model_stats(triton, m) for m in MODELS}
    # When each drawing is asked for the drawing model's analyses, the symbol model's, and both
    jobs = {
        f"{kind}-{i}": (kind, uri, data) for kind in ASKS for i, (uri, data) in enumerate(symbol_drawings)
    }
    run.publish([run.job(key, uri, analyses=ASKS[kind][0]) for key, (kind, uri, _) in jobs.items()])
    notes = run.wait(list(jobs), timeout_s=240)
    # Then each job has exactly one succeeded result, holding the asked analyses of the right models
    for key, (kind, _uri, data) in jobs.items():
        assert [n.status for n in notes[key]] == ["succeeded"], (key, notes[key])
        document, _ = run.result(key)
        analyses, models = ASKS[kind]
        assert set(document["timeline"]["models"]) == models, key
        assert set(document["model"]["name"].split("+")) == models, key
        # equal to each package's own preprocess/postprocess around its ONNX (onnxruntime)
        expected: dict[str, Any] = {}
        for model in models:
            offered = [a for a in analyses if a in OFFERS[model]]
            answer = served.onnx_answer(bundled_models / model, data, {"analyses": offered, "needs": {}})
            expected.update({a: answer[a] for a in offered})
        served.assert_close(document["outputs"], expected, where=key)
    # and Triton ran each model's jobs in batches: fewer executions than inferences, per model
    for model in MODELS:
        asked = sum(model in ASKS[kind][1] for kind, _, _ in jobs.values())
        inferences, executions = served.settled_stats(triton, model, inferences=before[model][0] + asked)
        inferences, executions = inferences - before[model][0], executions - before[model][1]
        print(f"{model}: {inferences} inferences in {executions} executions")
        assert inferences == asked
        assert 0 < executions < inferences
