"""Pages through the client on the local stack (issue 22): real emulators, tritonserver, a fleet worker.

A two-page TIFF made in the test from generator drawings (page 1 blank, page 2 a drawing) is submitted
the way a user does — the SDK with every page and with ``pages``, the CLI with ``--pages`` and with
``--schema-version 1`` — and its per-page answers are read back through ``FleetClient.result`` and
``fleet status``. The drawing's page must be answered exactly as the same drawing sent alone as a PNG.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from worker.client import sdk
from worker.dev.drawings import encode, render_image

from .local_stack import fleet, run_id, serving_workers

pytestmark = pytest.mark.integration

DRAWING_SIZE = (877, 620)  # the size of the drawing model's reference drawings
DRAWING_SEED = 4
WAIT_S = 180


@pytest.fixture(scope="module")
def worker(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[subprocess.Popen[bytes]]]:
    with serving_workers(stack, tmp_path_factory.mktemp("pages-worker"), 1) as processes:
        yield processes


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``tiff``: page 1 blank paper, page 2 a bracket drawing; ``png``: that drawing alone."""
    folder = tmp_path_factory.mktemp("pages")
    drawing, label = render_image(DRAWING_SEED, "bracket", size=DRAWING_SIZE)
    assert label == "bracket"
    blank = Image.new("L", DRAWING_SIZE, 255)
    buffer = io.BytesIO()
    blank.save(buffer, "TIFF", save_all=True, append_images=[drawing], compression="tiff_deflate")
    (folder / "set.tif").write_bytes(buffer.getvalue())
    (folder / "bracket.png").write_bytes(encode(drawing))
    return {"tiff": folder / "set.tif", "png": folder / "bracket.png"}


def answer(client: sdk.FleetClient, requests: list[sdk.JobRequest], **options: Any) -> list[sdk.JobResult]:
    """Submit, wait, and read every job's result object."""
    receipt = client.submit(requests, **options)
    outcomes = client.wait(receipt.job_ids, timeout_s=WAIT_S)
    assert all(o.answered for o in outcomes.values()), outcomes
    results = [client.result(job_id) for job_id in receipt.job_ids]
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_a_two_page_tiff_is_answered_page_by_page_through_the_sdk(
    worker: list[subprocess.Popen[bytes]], documents: dict[str, Path]
) -> None:
    with sdk.FleetClient(sdk.ClientSettings.from_env()) as client:
        # the drawing alone, as a v1 job an older client would send: the reference answer
        png = sdk.JobRequest(f"png-{run_id()}", str(documents["png"]))
        (alone,) = answer(client, [png], schema_version=1)
        every, second = answer(
            client,
            [
                sdk.JobRequest(f"tiff-{run_id()}", str(documents["tiff"])),
                sdk.JobRequest(f"tiff-p2-{run_id()}", str(documents["tiff"]), pages=(2,)),
            ],
        )

    assert (alone.status, alone.schema_version) == ("succeeded", 1)
    reference = alone.outputs
    assert reference is not None and reference["classify"]["label"] == "bracket"

    # every page: page 1 is blank (no model ran), page 2 is the drawing, answered as it is alone
    assert (every.status, every.schema_version, every.page_count) == ("succeeded", 2, 2)
    assert [(p.page, p.blank) for p in every.pages] == [(1, True), (2, False)]
    assert every.page(1).outputs is None and every.page(1).ink is not None
    assert_same_answer(every.page(2).outputs, reference)
    with pytest.raises(sdk.MultiPageResult):
        _ = every.outputs

    # pages=[2]: that page only, of a document of two
    assert (second.status, second.page_count, [p.page for p in second.pages]) == ("succeeded", 2, [2])
    assert_same_answer(second.page(2).outputs, reference)


def assert_same_answer(outputs: dict[str, Any] | None, reference: dict[str, Any]) -> None:
    assert outputs is not None
    assert outputs["classify"]["label"] == reference["classify"]["label"]
    for name, score in reference["classify"]["scores"].items():
        assert outputs["classify"]["scores"][name] == pytest.approx(score, abs=1e-4)
    assert len(outputs["embed"]["embedding"]) == len(reference["embed"]["embedding"])


def test_fleet_submit_pages_and_status_print_the_answer_of_each_page(
    worker: list[subprocess.Popen[bytes]], documents: dict[str, Path]
) -> None:
    tiff = str(documents["tiff"])
    every = fleet("submit", "--wait", "--json", tiff, timeout_s=WAIT_S + 60)
    one = fleet("submit", "--wait", "--json", "--pages", "2", tiff, timeout_s=WAIT_S + 60)
    assert every.returncode == 0 and one.returncode == 0, every.stderr + one.stderr
    (every_id,) = json.loads(every.stdout)["published"]
    (one_id,) = json.loads(one.stdout)["published"]

    status = fleet("status", every_id)
    assert status.returncode == 0, status.stderr
    print(f"\n[client] fleet status of a 2-page TIFF:\n{status.stdout}")
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"{every_id}: succeeded  gs://")
    assert lines[1].startswith("  2 pages  model=")
    assert lines[2].startswith("  page 1: blank (ink ")
    assert lines[3].startswith("  page 2: label=bracket (")
    assert len(lines) == 4

    one_status = fleet("status", one_id).stdout.splitlines()
    assert one_status[1].startswith("  2 pages, 1 analysed  model=")
    assert [line.split(":")[0] for line in one_status[2:]] == ["  page 2"]

    printed = json.loads(fleet("status", every_id, "--json").stdout)
    assert printed["page_count"] == 2 and printed["outputs"] is None
    assert [(p["page"], p["blank"]) for p in printed["pages"]] == [(1, True), (2, False)]
    assert printed["pages"][1]["outputs"]["classify"]["label"] == "bracket"


def test_a_schema_version_1_job_of_a_two_page_tiff_fails_multi_page_input(
    worker: list[subprocess.Popen[bytes]], documents: dict[str, Path]
) -> None:
    tiff = str(documents["tiff"])
    done = fleet("submit", "--wait", "--json", "--schema-version", "1", tiff, timeout_s=WAIT_S + 60)

    assert done.returncode == 1, done.stderr
    (job,) = json.loads(done.stdout)["jobs"]
    assert job["status"] == "failed" and job["error"]["code"] == "MULTI_PAGE_INPUT"
    assert "2 pages" in job["error"]["message"]
