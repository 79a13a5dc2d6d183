"""A package written from docs/models.md alone, served on the real local stack as a new user would: every
job gets its answer, promptly, whatever the package's shapes, the fleet's packages or the page.

- Free size: the package's input is the page itself (``shape = [1, -1, -1]``), so pages of different sizes
  published together reach one batcher with tensors of different shapes; each job is answered with what
  onnxruntime gives for its own page.
- No drawing model: ``fleet submit --wait`` without ``--analyses`` against a fleet serving only this package
  returns as soon as the job is answered, and a re-run of the manifest finds the stored answer.
- Blank pages: a uniform grey page is a page to a package that is not the drawing model, alone and in a job
  that also asks for ``classify``; a white page is blank for both.

One private tritonserver serves the bundled drawing model and the test's package
(tests/runtime/model_packages/served.py); each case has its own run of the fleet's topics and its own
``fleet worker`` pointed at the packages it serves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from worker.dev import harness
from worker.dev.devstack.tritonserver import TritonServer
from worker.dev.drawings import render_image
from worker.runtime.model_packages import loader
from worker.shared import contracts

from .model_packages import free_size, served
from .test_pages_integration import job
from .test_worker_integration import Run, make_run, wait_started

pytestmark = pytest.mark.integration
__all__ = ["make_run"]  # the fixture used here, defined there

#: Page sizes published together: three shapes after the handler's reduction (48x32, 32x48, 48x48).
PAGE_SIZES = ((300, 200), (200, 300), (240, 240))
#: Long enough for every job published together to reach one batch.
BATCH_DELAY_MS = "300"
#: A job is answered within this many seconds on the loaded development machine, or it was left to hang.
ANSWER_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def package_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``alone``: the free-size package only; ``with_drawing``: it and the bundled drawing model."""
    root = tmp_path_factory.mktemp("user-packages")
    alone = root / "alone"
    free_size.write_package(alone)
    with_drawing = root / "with-drawing"
    free_size.write_package(with_drawing)
    shutil.copytree(loader.BUNDLED_MODELS_DIR / "drawing_analyzer", with_drawing / "drawing_analyzer")
    return {"alone": alone, "with_drawing": with_drawing}


