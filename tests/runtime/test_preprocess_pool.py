"""The preprocess pool hands large items back through shared memory (worker/runtime/pipeline/
preprocessors.py): the arrays arrive equal, small ones travel as before, and no block is left in
/dev/shm, whether the job takes its result or gave up waiting for it. Real spawned pool processes and a
package written here (the heavy-page bench's graph, a preprocess that makes a page of a given size)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from worker.dev import heavy_page_bench
from worker.runtime.pipeline import preprocessors
from worker.runtime.pipeline.preprocessors import PoolPreprocessor
from worker.runtime.telemetry import Metrics

HANDLER = textwrap.dedent(
    """
    import json
    import time

    import numpy as np


    def preprocess(data, params):
        spec = json.loads(data)
        time.sleep(spec.get("sleep_s", 0))
        return {"x": np.full((3, spec["height"], spec["width"]), spec["value"], dtype=np.float32)}


    def postprocess(outputs, params):
        return {"heavy": {}}
    """
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = heavy_page_bench.write_package(tmp_path_factory.mktemp("pool") / "models")
    package = root / heavy_page_bench.MODEL
    (package / "handler.py").write_text(HANDLER, encoding="utf-8")
    return str(package)


@pytest.fixture(scope="module")
def pool(folder: str) -> Iterator[PoolPreprocessor]:
    pre = PoolPreprocessor([folder], processes=1, metrics=Metrics())
    pre.warm_up()
    try:
        yield pre
    finally:
        pre.close()


def blocks() -> set[str]:
    """Shared-memory blocks in /dev/shm that Python made (``psm_`` names)."""
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def page(height: int, width: int, value: float, sleep_s: float = 0.0) -> bytes:
    return json.dumps({"height": height, "width": width, "value": value, "sleep_s": sleep_s}).encode()


@pytest.mark.skipif(not shutil.disk_usage("/dev/shm").free, reason="no /dev/shm")
def test_a_large_item_comes_back_through_shared_memory_equal_and_leaves_no_block(
    pool: PoolPreprocessor, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = blocks()
    shipped: list[str] = []
    take = preprocessors._take

    def recording_take(value: object) -> object:
        if isinstance(value, preprocessors._InSharedMemory):
            shipped.append(value.name)
        return take(value)

    monkeypatch.setattr(preprocessors, "_take", recording_take)

    async def scenario() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        large = await pool(folder, page(512, 768, 0.25), {})  # 4.7 MB: through a block
        small = await pool(folder, page(32, 32, 0.5), {})  # 12 KB: through the pipe
        return large.page.items[0]["x"], small.page.items[0]["x"]

    large, small = asyncio.run(scenario())
    # Then each array is the one the handler made, the large one from a block, the small one not
    assert large.shape == (3, 512, 768) and float(large.min()) == float(large.max()) == 0.25
    assert small.shape == (3, 32, 32) and float(small.max()) == 0.5
    assert len(shipped) == 1
    # and the block is gone from /dev/shm
    assert blocks() - before == set()


def test_a_result_nobody_takes_has_its_block_unlinked_when_it_arrives(
    pool: PoolPreprocessor, folder: str
) -> None:
    before = blocks()

    async def scenario() -> None:
        # Given a job that gives up while its large page is still in the pool's one process
        waiting = asyncio.create_task(pool(folder, page(512, 768, 1.0, sleep_s=0.3), {}))
        await asyncio.sleep(0.1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        # When the pool has answered it (the next call runs after it in that process)
        await pool(folder, page(32, 32, 0.0), {})

    asyncio.run(scenario())
    # Then its block was unlinked as its result arrived
    assert blocks() - before == set()
