"""GCS adapter: read job inputs, create result objects exactly once, read an existing result.

The three calls a job needs are plain requests to the Cloud Storage JSON API, made on a keep-alive
``http.client`` connection per I/O thread (``KeepAliveHttp``; authorised by ``google.auth`` in production,
anonymous against the local emulator):

- input:  ``GET /download/storage/v1/b/B/o/O?alt=media`` with ``Range: bytes=0-<max>``, read at most
  ``max_bytes + 1`` bytes whatever the server sends;
- result: ``POST /upload/storage/v1/b/B/o?uploadType=multipart&ifGenerationMatch=0`` (412 = exists; the
  one-request upload with metadata, as google-cloud-storage sends small objects);
- existing result: ``GET /download/storage/v1/b/B/o/N?alt=media`` (404 = none).

Why not google-cloud-storage on the hot path: it builds every request through ``requests`` with per-call
environment lookups (netrc, proxies, CA bundle), a fresh invocation id and tracing spans -- ~3.9 ms of CPU
per job in the worker's profile, half of its "other" CPU (docs/performance.md); these requests on
``http.client`` cost a fraction of that (``KeepAliveHttp``). Calls are synchronous, on
a small fixed thread pool shared by all jobs (never a thread per job). There are no library retries:
the pipeline owns retry policy (tenacity, bounded), and errors leave this module already classified
(worker/shared/errors.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import ssl
import threading
import urllib.parse
from typing import Any, Protocol

from worker.runtime import policy
from worker.runtime.pipeline.ports import InputObject
from worker.shared import contracts, errors

JSON_CONTENT_TYPE = "application/json"
DEFAULT_API_ENDPOINT = "https://storage.googleapis.com"
READ_CHUNK_BYTES = 256 * 1024
# multipart/related upload: a JSON metadata part, then the object. Result documents are JSON, whose
# encoding never produces the boundary line.
_BOUNDARY = "==inference-fleet-result=="
_MULTIPART_TYPE = f'multipart/related; boundary="{_BOUNDARY}"'
_PART_HEAD = f"--{_BOUNDARY}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n".encode()
_PART_SEPARATOR = f"\r\n--{_BOUNDARY}\r\ncontent-type: {JSON_CONTENT_TYPE}\r\n\r\n".encode()
_PART_TAIL = f"\r\n--{_BOUNDARY}--".encode()


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _classify_status(status: int, what: str) -> errors.FleetError:
    if status == 404:
        return errors.InputNotFound(f"{what}: not found")
    if status in (401, 403):
        return errors.InputNotAllowed(f"{what}: access denied")
    if policy.is_transient_http(status):
        return errors.StorageUnavailable(f"{what}: HTTP {status}")
    return errors.StorageUnavailable(f"{what}: unexpected HTTP {status}")


class GcsStorage:
    """Inputs from any allowed bucket; results only under ``results_prefix`` of the results bucket."""

    def __init__(
        self,
        http: KeepAliveHttp,
        *,
        results_bucket: str,
        results_prefix: str,
        timeout_s: float,
        executor: concurrent.futures.Executor,
        urgent_executor: concurrent.futures.Executor | None = None,
        api_endpoint: str = DEFAULT_API_ENDPOINT,
    ) -> None:
        self._http = http
        self._endpoint = api_endpoint.rstrip("/")
        self._results_bucket = results_bucket
        self._prefix = results_prefix
        self._timeout_s = timeout_s
        self._executor = executor
        # Interactive jobs' calls do not queue behind a backlog's calls on the shared threads.
        self._urgent_executor = urgent_executor or executor
        self._upload_url = (
            f"{self._endpoint}/upload/storage/v1/b/{_quote(results_bucket)}/o"
            "?uploadType=multipart&ifGenerationMatch=0"
        )

    def result_uri(self, name: str) -> str:
        return f"gs://{self._results_bucket}/{name}"

    async def _call(self, func: Any, *args: Any, urgent: bool = False) -> Any:
        executor = self._urgent_executor if urgent else self._executor
        return await asyncio.get_running_loop().run_in_executor(executor, func, *args)

    def _media_url(self, bucket: str, name: str) -> str:
        return f"{self._endpoint}/download/storage/v1/b/{_quote(bucket)}/o/{_quote(name)}?alt=media"

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        try:
            return self._http.urlopen(method, url, timeout=self._timeout_s, **kwargs)
        except (http.client.HTTPException, OSError) as exc:
            raise errors.StorageUnavailable(f"{what}: {type(exc).__name__}") from exc
        except Exception as exc:  # auth refresh failures and the like: retried, then nacked
            raise errors.StorageUnavailable(f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from exc

    async def read_input(
        self, bucket: str, name: str, *, max_bytes: int, urgent: bool = False
    ) -> InputObject:
        """The object's bytes and sha256; InputTooLarge without downloading more than ``max_bytes + 1``."""
        read: InputObject = await self._call(self._read_input, bucket, name, max_bytes, urgent=urgent)
        return read

    def _read_input(self, bucket: str, name: str, max_bytes: int) -> InputObject:
        # A ranged read, and a bounded read of the body even if the server ignores the range: a hostile
        # object cannot make us download and hold more than max_bytes + 1.
        response = self._request(
            "GET",
            self._media_url(bucket, name),
            "input",
            headers={"Range": f"bytes=0-{max_bytes}"},
            preload_content=False,
        )
        try:
            if response.status not in (200, 206):
                if response.status == 416:  # range not satisfiable: the object is empty
                    return InputObject(b"", contracts.input_digest(b""))
                raise _classify_status(response.status, "input")
            data = self._read_bounded(response, max_bytes + 1)
        except (http.client.HTTPException, OSError) as exc:
            raise errors.StorageUnavailable(f"input: {type(exc).__name__}") from exc
        finally:
            response.release_conn()
        if len(data) > max_bytes:
            raise errors.InputTooLarge(f"input is larger than {max_bytes} bytes")
        return InputObject(data, contracts.input_digest(data))  # hashed here, in the I/O thread

    @staticmethod
    def _read_bounded(response: Any, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while size < limit:
            chunk = response.read(min(READ_CHUNK_BYTES, limit - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        if size >= limit and response.length_remaining != 0:
            response.close()  # unread body left: this connection cannot go back to the pool
        return b"".join(parts)

    async def create_result(self, name: str, data: bytes, *, urgent: bool = False) -> bool:
        """Write ``name`` only if absent (ifGenerationMatch=0): True when created, False when it existed."""
        created: bool = await self._call(self._create_result, name, data, urgent=urgent)
        return created

    def _create_result(self, name: str, data: bytes) -> bool:
        if not name.startswith(self._prefix):
            raise ValueError(f"refusing to write outside {self._prefix!r}")
        metadata = json.dumps({"name": name, "contentType": JSON_CONTENT_TYPE}).encode()
        body = b"".join(
            (
                _PART_HEAD,
                metadata,
                _PART_SEPARATOR,
                data,
                _PART_TAIL,
            )
        )
        response = self._request(
            "POST", self._upload_url, "result write", body=body, headers={"Content-Type": _MULTIPART_TYPE}
        )
        if response.status == 412:
            return False
        if response.status != 200:
            raise _classify_status(response.status, "result write")
        return True

    async def read_result(self, name: str) -> bytes | None:
        """The existing result document, or None."""
        data: bytes | None = await self._call(self._read_result, name)
        return data

    def _read_result(self, name: str) -> bytes | None:
        response = self._request("GET", self._media_url(self._results_bucket, name), "result read")
        if response.status == 404:
            return None
        if response.status != 200:
            raise _classify_status(response.status, "result read")
        data: bytes = response.data
        return data


class Authorizer(Protocol):
    """Adds credentials to a request's headers; ``refresh`` after a 401."""

    def apply(self, headers: dict[str, str]) -> None: ...

    def refresh(self) -> None: ...


class KeepAliveHttp:
    """HTTP on ``http.client``: one keep-alive connection per I/O thread to one endpoint.

    Why not urllib3: its ``PoolManager`` parses and re-encodes the URL eight times per job and builds
    each request through several layers; the same GET of a 400 KB input plus the result POST cost
    1.5-2.3 ms of client CPU through it and 0.85 ms through ``http.client`` (sha256 of the input
    included; docs/performance.md). A connection the server closed while idle is reopened
    and the request sent once more; a 401 refreshes the credentials and repeats the request once.
    ``timeout`` bounds every socket operation (connect, each read), not the whole request.
    """

    def __init__(self, endpoint: str, *, authorizer: Authorizer | None = None) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        self._endpoint = endpoint.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._authorizer = authorizer
        self._tls = ssl.create_default_context() if self._https else None
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, for close()

    def _connection(self, timeout_s: float | None) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._tls is not None:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout_s, context=self._tls
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
            self._local.connection = connection
            self._open.add(connection)
        return connection

    def close(self) -> None:
        """Close every thread's connection (at shutdown)."""
        for connection in list(self._open):
            connection.close()
        self._open.clear()

    def drop(self) -> None:
        """Close this thread's connection (an unread body, an error): the next request opens another."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            self._open.discard(connection)
            connection.close()

    def urlopen(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
        preload_content: bool = True,
    ) -> KeepAliveResponse:
        """``url`` under the endpoint; ``timeout`` in seconds, for each socket operation."""
        path = url[len(self._endpoint) :] if url.startswith(self._endpoint) else url
        sent = dict(headers or {})
        if self._authorizer is not None:
            self._authorizer.apply(sent)
        response = self._send(method, path, sent, body, timeout)
        if response.status == 401 and self._authorizer is not None:
            response.close()
            self._authorizer.refresh()
            self._authorizer.apply(sent)
            response = self._send(method, path, sent, body, timeout)
        if preload_content:
            response.preload()
        return response

    def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None, timeout_s: float | None
    ) -> KeepAliveResponse:
        for attempt in (1, 2):
            connection = self._connection(timeout_s)
            reused = connection.sock is not None
            try:
                connection.request(method, path, body=body, headers=headers)
                return KeepAliveResponse(connection.getresponse(), self)
            except (http.client.RemoteDisconnected, OSError):
                # a kept-alive connection the server closed meanwhile: once more on a new one (a repeated
                # result POST is safe: ifGenerationMatch=0 answers 412 and the stored result is compared)
                self.drop()
                if not (reused and attempt == 1):
                    raise
            except BaseException:
                self.drop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover


class KeepAliveResponse:
    """What this module reads of a response (status, a bounded body, the rest), over ``http.client``'s."""

    def __init__(self, response: http.client.HTTPResponse, owner: KeepAliveHttp) -> None:
        self._response = response
        self._owner = owner
        self.status = response.status
        self._data: bytes | None = None

    def read(self, amt: int | None = None) -> bytes:
        return self._response.read(amt)

    @property
    def length_remaining(self) -> int | None:
        return self._response.length

    def preload(self) -> None:
        try:
            self._data = self._response.read()
        finally:
            self.release_conn()

    @property
    def data(self) -> bytes:
        if self._data is None:
            self.preload()
        return self._data or b""

    def release_conn(self) -> None:
        """Keep the connection when the body was read to its end, else close it."""
        if not self._response.isclosed():
            self.close()

    def close(self) -> None:
        self._response.close()
        self._owner.drop()


class _GoogleCredentials:
    """``Authorizer`` from Application Default Credentials (token refreshed before it expires)."""

    def __init__(self) -> None:
        # Only production workers load credentials; the token refresh goes through requests, which
        # google-api-core (required by the Pub/Sub and Storage clients) installs.
        import google.auth  # noqa: PLC0415
        from google.auth.transport.requests import Request  # noqa: PLC0415

        self._credentials, _project = google.auth.default(
            scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
        )
        self._request = Request()
        self._lock = threading.Lock()

    def apply(self, headers: dict[str, str]) -> None:
        with self._lock:
            self._credentials.before_request(  # type: ignore[no-untyped-call]
                self._request, "GET", DEFAULT_API_ENDPOINT, headers
            )

    def refresh(self) -> None:
        with self._lock:
            self._credentials.refresh(self._request)  # type: ignore[no-untyped-call]


def http_client(*, emulator_host: str | None) -> tuple[KeepAliveHttp, str]:
    """(keep-alive HTTP client, API endpoint): anonymous to the emulator, else ``google.auth`` credentials."""
    if emulator_host:
        endpoint = emulator_host if "://" in emulator_host else f"http://{emulator_host}"
        return KeepAliveHttp(endpoint), endpoint
    return KeepAliveHttp(DEFAULT_API_ENDPOINT, authorizer=_GoogleCredentials()), DEFAULT_API_ENDPOINT