@pytest.fixture(scope="module")
def triton(package_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with served.private_triton(package_dirs["with_drawing"], tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture
def serve(
    make_run: Callable[..., Run], triton: TritonServer, package_dirs: dict[str, Path]
) -> Callable[[str], Run]:
    """``serve(which) -> Run``: a run with one started worker serving ``package_dirs[which]``."""

    def _serve(which: str) -> Run:
        run = make_run()
        worker = run.worker(
            which, FLEET_MAX_BATCH_DELAY_MS=BATCH_DELAY_MS, **served.worker_env(triton, package_dirs[which])
        )
        wait_started(worker)
        return run

    return _serve


def upload_pages(stack: Any, storage_client: Any, pages: dict[str, Image.Image]) -> dict[str, str]:
    """gs:// URIs of the pages (PNG), uploaded under a fresh folder."""
    blobs = [(f"{name}.png", free_size.png(image), "image/png") for name, image in pages.items()]
    uris = served.upload_inputs(stack, storage_client, "user-packages", blobs)
    return {name: uri for name, (uri, _data) in zip(pages, uris, strict=True)}


def answered(run: Run, messages: list[harness.Message]) -> dict[str, dict[str, Any]]:
    """Publish together, wait for every notification, read each result (checked against its schema)."""
    run.publish(messages)
    notes = run.wait([m.key for m in messages], timeout_s=ANSWER_WITHIN_S)
    results = {}
    for message in messages:
        assert [n.status for n in notes[message.key]] == ["succeeded"], notes[message.key]
        document, _generation = run.result(message.key)
        jsonschema.validate(document, contracts.load_schema("result", document["schema_version"]))
        results[message.key] = document
    return results


@pytest.mark.timeout(400)
def test_pages_of_different_sizes_published_together_are_each_answered_with_their_own_output(
    serve: Callable[[str], Run], package_dirs: dict[str, Path], stack: Any, storage_client: Any
) -> None:
    # Given a worker serving only the free-size package, batching for 300 ms
    run = serve("alone")
    pages = {f"p{i}": free_size.page(PAGE_SIZES[i % len(PAGE_SIZES)]) for i in range(6)}
    uris = upload_pages(stack, storage_client, pages)
    # When jobs of pages of three sizes are published together
    results = answered(run, [job(run, key, uri, analyses=["darkness"]) for key, uri in uris.items()])
    # Then each is answered with what onnxruntime gives for its own page
    for key, image in pages.items():
        expected = served.onnx_answer(
            package_dirs["alone"] / "sizes", free_size.png(image), {"analyses": ["darkness"]}
        )
        served.assert_close(results[key]["outputs"], expected, atol=1e-4)


def fleet(
    env: dict[str, str], *args: str, timeout_s: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The ``fleet`` CLI as a user runs it, against the run's topics; (the process, seconds it took)."""
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s + 60,
        check=False,
    )
    return process, time.monotonic() - started


@pytest.mark.timeout(400)
def test_submit_wait_without_analyses_returns_when_a_fleet_without_the_drawing_model_answers(
    serve: Callable[[str], Run], tmp_path: Path
) -> None:
    # Given a fleet serving only the free-size package, and a page and a manifest naming no analyses
    run = serve("alone")
    env = {**run.env.process_env(), "FLEET_CLIENT_ID": f"user-{run.run_id}"}
    env.pop("FLEET_NAMESPACE", None)
    page_file = tmp_path / "page.png"
    page_file.write_bytes(free_size.png(free_size.page((300, 200))))
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"job_id": run.job_id("manifest"), "input": str(page_file)}) + "\n")
    # When the user submits the page and waits, without --analyses
    timeout_s = ANSWER_WITHIN_S
    submitted, took_s = fleet(
        env, "submit", "--wait", "--json", "--timeout", f"{timeout_s:g}", str(page_file), timeout_s=timeout_s
    )
    # Then the wait ends with the job's answer, not at --timeout
    assert submitted.returncode == 0, (took_s, submitted.stdout[-2000:], submitted.stderr[-2000:])
    report = json.loads(submitted.stdout)
    assert report["summary"] == {"succeeded": 1}, report
    assert took_s < timeout_s / 2, took_s
    # When a manifest naming no analyses is submitted and then submitted again
    first, _ = fleet(
        env, "submit", "--wait", "--json", "--timeout", f"{timeout_s:g}", str(manifest), timeout_s=timeout_s
    )
    again, _ = fleet(
        env, "submit", "--wait", "--json", "--timeout", f"{timeout_s:g}", str(manifest), timeout_s=timeout_s
    )
    # Then the first run is answered and the re-run finds that answer instead of publishing again
    assert first.returncode == 0, first.stdout[-2000:]
    assert again.returncode == 0, again.stdout[-2000:]
    assert json.loads(again.stdout)["already_answered"] == [run.job_id("manifest")]
    # and the result records the analyses that ran: the fleet's default for this fleet
    document, _ = run.result("manifest")
    assert document["analyses"] == ["darkness"]


@pytest.mark.timeout(400)
def test_a_grey_page_is_analysed_by_a_package_that_is_not_the_drawing_model_alone_and_beside_classify(
    serve: Callable[[str], Run], stack: Any, storage_client: Any
) -> None:
    # Given a uniform mid-grey page, a white page and a drawing
    drawing, _label = render_image(3, "gear", size=(877, 620))
    uris = upload_pages(
        stack,
        storage_client,
        {
            "grey": Image.new("L", (877, 620), 128),
            "white": Image.new("L", (877, 620), 255),
            "drawing": drawing,
        },
    )
    # When a fleet serving only the free-size package analyses the grey page
    alone = serve("alone")
    grey = answered(alone, [job(alone, "grey", uris["grey"], analyses=["darkness"])])["grey"]
    # Then it is not blank: the package's output is there
    assert grey["pages"][0]["blank"] is False, grey["pages"]
    assert grey["outputs"]["darkness"]["darkness"] == pytest.approx(127 / 255, abs=0.01)
    # When a fleet with the drawing model analyses each page for classify and the package together
    both = serve("with_drawing")
    results = answered(
        both,
        [job(both, key, uri, analyses=["classify", "darkness"]) for key, uri in uris.items()],
    )
    # Then the grey page and the drawing are analysed by both models, and the white page by neither
    for key in ("grey", "drawing"):
        page = results[key]["pages"][0]
        assert page["blank"] is False and set(page["outputs"]) == {"classify", "darkness"}, (key, page)
    white = results["white"]["pages"][0]
    assert white["blank"] is True and white["outputs"] is None, white
    assert results["grey"]["outputs"]["darkness"] == grey["outputs"]["darkness"]
