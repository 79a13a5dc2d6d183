"""Triton system shared memory on the real tritonserver (worker/runtime/shared_memory.py): large requests
travel through it and answer exactly what gRPC answers; the regions survive a Triton restart (registered
anew); a Triton that cannot map the worker's memory leaves it off and every request on gRPC; a dead
worker's registrations are cleaned up by the next worker; close() leaves nothing registered or mapped.

The package is the heavy-page bench's stand-in detector (worker/dev/heavy_page_bench.py: a [3, H, W]
page in, its [1, H, W] map out), at small sizes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio

from worker.dev import heavy_page_bench
from worker.dev.devstack.tritonserver import TritonServer
from worker.runtime import shared_memory
from worker.runtime.inference import TritonModel
from worker.runtime.model_packages.declaration import Declaration, read_declaration

from .model_packages import served

pytestmark = pytest.mark.integration
#: Requests of at least this many input bytes go through shared memory in these tests.
MIN_BYTES = 4096


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return heavy_page_bench.write_package(tmp_path_factory.mktemp("heavy") / "models")


@pytest.fixture(scope="module")
def triton(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with served.private_triton(models, tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="module")
def declaration(models: Path) -> Declaration:
    return read_declaration(models / heavy_page_bench.MODEL)


def pages(count: int, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.random.default_rng(seed).random((count, 3, height, width), dtype=np.float32)}


async def registered(url: str) -> list[str]:
    """The names of the system shared-memory regions Triton holds that this process made."""
    client = triton_aio.InferenceServerClient(url=url)
    try:
        status = await client.get_system_shared_memory_status(as_json=True)
    finally:
        await client.close()
    regions = status.get("regions", {})
    names = [r["name"] for r in (regions.values() if isinstance(regions, dict) else regions)]
    return [n for n in names if n.startswith(f"{shared_memory.PREFIX}{os.getpid()}_")]


def mapped() -> list[str]:
    return [
        n for n in os.listdir(shared_memory.SHM_DIR) if n.startswith(f"{shared_memory.PREFIX}{os.getpid()}_")
    ]


def test_large_requests_travel_through_shared_memory_and_answer_what_grpc_answers(
    triton: TritonServer, declaration: Declaration
) -> None:
    async def scenario() -> None:
        over_grpc = TritonModel(triton.grpc_url, declaration, timeout_s=30)
        model = TritonModel(triton.grpc_url, declaration, timeout_s=30, shared_memory_min_bytes=MIN_BYTES)
        await over_grpc.wait_ready(timeout_s=60)
        await model.wait_ready(timeout_s=60)
        assert model.shared_memory and not over_grpc.shared_memory
        try:
            # Given pages of two sizes, batches of 2, and a page below the size
            for batch in (pages(2, 64, 96), pages(2, 96, 64, seed=1), pages(2, 64, 96, seed=2)):
                expected = await over_grpc.infer(batch, interactive=False)
                # When each goes twice through the shared-memory model (the first of a shape learns its
                # output sizes, the second has its outputs in shared memory too)
                for _ in range(2):
                    answer = await model.infer(batch, interactive=False)
                    # Then the answer is exactly gRPC's, one row per page
                    np.testing.assert_array_equal(answer["map"], expected["map"])
            # and the slot's input and output regions are registered with Triton, and nothing more
            assert len(await registered(triton.grpc_url)) == 2
            small = pages(1, 8, 8)  # 768 bytes: over gRPC
            np.testing.assert_array_equal(
                (await model.infer(small, interactive=False))["map"],
                (await over_grpc.infer(small, interactive=False))["map"],
            )
        finally:
            await model.close()
            await over_grpc.close()
        # and close() leaves nothing registered with Triton or in /dev/shm
        assert await registered(triton.grpc_url) == [] and mapped() == []

    asyncio.run(scenario())


def test_after_a_triton_restart_the_regions_are_registered_again(
    triton: TritonServer, declaration: Declaration
) -> None:
    async def scenario() -> None:
        model = TritonModel(triton.grpc_url, declaration, timeout_s=30, shared_memory_min_bytes=MIN_BYTES)
        await model.wait_ready(timeout_s=60)
        batch = pages(2, 64, 96)
        try:
            first = await model.infer(batch, interactive=False)
            await model.infer(batch, interactive=False)  # outputs in shared memory from now on
            # When Triton restarts: it has lost every registration
            triton.stop()
            await asyncio.to_thread(triton.relaunch, timeout_s=180)
            assert await registered(triton.grpc_url) == []
            # Then the next request registers the slot's regions anew and answers as before
            again = await model.infer(batch, interactive=False)
            np.testing.assert_array_equal(again["map"], first["map"])
            assert len(await registered(triton.grpc_url)) == 2
        finally:
            await model.close()

    asyncio.run(scenario())


def test_shared_memory_stays_off_when_triton_cannot_map_it(
    triton: TritonServer, declaration: Declaration, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Triton that cannot open the worker's memory (as from a container of its own): the probe's
    # key names an object that does not exist where Triton looks
    monkeypatch.setattr(shared_memory._Region, "key", property(lambda self: f"/{self.name}_elsewhere"))

    async def scenario() -> None:
        model = TritonModel(triton.grpc_url, declaration, timeout_s=30, shared_memory_min_bytes=MIN_BYTES)
        await model.wait_ready(timeout_s=60)
        try:
            # Then shared memory is off and large requests go over gRPC, answered
            assert not model.shared_memory
            answer = await model.infer(pages(2, 64, 96), interactive=False)
            assert answer["map"].shape == (2, 1, 64, 96)
        finally:
            await model.close()
        assert mapped() == []

    asyncio.run(scenario())


def test_the_next_worker_unregisters_the_regions_of_a_worker_that_died(
    triton: TritonServer, declaration: Declaration
) -> None:
    async def scenario() -> list[str]:
        # Given a region a worker registered and whose memory is gone (the worker was killed: its
        # resource tracker unlinked the memory; Triton still holds the registration)
        client = triton_aio.InferenceServerClient(url=triton.grpc_url)
        dead = shared_memory._Region(f"{shared_memory.PREFIX}{os.getpid()}_dead", 4096)
        await client.register_system_shared_memory(dead.name, dead.key, dead.size)
        dead.destroy()
        assert dead.name in await registered(triton.grpc_url)
        # When a worker starts
        model = TritonModel(triton.grpc_url, declaration, timeout_s=30, shared_memory_min_bytes=MIN_BYTES)
        await model.wait_ready(timeout_s=60)
        await model.close()
        await client.close()
        return await registered(triton.grpc_url)

    # Then the dead worker's registration is gone
    assert asyncio.run(scenario()) == []


def test_a_starting_worker_unlinks_the_memory_of_owners_that_died_and_keeps_the_living_ones(
    triton: TritonServer, declaration: Declaration
) -> None:
    # Given an owner killed with its regions and its lock left in /dev/shm (kill -9: no close, and its
    # resource tracker gone with its process group), and a living owner holding its lock
    owner_code = (
        "import fcntl, os, signal, sys, time\n"
        "owner = sys.argv[1]\n"
        "fd = os.open(f'/dev/shm/{owner}_lock', os.O_CREAT | os.O_RDWR, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "open(f'/dev/shm/{owner}_0_in_abcdef', 'wb').write(b'x' * 4096)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    dead_owner = f"{shared_memory.PREFIX}{os.getpid()}_deadbeef_gone"
    live_owner = f"{shared_memory.PREFIX}{os.getpid()}_0badf00d_alive"
    dead = subprocess.Popen([sys.executable, "-c", owner_code, dead_owner], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-c", owner_code, live_owner], stdout=subprocess.PIPE, text=True)
    try:
        assert dead.stdout is not None and dead.stdout.readline().strip() == "ready"
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        dead.kill()
        dead.wait(timeout=10)

        async def scenario() -> None:
            model = TritonModel(triton.grpc_url, declaration, timeout_s=30, shared_memory_min_bytes=MIN_BYTES)
            await model.wait_ready(timeout_s=60)
            await model.close()

        # When a worker starts
        asyncio.run(scenario())
        # Then the dead owner's region and lock are gone, and the living owner's are where they were
        left = set(os.listdir(shared_memory.SHM_DIR))
        assert not {f"{dead_owner}_lock", f"{dead_owner}_0_in_abcdef"} & left
        assert {f"{live_owner}_lock", f"{live_owner}_0_in_abcdef"} <= left
    finally:
        for process in (dead, live):
            process.kill()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        for name in os.listdir(shared_memory.SHM_DIR):
            if name.startswith((dead_owner, live_owner)):
                os.unlink(os.path.join(shared_memory.SHM_DIR, name))
