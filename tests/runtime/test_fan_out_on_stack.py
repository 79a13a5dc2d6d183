"""Fan-out items, context and page frames on the real local stack: packages written in the test
(tests/runtime/model_packages/paged.py, shaped.py) served by a private tritonserver, a ``fleet worker``
pointed at them, jobs through both emulators.

- ``bars`` gives one item per bar on a page (0..8), each crop padded to its width bucket in the pool:
  the items of several pages, and of several jobs, share Triton executions (Triton's own statistics);
  each row comes back to its bar (a bar's ink is 8 x its width, the pad's is 0); a page with no bar is
  answered with no line; a page of 9 bars is TOO_MANY_ITEMS and a bar wider than the bounds
  TENSOR_OUT_OF_BOUNDS, each failing its job only.
- ``detector`` -> ``reader`` (shaped.py): a context from one item's preprocess to its postprocess, then a
  fan-out of crops whose preprocess needs the detector's answer: the job's answer equals the same
  chain run by onnxruntime (``chain.run_plan``).
- ``framer`` answers its page's ink box in the page's frame: a PNG reduced to 600 px, a JPEG decoded at
  1/4 by DCT scaling, a TIFF's second page, a rotated PDF page rendered at 50 dpi; each box is where the
  ink really is in the file's pixels (the PDF's: in points, rotation applied), and the result's
  ``pages[].frame`` says which frame.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.dev.devstack.tritonserver import TritonServer
from worker.runtime.model_packages import chain, onnx_tools
from worker.runtime.model_packages.loader import load_packages

from .model_packages import paged, served, shaped
from .test_pages_integration import answered, job
from .test_worker_integration import Run, module_run

pytestmark = pytest.mark.integration

#: Bars of each page of the multi-page documents; widths 10 / 30 / 50 go to the buckets 16 / 32 / 64.
TWO_BARS = [10, 12]
MIXED = [10, 30, 50, 100]  # 100: past the largest bucket, within the bounds (128): goes as it is
#: The ink boxes drawn for ``framer`` (file pixels; the PDF's in PDF user space, points).
PNG_BOX, JPEG_BOX, TIFF_BOX = (200, 100, 600, 300), (400, 300, 1200, 900), (100, 60, 500, 260)
PDF_BOX = (100.0, 500.0, 300.0, 600.0)
#: Where the PDF's box is in its frame: /Rotate 90 turns the 612 x 792 pt page to 792 x 612, and the
#: box (x 100..300, y 500..600 from the bottom left) to x 500..600, y 100..300 from the top left.
PDF_BOX_IN_FRAME = (500.0, 100.0, 600.0, 300.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fan-out") / "models"
    shaped.write_chain(root)
    paged.write_bars(root)
    paged.write_framer(root)
    return root


@pytest.fixture(scope="module")
def triton(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with served.private_triton(models, tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="module")
def inputs(stack: Any, storage_client: Any) -> dict[str, str]:
    """gs:// URIs of the module's documents, uploaded once."""
    bars = paged.bars_page
    made = {
        "two-pages.tif": paged.tiff([bars(TWO_BARS), bars(TWO_BARS)]),
        "four-pages.tif": paged.tiff([bars(TWO_BARS)] * 4),
        "mixed.tif": paged.tiff([bars(MIXED), bars([]), bars([20])]),
        "nine-bars.png": paged.png(bars([10] * 9)),
        "wide-bar.png": paged.png(bars([130], width=140)),
        "one-bar.png": paged.png(bars([20])),
        "frame.png": paged.png(paged.ink_page((1000, 700), PNG_BOX)),
        "frame.jpg": paged.jpeg(paged.ink_page((2400, 1600), JPEG_BOX)),
        "frame.tif": paged.tiff(
            [paged.ink_page((300, 200), (1, 1, 5, 5)), paged.ink_page((800, 600), TIFF_BOX)]
        ),
        "frame.pdf": paged.rotated_pdf(PDF_BOX),
        **{f"page{i}.json": json.dumps(page).encode() for i, page in enumerate(shaped.PAGES)},
    }
    bucket = storage_client.bucket(stack.env["FLEET_INPUT_BUCKET"])
    folder = f"fan-out-it/{uuid.uuid4().hex[:8]}"
    uris = {}
    for name, data in made.items():
        bucket.blob(f"{folder}/{name}").upload_from_string(data)
        uris[name] = f"gs://{bucket.name}/{folder}/{name}"
    return uris


