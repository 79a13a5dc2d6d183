"""The Batcher on its own: requests never mix tensor shapes, and whatever goes wrong while a request is
formed, sent or unpacked answers every tensor in it at once — never a future left to the job's lease."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from worker.runtime.pipeline import batching
from worker.runtime.pipeline.batching import Batcher
from worker.runtime.pipeline.outage import Health
from worker.shared import errors

from .test_pipeline import running


class PageModel:
    """Answers each row with its tensor's sum and shape; records every request's shape. ``mode`` decides
    how it misbehaves: ``short`` (one row too few), ``crash`` (a bug: RuntimeError), ``cancelled``
    (CancelledError escapes), ``reject`` (INVALID_ARGUMENT for a request holding a negative tensor)."""

    name = "pages"
    version = "1"

    def __init__(self, mode: str = "") -> None:
        self.mode = mode
        self.requests: list[tuple[int, ...]] = []

    async def ready(self) -> bool:
        return True

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        batch = inputs["PAGE"]
        self.requests.append(tuple(batch.shape))
        if self.mode == "crash":
            raise RuntimeError("a bug in the adapter")
        if self.mode == "cancelled":
            raise asyncio.CancelledError
        if self.mode == "reject" and float(batch.min()) < 0:
            raise errors.ModelRejected("INVALID_ARGUMENT: negative page")
        rows = len(batch) - 1 if self.mode == "short" else len(batch)
        sums = batch.reshape(len(batch), -1).sum(axis=1)[:rows]
        shapes = np.asarray([batch.shape[1:]] * rows, dtype=np.int64)
        return {"SUM": sums.astype(np.float32), "SHAPE": shapes}


def page(height: int, width: int, value: float = 1.0) -> dict[str, Any]:
    return {"PAGE": np.full((1, height, width), value, dtype=np.float32)}


def outcome(future: asyncio.Future[Any]) -> Any:
    """The future's result, or its exception's class: what the job sees."""
    assert future.done(), "a future was left pending"
    return type(future.exception()) if future.exception() is not None else future.result()


def test_the_signature_is_every_inputs_shape_and_dtype() -> None:
    assert batching.signature_of(page(4, 6)) == batching.signature_of(page(4, 6, value=9.0))
    assert batching.signature_of(page(4, 6)) != batching.signature_of(page(6, 4))
    as_int = {"PAGE": np.zeros((1, 4, 6), dtype=np.int32)}
    assert batching.signature_of(page(4, 6)) != batching.signature_of(as_int)


def test_pages_of_different_sizes_never_share_a_request_and_each_gets_its_own_row() -> None:
    async def scenario() -> tuple[PageModel, list[Any]]:
        model = PageModel()
        async with running(model) as batcher:
            # Given pages of three sizes submitted together, interleaved
            sizes = [(4, 6), (6, 4), (4, 6), (5, 5), (6, 4), (4, 6)]
            futures = [
                batcher.submit(page(h, w, value=i + 1), interactive=False) for i, (h, w) in enumerate(sizes)
            ]
            await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=2)
        return model, [outcome(f) for f in futures]

    model, answers = asyncio.run(scenario())
    # Then each request held one shape: the oldest's first (all three of its tensors), then the next
    assert model.requests == [(3, 1, 4, 6), (2, 1, 6, 4), (1, 1, 5, 5)]
    # and every job got the row of its own page
    sizes = [(4, 6), (6, 4), (4, 6), (5, 5), (6, 4), (4, 6)]
    for index, ((rows, _ms, _started), (h, w)) in enumerate(zip(answers, sizes, strict=True)):
        assert float(rows["SUM"]) == (index + 1) * h * w
        assert tuple(rows["SHAPE"]) == (1, h, w)


def test_interactive_tensors_of_different_sizes_also_go_one_shape_at_a_time() -> None:
    async def scenario() -> PageModel:
        model = PageModel()
        async with running(model) as batcher:
            futures = [batcher.submit(page(4, 4 + i % 2), interactive=True) for i in range(4)]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=2)
        return model

    requests = asyncio.run(scenario()).requests
    assert all(shape[2:] in ((4, 4), (4, 5)) for shape in requests) and sum(r[0] for r in requests) == 4


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("short", errors.ModelOutputInvalid),  # never a row given to the wrong job
        ("crash", errors.InferenceUnavailable),  # a bug: transient, the job goes back
        ("cancelled", errors.InferenceUnavailable),  # escapes every except Exception: the last resort
    ],
)
def test_a_request_that_fails_in_any_way_answers_each_of_its_tensors_at_once(
    mode: str, error: type[errors.FleetError]
) -> None:
    async def scenario() -> list[Any]:
        async with running(PageModel(mode)) as batcher:
            futures = [batcher.submit(page(4, 4), interactive=False) for _ in range(3)]
            await asyncio.wait(futures, timeout=2)
        return [outcome(f) for f in futures]

    assert asyncio.run(scenario()) == [error] * 3


def test_a_tensor_the_model_rejects_fails_alone_and_its_neighbours_are_answered() -> None:
    async def scenario() -> list[Any]:
        async with running(PageModel("reject")) as batcher:
            futures = [batcher.submit(page(4, 4, value=v), interactive=False) for v in (1.0, -1.0, 2.0)]
            await asyncio.wait(futures, timeout=2)
        return [outcome(f) for f in futures]

    first, rejected, third = asyncio.run(scenario())
    assert rejected is errors.ModelRejected
    assert float(first[0]["SUM"]) == 16.0 and float(third[0]["SUM"]) == 32.0


def test_a_batcher_that_stops_fails_what_it_still_held() -> None:
    async def scenario() -> list[Any]:
        batcher = Batcher(PageModel(), Health(), max_size=8, max_delay_ms=60_000, retries=1)
        runner = asyncio.create_task(batcher.run())
        futures = [batcher.submit(page(4, 4), interactive=False) for _ in range(2)]
        await asyncio.sleep(0.01)  # queued, waiting for a full batch that will not come
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return [outcome(f) for f in futures]

    assert asyncio.run(scenario()) == [errors.InferenceUnavailable] * 2
