"""Model packages written in the test, served on the real local stack: a private tritonserver generated
from the test's package directory, a ``fleet worker`` pointed at it, jobs through the emulators.

- A tiny package (an ONNX graph made in the test, a few lines of pre/postprocess; tests/runtime/
  model_packages/tiny.py) answers jobs with exactly what its own functions around onnxruntime give, in
  batched Triton executions — no product code changed to serve it.
- A ``needs`` chain: beta's analysis needs alpha's; a job asking for beta gets one result, beta having
  run after alpha on alpha's answer; a job asking for both gets both in that one result.

The session stack keeps serving the bundled drawing model; this module's tritonserver serves only the
test's packages (tests/runtime/model_packages/served.py). Uses test_worker_integration's runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from worker.dev.devstack.tritonserver import TritonServer

from .model_packages import served, tiny
from .test_worker_integration import Run, make_run, wait_started

pytestmark = pytest.mark.integration
__all__ = ["make_run"]  # the fixture used here, defined there

#: Inputs of the tiny packages: JSON lists of four numbers.
VECTORS = ([1, 2, 3, 4], [-1, 0.5, 2, -3], [3, -2, 0, 1], [0, 0, 1, -1], [2, 2, -2, -2], [-3, 1, 1, 0.5])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` on its own, ``alpha`` and ``beta`` (beta's analysis needs alpha's), written here."""
    root = tmp_path_factory.mktemp("packages") / "models"
    tiny.write_package(root, "tiny")
    tiny.write_chain(root)
    return root


@pytest.fixture(scope="module")
def tiny_triton(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with served.private_triton(tiny_models, tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="module")
def vector_inputs(stack: Any, storage_client: Any) -> list[tuple[str, bytes]]:
    """(gs:// URI, bytes) of each of ``VECTORS``, uploaded once."""
    blobs = [(f"v{i}.json", json.dumps(v).encode(), "application/json") for i, v in enumerate(VECTORS)]
    return served.upload_inputs(stack, storage_client, "packages-it", blobs)


@dataclass
class Served:
    """A run with a started ``fleet worker`` serving ``models`` through ``triton``; the uploaded inputs."""

    run: Run
    models: Path
    triton: TritonServer
    inputs: list[tuple[str, bytes]]


@pytest.fixture
def tiny_served(
    make_run: Callable[..., Run],
    tiny_models: Path,
    tiny_triton: TritonServer,
    vector_inputs: list[tuple[str, bytes]],
) -> Served:
    """The test's packages served: batches wait up to 50 ms, so jobs published together share them."""
    run = make_run()
    worker = run.worker("w", FLEET_MAX_BATCH_DELAY_MS="50", **served.worker_env(tiny_triton, tiny_models))
    wait_started(worker)
    return Served(run, tiny_models, tiny_triton, vector_inputs)


@pytest.mark.timeout(300)
def test_a_package_written_in_the_test_is_served_by_pointing_triton_and_the_worker_at_its_folder(
    tiny_served: Served,
) -> None:
    # Given a worker pointed at the test's packages and the tritonserver generated from them
    run, triton, models = tiny_served.run, tiny_served.triton, tiny_served.models
    inferences_before, executions_before = served.model_stats(triton, "tiny")
    # When jobs ask for the tiny package's analysis, some with a params value its preprocess reads
    jobs = {
        f"t{i}": (uri, data, {"scale": 0.5} if i % 2 else {})
        for i, (uri, data) in enumerate(tiny_served.inputs * 2)
    }
    run.publish(
        [run.job(key, uri, analyses=["tiny_score"], params=params) for key, (uri, _, params) in jobs.items()]
    )
    notes = run.wait(list(jobs), timeout_s=90)
    # Then each job has one succeeded result with what the package's functions around its ONNX give
    for key, (_uri, data, params) in jobs.items():
        assert [n.status for n in notes[key]] == ["succeeded"], notes[key]
        document, _ = run.result(key)
        expected = served.onnx_answer(models / "tiny", data, {**params, "analyses": ["tiny_score"]})
        served.assert_close(document["outputs"], expected, atol=1e-5)
        assert document["model"] == {"name": "tiny", "version": "1"}
        assert set(document["timeline"]["models"]) == {"tiny"}
    # and Triton ran them in batches: fewer executions than inferences
    inferences, executions = served.settled_stats(triton, "tiny", inferences=inferences_before + len(jobs))
    inferences, executions = inferences - inferences_before, executions - executions_before
    print(f"tiny: {inferences} inferences in {executions} executions")
    assert inferences == len(jobs)
    assert 0 < executions < inferences


@pytest.mark.timeout(300)
def test_a_needs_chain_runs_in_order_and_answers_once(tiny_served: Served) -> None:
    # Given a worker serving alpha and beta, whose analysis needs alpha's
    run, triton, models = tiny_served.run, tiny_served.triton, tiny_served.models
    before = {m: served.model_stats(triton, m)[0] for m in ("alpha", "beta")}
    # When one job asks for beta only and another for both
    uri, data = tiny_served.inputs[0]
    run.publish(
        [
            run.job("b", uri, analyses=["beta_score"]),
            run.job("ab", uri, analyses=["beta_score", "alpha_score"]),
        ]
    )
    notes = run.wait(["b", "ab"], timeout_s=90)
    assert [n.status for n in notes["b"]] == ["succeeded"], notes["b"]
    assert [n.status for n in notes["ab"]] == ["succeeded"], notes["ab"]
    b, _ = run.result("b")
    ab, _ = run.result("ab")
    # Then alpha ran first and beta on its answer: beta's output is onnxruntime's given alpha's output
    alpha = served.onnx_answer(models / "alpha", data, {"analyses": ["alpha_score"], "needs": {}})
    beta = served.onnx_answer(
        models / "beta",
        data,
        {"analyses": ["beta_score"], "needs": {"alpha_score": alpha["alpha_score"]}},
    )
    print("alpha:", alpha, "beta:", beta, "timeline.models of ab:", ab["timeline"]["models"])
    assert b["outputs"] == beta
    served.assert_close(ab["outputs"], {**alpha, **beta}, atol=1e-5)
    # and each result names both models in the order they ran, with each model's timings
    for document in (b, ab):
        assert document["model"] == {"name": "alpha+beta", "version": "1+1"}
        assert list(document["timeline"]["models"]) == ["alpha", "beta"]
        assert all(
            {"preprocess_ms", "inference_ms"} <= set(t) for t in document["timeline"]["models"].values()
        )
    # and each model was asked once per job: alpha is not run twice for the job asking both
    after = {m: served.settled_stats(triton, m, inferences=before[m] + 2)[0] for m in ("alpha", "beta")}
    assert {m: after[m] - before[m] for m in after} == {"alpha": 2, "beta": 2}
