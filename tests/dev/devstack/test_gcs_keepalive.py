"""GCS emulator: chunked request bodies on one keep-alive HTTP/1.1 connection, as Node's client sends them.

The emulator runs in this process (the real server on a real socket); requests go over ONE raw
``http.client`` connection, and every request checks that the connection's local port is unchanged, so a
silent reconnect cannot hide a connection the server dropped.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from worker.dev.devstack.gcs_emulator import GcsEmulator, MalformedBody, read_body, read_chunked

pytestmark = pytest.mark.integration

RESUMABLE_CHUNK_BYTES = 256 * 1024  # the granularity GCS requires of every chunk but the last


@pytest.fixture(scope="module")
def emulator() -> Iterator[GcsEmulator]:
    server = GcsEmulator()
    server.start()
    yield server
    server.stop()


class KeepAlive:
    """One HTTP/1.1 connection that must stay the same socket for every request."""

    def __init__(self, emulator: GcsEmulator) -> None:
        self.conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
        self.conn.connect()
        self.local = self._local()
        self.requests = 0

    def _local(self) -> Any:
        assert self.conn.sock is not None, "the connection was closed"
        return self.conn.sock.getsockname()

    def send(
        self, method: str, url: str, parts: list[bytes] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Send ``parts`` as the chunks of a ``Transfer-Encoding: chunked`` body (None = no body)."""
        if parts is not None:
            headers["Transfer-Encoding"] = "chunked"
        self.conn.request(
            method,
            url,
            body=iter(parts) if parts is not None else None,
            headers={key.replace("_", "-"): value for key, value in headers.items()},
            encode_chunked=parts is not None,
        )
        response = self.conn.getresponse()
        data = response.read()
        self.requests += 1
        assert not response.will_close, f"request {self.requests}: the server closed the connection"
        assert self._local() == self.local, f"request {self.requests}: reconnected"
        return response.status, dict(response.getheaders()), data

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def connection(emulator: GcsEmulator) -> Iterator[KeepAlive]:
    keep_alive = KeepAlive(emulator)
    yield keep_alive
    keep_alive.close()


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _multipart(name: str, payload: bytes) -> tuple[bytes, str]:
    boundary = "==" + uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps({'name': name})}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; boundary="{boundary}"'


def test_chunked_uploads_share_one_keep_alive_connection(connection: KeepAlive) -> None:
    bucket = f"keepalive-{uuid.uuid4().hex[:12]}"
    status, _, _ = connection.send(
        "POST",
        "/storage/v1/b?project=local-project",
        [json.dumps({"name": bucket}).encode()],
        Content_Type="application/json",
    )
    assert status == 200

    # Two chunked multipart uploads, back to back on the same connection.
    payloads = {"first.bin": os.urandom(70_000), "second.bin": os.urandom(5_000)}
    for name, payload in payloads.items():
        body, content_type = _multipart(name, payload)
        status, _, data = connection.send(
            "POST",
            f"/upload/storage/v1/b/{bucket}/o?uploadType=multipart",
            _split(body, 16 * 1024),
            Content_Type=content_type,
        )
        assert status == 200, data
        assert json.loads(data)["name"] == name

    # A resumable upload: the session opens with a chunked JSON body, then two chunked PUTs.
    resumable = os.urandom(RESUMABLE_CHUNK_BYTES + 43_210)
    status, headers, data = connection.send(
        "POST",
        f"/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=third.bin",
        [b'{"contentType": ', b'"application/octet-stream"}'],
        Content_Type="application/json; charset=UTF-8",
    )
    assert status == 200, data
    session = headers["Location"].split(f"{connection.conn.host}:{connection.conn.port}", 1)[1]
    head, tail = resumable[:RESUMABLE_CHUNK_BYTES], resumable[RESUMABLE_CHUNK_BYTES:]
    status, headers, _ = connection.send(
        "PUT", session, _split(head, 10_000), Content_Range=f"bytes 0-{len(head) - 1}/*"
    )
    assert status == 308
    assert headers["Range"] == f"bytes=0-{len(head) - 1}"
    status, _, data = connection.send(
        "PUT",
        session,
        _split(tail, 10_000),
        Content_Range=f"bytes {len(head)}-{len(resumable) - 1}/{len(resumable)}",
    )
    assert status == 200, data
    payloads["third.bin"] = resumable

    # Every object is stored, and the same connection still answers GETs.
    for name, payload in payloads.items():
        status, _, data = connection.send("GET", f"/storage/v1/b/{bucket}/o/{name}?alt=media")
        assert status == 200
        assert data == payload
    print(f"{connection.requests} requests on one connection from local port {connection.local[1]}")


def test_malformed_chunked_body_is_refused_and_the_connection_closed(emulator: GcsEmulator) -> None:
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
    try:
        conn.putrequest("POST", "/storage/v1/b?project=local-project")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders(b"zz\r\nnot hex\r\n0\r\n\r\n")
        response = conn.getresponse()
        assert response.status == 400
        assert b"bad chunk size" in response.read()
        assert response.will_close  # the framing is lost: the server says so and closes
    finally:
        conn.close()


def test_read_chunked_consumes_extensions_and_trailers() -> None:
    wire = io.BytesIO(
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\nGET / HTTP/1.1\r\n"
    )
    assert read_chunked(wire) == b"hello world"
    assert wire.read() == b"GET / HTTP/1.1\r\n"  # the next request starts exactly here


@pytest.mark.parametrize(
    "wire",
    [
        b"+5\r\nhello\r\n0\r\n\r\n",  # int() would accept a sign; the grammar does not
        b"5\r\nhel",  # connection closed inside a chunk
        b"5\r\nhelloXX\r\n0\r\n\r\n",  # chunk longer than announced
        b"0\r\n",  # no final CRLF before the connection ended
    ],
)
def test_read_chunked_refuses_broken_framing(wire: bytes) -> None:
    with pytest.raises(MalformedBody):
        read_chunked(io.BytesIO(wire))


def test_read_body_prefers_chunked_and_reads_content_length() -> None:
    chunked = {"Transfer-Encoding": "chunked", "Content-Length": "99"}
    assert read_body(io.BytesIO(b"3\r\nabc\r\n0\r\n\r\n"), chunked) == b"abc"
    assert read_body(io.BytesIO(b"abcdef"), {"Content-Length": "4"}) == b"abcd"
    assert read_body(io.BytesIO(b""), {}) is None
    with pytest.raises(MalformedBody):
        read_body(io.BytesIO(b"abc"), {"Transfer-Encoding": "gzip"})
