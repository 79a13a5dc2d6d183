"""GCS for the local stack: ``gcp-storage-emulator`` plus generation preconditions and fault injection.

The PyPI emulator serves the JSON API that google-cloud-storage 3.x speaks, but ignores preconditions: a
second upload with ``if_generation_match=0`` silently overwrites, which would hide exactly the bug the
worker's write-once results guard against. This module reuses the emulator's route table, request parsing
and handlers unchanged and wraps dispatch:

- ``ifGenerationMatch`` / ``ifGenerationNotMatch`` / ``ifMetagenerationMatch`` / ``ifMetagenerationNotMatch``
  query parameters are evaluated against the live object (generation 0 = "does not exist") for every upload
  path the client uses (``uploadType=media``, ``multipart``, ``resumable`` — checked when the session is
  opened and again when it completes) and for object GET (metadata and media), PATCH and DELETE. A
  mismatch answers HTTP 412 ``conditionNotMet`` like the real service, which the client raises as
  ``google.api_core.exceptions.PreconditionFailed``. The check and the write happen under one lock, so
  two racing ``ifGenerationMatch=0`` writers cannot both win.
- the server is threaded (the upstream one serves one request at a time); handlers still run one at a time
  under that lock because the upstream storage is not thread-safe.
- request bodies are framed here, not upstream (RFC 9112 section 7.1): a ``Transfer-Encoding: chunked``
  body is read through its last chunk, trailer section and final CRLF, so a keep-alive connection stays
  usable for the next request. Upstream stops at the zero-length chunk and leaves that CRLF on the wire,
  where it reads as an empty request line and the connection dies: Node's storage client, which uploads
  chunked over keep-alive connections, saw EPIPE on most uploads. A malformed chunked body is answered
  400 with ``Connection: close`` (its framing is lost).
- fault injection: ``error_rate`` (fraction of requests answered 503 ``backendError``) and ``latency_ms``,
  set with CLI flags or at run time through ``/_devstack/faults`` (JSON ``GET``/``POST``, the value of
  ``FLEET_GCS_ADMIN_URL``); ``GET /_devstack/stats`` counts requests, 412s and injected 503s.

Not enforced: source-object preconditions of copy/rewrite/compose, XML-API ``x-goog-if-generation-match``
headers, object versioning (no history of generations), IAM, retention policies.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlparse

from gcp_storage_emulator import server as upstream
from gcp_storage_emulator.handlers import objects as upstream_objects
from gcp_storage_emulator.storage import Storage

from worker.dev.devstack.service import announce_and_wait

LOG = logging.getLogger("fleet.devstack.gcs")
ADMIN_PREFIX = "/_devstack"
PRECONDITION_PARAMS = (
    "ifGenerationMatch",
    "ifGenerationNotMatch",
    "ifMetagenerationMatch",
    "ifMetagenerationNotMatch",
)
_UPLOAD_ID_RE = re.compile(r"[?&]upload_id=([^&]+)")
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
MAX_FRAMING_LINE_BYTES = 8192  # a chunk-size line (with extensions) or a trailer field; longer is malformed


class MalformedBody(ValueError):
    """The request body's framing is broken (bad chunk size, truncated chunk, missing CRLF)."""


def _framing_line(rfile: BinaryIO) -> bytes:
    line = rfile.readline(MAX_FRAMING_LINE_BYTES + 1)
    if not line.endswith(b"\n"):
        raise MalformedBody(f"chunked body: line truncated or longer than {MAX_FRAMING_LINE_BYTES} bytes")
    return line


