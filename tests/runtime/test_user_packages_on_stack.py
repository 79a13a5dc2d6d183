"""A package written from docs/models.md alone, served on the real local stack as a new user would: every
job gets its answer, promptly, whatever the package's shapes, the fleet's packages or the page.

- Free size: the package's input is the page itself (``shape = [1, -1, -1]``), so pages of different sizes
  published together reach one batcher with tensors of different shapes; each job is answered with what
  onnxruntime gives for its own page.

One private tritonserver serves the bundled drawing model and the test's package
(tests/runtime/model_packages/served.py); each case has its own run of the fleet's topics and its own
``fleet worker`` pointed at the packages it serves.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from worker.dev import harness
from worker.dev.devstack.tritonserver import TritonServer
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
