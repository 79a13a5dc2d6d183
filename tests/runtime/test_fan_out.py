"""Fan-out in the worker's ModelSet, with a fake model (the integration test, test_fan_out_on_stack.py, runs
the same on the real tritonserver): each item goes to the package's Batcher on its own, the rows come
back to postprocess in the items' order with the context, a page of no items makes no request, and one
item failing fails its own job only; a job that gives up takes its queued items out of the queue.

The package is ``bars`` (tests/runtime/model_packages/paged.py); the decode is faked: the job's input is a
JSON list of (width, value) per item, so a test says what each item holds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.runtime.model_packages import handlers
from worker.runtime.model_packages.catalog import Step
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.model_packages.items import PageItems
from worker.runtime.model_packages.loader import load_packages
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.models import ModelSet, Ran
from worker.runtime.pipeline.outage import Health
from worker.shared import errors

from .model_packages import paged
from .test_pipeline import SETTINGS


class ColumnsModel:
    """``columns`` = each crop's column sums; a request holding a negative crop is rejected (as Triton's
    INVALID_ARGUMENT); ``hold`` keeps requests until set. Records each request's batch shape."""

    name = "bars"
    version = "1"

    def __init__(self) -> None:
        self.requests: list[tuple[int, ...]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.short = False  # answer one row short: every item of the request fails MODEL_OUTPUT_INVALID

    async def ready(self) -> bool:
        return True

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        crops = inputs["crop"]
        self.requests.append(tuple(crops.shape))
        await self.hold.wait()
        if float(crops.min()) < 0:
            raise errors.ModelRejected("INVALID_ARGUMENT: a negative crop")
        columns = crops.sum(axis=(1, 2)).astype(np.float32)
        return {"columns": columns[:-1] if self.short else columns}


def crop(width: int, value: float) -> dict[str, np.ndarray[Any, Any]]:
    return {"crop": np.full((1, 8, width), value, dtype=np.float32)}


class World:
    """The ``bars`` package in a ModelSet over ``ColumnsModel``; ``run`` asks it for one job's input."""

    def __init__(self, root: Path) -> None:
        paged.write_bars(root)
        self.catalog = load_packages(root)
        self.model = ColumnsModel()
        self.models = ModelSet(
            self.catalog, {"bars": self.model}, Health(), settings=SETTINGS, gate=InteractiveGate()
        )

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[World]:
        batchers = [asyncio.create_task(b.run()) for b in self.models.batchers.values()]
        try:
            yield self
        finally:
            for task in batchers:
                task.cancel()
            await asyncio.gather(*batchers, return_exceptions=True)

    async def run(self, items: list[tuple[int, float]]) -> Ran:
        package = self.catalog.by_name["bars"]

        async def decode(step: Step, data: bytes, params: dict[str, Any], *, measure: bool) -> Preprocessed:
            spec = json.loads(data)
            context = {
                "bars": [(4 + 12 * i, w) for i, (w, _v) in enumerate(spec)],
                "size": (160, 40),
                "note": 1,
            }
            page = PageItems(tuple(crop(w, v) for w, v in spec), context)
            return Preprocessed(page.padded(package.declaration.inputs), None)

        data = json.dumps(items).encode()
        return await self.models.run(("bars",), data, {}, interactive=False, decode=decode)


def lines(ran: Ran) -> list[dict[str, Any]]:
    outputs = ran.outputs
    assert outputs is not None
    return list(outputs["bars"]["lines"])


def test_items_of_two_jobs_share_requests_and_each_row_goes_back_to_its_item(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Ran], list[tuple[int, ...]]]:
        async with World(tmp_path).serving() as world:
            # Given two jobs of 3 items each, widths in two buckets (16 and 32), values that tell them apart
            first = world.run([(10, 1.0), (20, 2.0), (12, 3.0)])
            second = world.run([(14, 4.0), (30, 5.0), (5, 6.0)])
            ran = await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
        return list(ran), world.model.requests

    (first, second), requests = asyncio.run(scenario())
    # Then the items went by bucket, both jobs' in one request per bucket (max 4 items a request)
    assert sorted(requests) == [(2, 1, 8, 32), (4, 1, 8, 16)]
    # and each job's postprocess got its own rows in its items' order, unpadded by the item shapes
    assert [(line["width"], line["ink"], line["padded"]) for line in lines(first)] == [
        (10, 80.0, 16),
        (20, 320.0, 32),
        (12, 288.0, 16),
    ]
    assert [(line["width"], line["ink"]) for line in lines(second)] == [(14, 448.0), (30, 1200.0), (5, 240.0)]
    assert all(line["pad_ink"] == 0.0 for line in lines(first) + lines(second))
    # and the page's inference time spans its requests
    assert first.inference_ms > 0 and first.timings["bars"]["inference_ms"] == first.inference_ms