@pytest.fixture(scope="module")
def run(
    stack: Any,
    storage_client: Any,
    models: Path,
    triton: TritonServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    """One run with one worker serving the test's packages. Batches wait up to 200 ms, so items that
    arrive together share them."""
    workdir = tmp_path_factory.mktemp("fan-out-run")
    extra = {"FLEET_MAX_BATCH_DELAY_MS": "200", **served.worker_env(triton, models)}
    with module_run(stack, storage_client, workdir, **extra) as shared:
        yield shared


def executions(triton: TritonServer, before: tuple[int, int], items: int) -> tuple[int, int]:
    """(inferences, executions) of ``bars`` since ``before``, once ``items`` more inferences are counted."""
    inferences, runs = served.settled_stats(triton, "bars", inferences=before[0] + items)
    return inferences - before[0], runs - before[1]


def lines(page: dict[str, Any]) -> list[dict[str, Any]]:
    return list(page["outputs"]["bars"]["lines"])


@pytest.mark.timeout(300)
def test_the_items_of_many_pages_and_jobs_share_executions_and_each_row_comes_back_to_its_item(
    run: Run, triton: TritonServer, inputs: dict[str, str]
) -> None:
    # Given a job of a 4-page document with 2 bars a page (8 items, one bucket), published alone
    before = served.model_stats(triton, "bars")
    four = answered(run, [job(run, "four-pages", inputs["four-pages.tif"], analyses=["bars"])])
    inferences, runs = executions(triton, before, 8)
    print(f"one job of 4 pages: {inferences} items in {runs} executions")
    # Then its 8 items went in fewer executions than it has pages: items of several pages shared one
    assert inferences == 8 and runs < 4
    assert [lines(p) for p in four["four-pages"]["pages"]] == [paged.bars_expected(TWO_BARS)] * 4

    # Given 6 jobs of 2 pages each (24 items, one bucket) published together
    before = served.model_stats(triton, "bars")
    keys = [f"two-pages-{i}" for i in range(6)]
    results = answered(
        run, [job(run, key, inputs["two-pages.tif"], analyses=["bars"], params={"note": key}) for key in keys]
    )
    inferences, runs = executions(triton, before, 24)
    print(f"6 jobs of 2 pages: {inferences} items in {runs} executions")
    # Then they took fewer executions than there are jobs: items of several jobs shared one
    assert inferences == 24 and runs < 6
    # and every job has its own rows, in its bars' order, and its own context back
    for key in keys:
        document = results[key]
        assert document["status"] == "succeeded" and document["page_count"] == 2
        for number, page in enumerate(document["pages"], start=1):
            assert lines(page) == paged.bars_expected(TWO_BARS)
            assert page["outputs"]["bars"]["note"] == key and page["outputs"]["bars"]["page"] == number
            assert page["outputs"]["bars"]["size"] == [160, 28]
            assert page["frame"] == {"width": 160, "height": 28, "unit": "px"}


@pytest.mark.timeout(300)
def test_mixed_buckets_no_items_and_the_bounds_each_get_their_answer(
    run: Run, triton: TritonServer, inputs: dict[str, str]
) -> None:
    # Given a 3-page document (bars of 4 widths in 3 buckets and past them; no bar; one bar), a page of
    # 9 bars (max_items is 8), a bar wider than the bounds (130 > 128), and a plain page, together
    before = served.model_stats(triton, "bars")
    results = answered(
        run,
        [
            job(run, "mixed", inputs["mixed.tif"], analyses=["bars"]),
            job(run, "nine", inputs["nine-bars.png"], analyses=["bars"]),
            job(run, "wide", inputs["wide-bar.png"], analyses=["bars"]),
            job(run, "one", inputs["one-bar.png"], analyses=["bars"]),
        ],
    )
    # Then the mixed page answers each bar from its own bucket's request (the 100-wide one unpadded),
    # the page without bars answers no line without an inference, the third its one bar
    mixed = results["mixed"]
    assert mixed["status"] == "succeeded"
    first, empty, third = mixed["pages"]
    assert lines(first) == paged.bars_expected(MIXED)
    assert lines(empty) == [] and empty["timeline"]["inference_ms"] == 0.0 and empty["blank"]
    assert lines(third) == paged.bars_expected([20])
    # and the bad pages fail their own jobs only, on the first delivery, naming package and limit
    nine, wide = results["nine"], results["wide"]
    assert (nine["status"], nine["error"]["code"]) == ("failed", "TOO_MANY_ITEMS")
    assert "bars" in nine["error"]["message"] and "9 items" in nine["error"]["message"]
    assert (wide["status"], wide["error"]["code"]) == ("failed", "TENSOR_OUT_OF_BOUNDS")
    assert "[1, 8, 130]" in wide["error"]["message"]
    assert nine["delivery_attempt"] == wide["delivery_attempt"] == 1
    assert lines(results["one"]["pages"][0]) == paged.bars_expected([20])
    # and no item of a refused page reached Triton: 4 + 1 + 1 items
    inferences, _runs = executions(triton, before, 6)
    assert inferences == 6


@pytest.mark.timeout(300)
def test_a_context_and_a_fan_out_with_needs_answer_as_the_chain_does_on_onnxruntime(
    run: Run, models: Path, inputs: dict[str, str]
) -> None:
    # Given JSON pages for the detector (its boxes travel in its context) and the reader (one crop per
    # region the detector answered: a fan-out whose preprocess needs the detector's answer)
    keys = {f"page{i}": inputs[f"page{i}.json"] for i in range(len(shaped.PAGES))}
    results = answered(run, [job(run, key, uri, analyses=["text", "regions"]) for key, uri in keys.items()])
    catalog = load_packages(models)
    for index, key in enumerate(keys):
        data = json.dumps(shaped.PAGES[index]).encode()
        expected = chain.run_plan(catalog, ["text", "regions"], data, {"page": 1}, onnx_tools.OnnxInfer())
        document = results[key]
        # Then the job answers what the chain gives on onnxruntime: boxes from the context, crops back
        assert document["status"] == "succeeded", document["error"]
        served.assert_close(document["outputs"], expected, atol=1e-4)
        assert document["model"]["name"] == "detector+reader"
        assert [line["box"] for line in document["outputs"]["text"]["lines"]] == [
            region["box"] for region in expected["regions"]["boxes"]
        ]


@pytest.mark.timeout(300)
def test_outputs_come_back_in_each_pages_own_frame(run: Run, inputs: dict[str, str]) -> None:
    # Given ink boxes drawn at known places: a 1000 x 700 PNG (decoded reduced to 500 x 350), a
    # 2400 x 1600 JPEG (decoded at 1/4 by DCT scaling), a TIFF's 800 x 600 second page (400 x 300),
    # and a rotated US-letter PDF page (rendered at 50 dpi)
    cases: dict[str, tuple[str, int, tuple[float, ...], tuple[float, float, str], list[int]]] = {
        "png": ("frame.png", 1, PNG_BOX, (1000, 700, "px"), [500, 350]),
        "jpeg": ("frame.jpg", 1, JPEG_BOX, (2400, 1600, "px"), [600, 400]),
        "tiff": ("frame.tif", 2, TIFF_BOX, (800, 600, "px"), [400, 300]),
        "pdf": ("frame.pdf", 1, PDF_BOX_IN_FRAME, (792.0, 612.0, "pt"), [550, 425]),
    }
    results = answered(
        run,
        [
            job(run, f"frame-{k}", inputs[name], analyses=["ink_box"], pages=[n])
            for k, (name, n, *_) in cases.items()
        ],
    )
    for kind, (_name, _number, box, frame, decoded) in cases.items():
        (page,) = results[f"frame-{kind}"]["pages"]
        answer = page["outputs"]["ink_box"]
        # Then the page record names the frame, the handler decoded the page at its declared size
        width, height, unit = frame
        assert page["frame"] == {"width": width, "height": height, "unit": unit}, kind
        assert answer["decoded"] == decoded, kind
        # and the box it answers is where the ink is in that frame, within one decoded pixel
        pixel = width / decoded[0]
        assert answer["box"] == pytest.approx(list(box), abs=pixel), (kind, answer["box"], box)