def read_chunked(rfile: BinaryIO) -> bytes:
    """Decode a chunked body off ``rfile``, consuming it through the trailer section's final CRLF."""
    body = bytearray()
    while True:
        size_text = _framing_line(rfile).split(b";", 1)[0].strip()  # chunk extensions are ignored
        if not _CHUNK_SIZE_RE.fullmatch(size_text):
            raise MalformedBody(f"chunked body: bad chunk size {size_text[:32]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        chunk = rfile.read(size)
        if len(chunk) != size:
            raise MalformedBody("chunked body: connection closed inside a chunk")
        body += chunk
        if _framing_line(rfile).strip():
            raise MalformedBody("chunked body: chunk data not followed by CRLF")
    # The trailer section (usually empty) ends with an empty line; it is part of this request.
    while _framing_line(rfile).strip():
        pass
    return bytes(body)


def read_body(rfile: BinaryIO, headers: Any) -> bytes | None:
    """The request body as framed by ``headers``: chunked wins over Content-Length (RFC 9112 6.3); None
    when the request has neither (no body)."""
    codings = [c.strip().lower() for c in (headers.get("Transfer-Encoding") or "").split(",") if c.strip()]
    if codings:
        if codings[-1] != "chunked":
            raise MalformedBody(f"unsupported Transfer-Encoding {headers.get('Transfer-Encoding')!r}")
        return read_chunked(rfile)
    length = headers.get("Content-Length")
    if not length:
        return None
    try:
        size = int(length)
    except ValueError as exc:
        raise MalformedBody(f"bad Content-Length {length!r}") from exc
    if size < 0:
        raise MalformedBody(f"bad Content-Length {length!r}")
    return rfile.read(size)


@dataclass
class GcsFaults:
    """Fault injection for the GCS emulator."""

    error_rate: float = 0.0  # fraction of requests answered 503 backendError (retryable)
    latency_ms: float = 0.0  # added before every request

    def update(self, values: dict[str, Any]) -> None:
        known = {field.name for field in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {sorted(known)}")
            number = float(value)
            if number < 0 or (key.endswith("_rate") and number > 1):
                raise ValueError(f"{key} out of range")
            setattr(self, key, number)


def check_preconditions(current: dict[str, Any] | None, query: dict[str, list[str]]) -> str | None:
    """Return why a precondition fails against the object resource ``current`` (None = absent), or None."""
    generation = int(current["generation"]) if current else 0
    metageneration = int(current.get("metageneration") or 1) if current else None
    for param in PRECONDITION_PARAMS:
        values = query.get(param)
        if not values:
            continue
        try:
            wanted = int(values[-1])
        except ValueError:
            return f"{param} must be an integer"
        if param == "ifGenerationMatch" and generation != wanted:
            return f"ifGenerationMatch={wanted} but the live generation is {generation}"
        if param == "ifGenerationNotMatch" and generation == wanted:
            return f"ifGenerationNotMatch={wanted} and the live generation is {generation}"
        if param == "ifMetagenerationMatch" and metageneration != wanted:
            return f"ifMetagenerationMatch={wanted} but the live metageneration is {metageneration}"
        if param == "ifMetagenerationNotMatch" and metageneration == wanted:
            return f"ifMetagenerationNotMatch={wanted} and the live metageneration is {metageneration}"
    return None


class MemoryStorage(Storage):  # type: ignore[misc]
    """Upstream's storage kept in memory only, without its metadata snapshot.

    Upstream re-serializes every object's metadata (``json.dumps(indent=2)``) into a ``.meta`` file after
    each write, so that a disk-backed emulator survives restarts. In memory nothing reads it back, and it
    made every write cost O(objects held): after a few thousand results it was most of the emulator's CPU,
    which the tests' workers, Triton and the emulators share.
    """

    def __init__(self) -> None:
        super().__init__(use_memory_fs=True)

    def _write_config_to_file(self) -> None:
        return None


class GcsState:
    """Shared by every request thread: storage, the dispatch lock, faults, resumable sessions, stats."""

    def __init__(self, storage: Storage, faults: GcsFaults | None = None) -> None:
        self.storage = storage
        self.faults = faults or GcsFaults()
        self.lock = threading.Lock()
        self.uploads: dict[str, tuple[str, str, dict[str, list[str]]]] = {}
        self.counters: Counter[str] = Counter()
        self.random = random.Random()

    def current(self, bucket: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.storage.get_file_obj(bucket, name)
            return obj
        except upstream_objects.NotFound:
            return None


def _error_body(code: int, reason: str, message: str) -> str:
    return json.dumps(
        {"error": {"code": code, "message": message, "errors": [{"reason": reason, "message": message}]}}
    )


class _BufferedBody:
    """What upstream's body parser reads from a handler (``headers``, ``rfile``), over a body already read
    off the connection and re-framed with a Content-Length."""

    def __init__(self, headers: Any, body: bytes | None) -> None:
        self.headers = copy.copy(headers)
        del self.headers["Transfer-Encoding"]
        del self.headers["Content-Length"]
        if body is not None:
            self.headers["Content-Length"] = str(len(body))
        self.rfile = io.BytesIO(body or b"")


class BufferedRequest(upstream.Request):  # type: ignore[misc]
    """Upstream's request whose ``data`` is parsed (JSON, multipart, gzip) from an already-read body."""

    def __init__(self, handler: Any, method: str, body: bytes | None) -> None:
        super().__init__(handler, method)
        self._source = _BufferedBody(handler.headers, body)
        self._parsed = False
        self._parsed_data: Any = None

    @property
    def data(self) -> Any:
        if not self._parsed:
            self._parsed_data = upstream._read_data(self._source, self.query)
            self._parsed = True
        return self._parsed_data


class PreconditionRequestHandler(upstream.RequestHandler):  # type: ignore[misc]
    """The upstream handler with faults, preconditions and a lock around the (non-thread-safe) storage."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the client's delayed
    # ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def __init__(self, state: GcsState, *args: Any, **kwargs: Any) -> None:
        self.state = state
        super().__init__(state.storage, *args, **kwargs)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug(format, *args)

    # --- dispatch ---------------------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        method = self.headers.get("x-http-method-override") or method
        # The whole body comes off the connection first, whatever the answer, so that the next request
        # on a keep-alive connection starts where this one ended.
        try:
            body = read_body(self.rfile, self.headers)
        except MalformedBody as exc:
            self.close_connection = True
            self._reply(HTTPStatus.BAD_REQUEST, _error_body(400, "invalid", str(exc)))
            return
        if urlparse(self.path).path.startswith(ADMIN_PREFIX):
            self._admin(method, body or b"")
            return
        state = self.state
        request = BufferedRequest(self, method, body)
        response = upstream.Response(self)
        faults = state.faults
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000.0)
        handler = self._route(request)
        if handler is not None:
            _ = request.data  # parse the body before taking the lock
        with state.lock:
            state.counters["requests"] += 1
            if state.random.random() < faults.error_rate:
                state.counters["injected_503"] += 1
                self._reply(
                    HTTPStatus.SERVICE_UNAVAILABLE, _error_body(503, "backendError", "Injected fault")
                )
                return
        if handler is None:
            response.status = HTTPStatus.NOT_IMPLEMENTED
            response.close()
            return
        with state.lock:
            failure = self._precondition_failure(request, handler)
            if failure is not None:
                state.counters["precondition_failed"] += 1
                self._reply(HTTPStatus.PRECONDITION_FAILED, _error_body(412, "conditionNotMet", failure))
                return
            try:
                handler(request, response, state.storage)
            except ValueError as exc:
                # The upstream file store refuses object names with '..' segments ("invalid path") and
                # the request died without a reply. GCS names are flat: such an object simply does
                # not exist (reads) or is an invalid name (writes).
                state.counters["invalid_object_names"] += 1
                if request.method in ("GET", "HEAD", "DELETE"):
                    self._reply(HTTPStatus.NOT_FOUND, _error_body(404, "notFound", f"No such object: {exc}"))
                else:
                    self._reply(
                        HTTPStatus.BAD_REQUEST, _error_body(400, "invalid", f"Invalid object name: {exc}")
                    )
                return
            self._remember_resumable(request, response, handler)
        response.close()

    def _route(self, request: Any) -> Any:
        """The upstream Router's matching, returning the handler (or None) with the match set."""
        for regex, handlers in upstream.HANDLERS:
            match = re.compile(regex).fullmatch(request.path)
            if match is None:
                continue
            request.set_match(match)
            handler = handlers.get(request.method)
            if (
                handler is None
                and request.method == "POST"
                and request.query.get("uploadType")
                and request.path.endswith("/o")
            ):
                handler = upstream_objects.insert
            return handler
        return None

    def _target(self, request: Any, handler: Any) -> tuple[str, str] | None:
        params = request.params or {}
        bucket = params.get("bucket_name")
        if bucket is None:
            return None
        if "object_id" in params:
            return bucket, params["object_id"]
        if handler is upstream_objects.insert:
            name = (request.query.get("name") or [None])[0]
            data = request.data
            if name is None and isinstance(data, dict):
                name = (data.get("meta") or {}).get("name") if "meta" in data else data.get("name")
            return (bucket, name) if name else None
        return None

    def _precondition_failure(self, request: Any, handler: Any) -> str | None:
        state = self.state
        query: dict[str, list[str]] = request.query
        if handler is upstream_objects.upload_partial or "upload_id" in query:
            upload = state.uploads.get((query.get("upload_id") or [""])[0])
            if upload is None:
                return None
            bucket, name, upload_query = upload
            return check_preconditions(state.current(bucket, name), upload_query)
        if not any(param in query for param in PRECONDITION_PARAMS):
            return None
        target = self._target(request, handler)
        if target is None:
            return None
        current = state.current(*target)
        is_write = handler in (upstream_objects.insert, upstream_objects.xml_upload)
        if current is None and not is_write:
            return None  # the handler answers 404, as the real service does
        return check_preconditions(current, query)

    def _remember_resumable(self, request: Any, response: Any, handler: Any) -> None:
        state = self.state
        if handler is upstream_objects.insert and (request.query.get("uploadType") or [""])[0] == "resumable":
            location = response._headers.get("Location", "")
            match = _UPLOAD_ID_RE.search(location)
            target = self._target(request, handler)
            if match and target:
                upload_id = parse_qs("upload_id=" + match.group(1))["upload_id"][0]
                preconditions = {k: v for k, v in request.query.items() if k in PRECONDITION_PARAMS}
                state.uploads[upload_id] = (target[0], target[1], preconditions)
        elif handler is upstream_objects.upload_partial and response.status == HTTPStatus.OK:
            state.uploads.pop((request.query.get("upload_id") or [""])[0], None)

    def _reply(self, status: HTTPStatus, body: str) -> None:
        data = body.encode()
        self.send_response(status.value, status.phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    # --- admin ------------------------------------------------------------------------------------------
    def _admin(self, method: str, raw: bytes) -> None:
        state = self.state
        path = urlparse(self.path).path[len(ADMIN_PREFIX) :]
        try:
            body = json.loads(raw) if raw.strip() else {}
            if (method, path) == ("GET", "/faults"):
                payload: dict[str, Any] = asdict(state.faults)
            elif (method, path) == ("POST", "/faults"):
                candidate = GcsFaults() if body.pop("reset", False) else GcsFaults(**asdict(state.faults))
                candidate.update(body)
                state.faults = candidate
                payload = asdict(candidate)
            elif (method, path) == ("GET", "/stats"):
                with state.lock:
                    payload = dict(state.counters)
            elif (method, path) == ("POST", "/stats/reset"):
                with state.lock:
                    state.counters.clear()
                payload = {"reset": True}
            else:
                self._reply(HTTPStatus.NOT_FOUND, json.dumps({"error": f"no route {method} {path}"}))
                return
        except (ValueError, TypeError, AttributeError) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, json.dumps({"error": str(exc)}))
            return
        self._reply(HTTPStatus.OK, json.dumps(payload, sort_keys=True))


class GcsEmulator:
    """In-memory GCS emulator on a threaded HTTP server: ``start()`` / ``stop()``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, faults: GcsFaults | None = None) -> None:
        self.state = GcsState(MemoryStorage(), faults)
        self._httpd = ThreadingHTTPServer((host, port), partial(PreconditionRequestHandler, self.state))
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gcs-emulator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return self.url + ADMIN_PREFIX


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GCS emulator with generation preconditions and faults")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="write {port, pid} as JSON here once serving")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The upstream package logs every request at INFO and warns on string bodies; keep it quiet.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    faults = GcsFaults()
    faults.update({"error_rate": args.error_rate, "latency_ms": args.latency_ms})
    emulator = GcsEmulator(host=args.host, port=args.port, faults=faults)
    emulator.start()
    announce_and_wait({"port": emulator.port, "pid": os.getpid()}, args.ready_file)
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