def test_a_page_of_no_items_makes_no_request_and_postprocess_gets_an_empty_list(tmp_path: Path) -> None:
    async def scenario() -> tuple[Ran, list[tuple[int, ...]]]:
        async with World(tmp_path).serving() as world:
            ran = await asyncio.wait_for(world.run([]), timeout=5)
        return ran, world.model.requests

    ran, requests = asyncio.run(scenario())
    assert lines(ran) == [] and requests == [] and ran.inference_ms == 0.0
    assert ran.models == {"bars": "1"}  # the package answered the page, without inference


def test_an_item_the_model_rejects_fails_its_own_job_and_never_its_neighbours(tmp_path: Path) -> None:
    async def scenario() -> tuple[Ran | BaseException, Ran | BaseException]:
        async with World(tmp_path).serving() as world:
            # Given a job with one item the model refuses, and a job whose items share its request
            bad = world.run([(10, 1.0), (10, -1.0)])
            good = world.run([(10, 2.0), (10, 3.0)])
            both = asyncio.gather(bad, good, return_exceptions=True)
            return await asyncio.wait_for(both, timeout=5)

    bad, good = asyncio.run(scenario())
    # Then the job holding the refused item is answered MODEL_REJECTED, and the other succeeds
    assert isinstance(bad, errors.ModelRejected)
    assert isinstance(good, Ran) and [line["ink"] for line in lines(good)] == [160.0, 240.0]


def test_a_job_that_gives_up_takes_its_queued_items_out_of_the_queue(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[int, ...]]:
        async with World(tmp_path).serving() as world:
            # Given a job of 8 items (two requests of 4) whose first request is held at the model
            world.model.hold.clear()
            job = asyncio.create_task(world.run([(10, 1.0)] * 8))
            while not world.model.requests:
                await asyncio.sleep(0.001)
            # When the job is cancelled (its time ran out) and the model lets the request go
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            world.model.hold.set()
            await asyncio.sleep(0.05)
            return world.model.requests

    # Then its second request was never sent
    assert asyncio.run(scenario()) == [(4, 1, 8, 16)]


def test_a_job_whose_item_fails_sends_none_of_its_items_still_queued(tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, list[tuple[int, ...]]]:
        async with World(tmp_path).serving() as world:
            # Given a job of 8 items (two requests of 4) whose first request comes back a row short
            world.model.short = True
            outcome = await asyncio.wait_for(
                asyncio.gather(world.run([(10, 1.0)] * 8), return_exceptions=True), timeout=5
            )
            await asyncio.sleep(0.05)
            return outcome[0], world.model.requests

    failed, requests = asyncio.run(scenario())
    # Then the job failed with the first request's error, and its other 4 items never went to the model
    assert isinstance(failed, errors.ModelOutputInvalid)
    assert requests == [(4, 1, 8, 16)]


def test_the_pool_function_pads_in_the_pool_and_a_refused_page_sends_nothing(tmp_path: Path) -> None:
    # Given the bars package and pages: mixed widths, too many bars, a bar past the bounds
    folder = str(paged.write_bars(tmp_path))
    mixed = handlers.run_preprocess(folder, paged.png(paged.bars_page([10, 30, 50, 100])), {})
    # Then the items come padded to their buckets, with their widths before the pad for postprocess
    assert [item["crop"].shape[2] for item in mixed.page.items] == [16, 32, 64, 100]
    assert [shapes["crop"][2] for shapes in mixed.page.shapes()] == [10, 30, 50, 100]
    assert mixed.frame is not None and (mixed.frame.width, mixed.frame.unit) == (160, "px")
    with pytest.raises(errors.TooManyItems, match="9 items"):
        handlers.run_preprocess(folder, paged.png(paged.bars_page([10] * 9)), {})
    with pytest.raises(errors.TensorOutOfBounds, match=r"\[1, 8, 130\]"):
        handlers.run_preprocess(folder, paged.png(paged.bars_page([130], width=140)), {})
