"""The GCS adapter's keep-alive HTTP client against the GCS emulator (the real HTTP server of the stack).

Checked through the official client: what the adapter writes is what google-cloud-storage reads back,
and what it reads is what was uploaded; many requests share one connection per thread, and a connection
closed under it is replaced without failing the call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from worker.dev import harness
from worker.runtime import storage
from worker.shared import contracts, errors

pytestmark = pytest.mark.integration


@pytest.fixture
def gcs(stack: Any) -> Iterator[tuple[storage.GcsStorage, storage.KeepAliveHttp, harness.StackEnv]]:
    env = harness.StackEnv(dict(stack.env))
    http, endpoint = storage.http_client(emulator_host=env["STORAGE_EMULATOR_HOST"])
    assert isinstance(http, storage.KeepAliveHttp)
    threads = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcs")
    adapter = storage.GcsStorage(
        http,
        results_bucket=env.results_bucket,
        results_prefix="results/",
        timeout_s=10.0,
        executor=threads,
        api_endpoint=endpoint,
    )
    yield adapter, http, env
    threads.shutdown()
    http.close()


def test_inputs_read_results_created_once_and_read_back_match_the_official_client(
    gcs: tuple[storage.GcsStorage, storage.KeepAliveHttp, harness.StackEnv], storage_client: Any
) -> None:
    adapter, _http, env = gcs
    data = bytes(range(256)) * 1500  # 384 KB: read in several chunks
    name = f"storage-test/{uuid.uuid4().hex}.bin"
    storage_client.bucket(env.input_bucket).blob(name).upload_from_string(data)
    result_name = f"results/storage-test-{uuid.uuid4().hex}.json"
    document = json.dumps({"status": "succeeded", "n": 1}).encode()

    async def scenario() -> tuple[Any, ...]:
        read = await adapter.read_input(env.input_bucket, name, max_bytes=len(data))
        created = await adapter.create_result(result_name, document)
        again = await adapter.create_result(result_name, b'{"status":"other"}')
        stored = await adapter.read_result(result_name)
        missing = await adapter.read_result(result_name + ".absent")
        return read, created, again, stored, missing

    read, created, again, stored, missing = asyncio.run(scenario())
    assert read.data == data and read.sha256 == contracts.input_digest(data)
    assert (created, again) == (True, False)  # written once, never overwritten
    assert stored == document and missing is None
    blob = storage_client.bucket(env.results_bucket).get_blob(result_name)
    assert blob.download_as_bytes() == document
    assert blob.content_type == "application/json"


def test_bounds_and_missing_objects_are_typed_errors(
    gcs: tuple[storage.GcsStorage, storage.KeepAliveHttp, harness.StackEnv], storage_client: Any
) -> None:
    adapter, _http, env = gcs
    name = f"storage-test/{uuid.uuid4().hex}.bin"
    storage_client.bucket(env.input_bucket).blob(name).upload_from_string(b"x" * 5000)
    with pytest.raises(errors.InputTooLarge):
        asyncio.run(adapter.read_input(env.input_bucket, name, max_bytes=4999))
    with pytest.raises(errors.InputNotFound):
        asyncio.run(adapter.read_input(env.input_bucket, name + ".absent", max_bytes=10_000))
    # the connection left with an unread body was dropped, not reused mid-body: the next read is whole
    read = asyncio.run(adapter.read_input(env.input_bucket, name, max_bytes=10_000))
    assert read.data == b"x" * 5000


def test_requests_reuse_the_thread_s_connection_and_survive_it_being_closed(
    gcs: tuple[storage.GcsStorage, storage.KeepAliveHttp, harness.StackEnv], storage_client: Any
) -> None:
    adapter, http, env = gcs
    name = f"storage-test/{uuid.uuid4().hex}.bin"
    storage_client.bucket(env.input_bucket).blob(name).upload_from_string(b"drawing")

    def read_on_the_thread() -> tuple[bytes, Any]:
        data = adapter._read_input(env.input_bucket, name, 100).data
        return data, http._local.connection.sock

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        first, socket_1 = thread.submit(read_on_the_thread).result()
        second, socket_2 = thread.submit(read_on_the_thread).result()
        assert first == second == b"drawing"
        assert socket_1 is socket_2  # one keep-alive connection, not one per request
        socket_2.shutdown(socket.SHUT_RDWR)  # the connection is gone, as after a server's idle close
        third, socket_3 = thread.submit(read_on_the_thread).result()
    assert third == b"drawing"
    assert socket_3 is not socket_2
