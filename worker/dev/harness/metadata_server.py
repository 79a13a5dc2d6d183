"""A fake GCE metadata server whose ``instance/preempted`` flag the harness flips per simulated VM."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from typing import Any


class FakeMetadataServer:
    """Serves ``instance/preempted`` per simulated instance on 127.0.0.1 (port chosen by the OS).

    Point a worker at ``url_for(name)`` with ``FLEET_METADATA_URL``. ``?wait_for_change=true`` blocks
    until the flag changes (or ``timeout_sec``), like the real server. Requests without the
    ``Metadata-Flavor: Google`` header get 403, like the real server.
    """

    def __init__(self) -> None:
        self._flags: dict[str, bool] = {}
        self._changed = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-metadata", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url_for(self, instance: str) -> str:
        return f"http://127.0.0.1:{self.port}/{instance}/computeMetadata/v1"

    def start(self) -> FakeMetadataServer:
        self._thread.start()
        return self

    def set_preempted(self, instance: str, value: bool) -> None:
        with self._changed:
            self._flags[instance] = value
            self._changed.notify_all()

    def _handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(request.path)
        parts = url.path.strip("/").split("/")
        if request.headers.get("Metadata-Flavor") != "Google":
            self._reply(request, 403, "Missing Metadata-Flavor:Google header.")
            return
        if len(parts) < 2 or parts[1:] != ["computeMetadata", "v1", "instance", "preempted"]:
            self._reply(request, 404, "not found")
            return
        instance = parts[0]
        query = urllib.parse.parse_qs(url.query)
        with self._changed:
            current = self._flags.get(instance, False)
            last_etag = query.get("last_etag", [None])[0]
            wait = query.get("wait_for_change", ["false"])[0].lower() == "true"
            # Like the real server: with a stale last_etag answer at once, else hang until a change.
            if wait and (not last_etag or last_etag == self._etag(current)):
                timeout_s = float(query.get("timeout_sec", ["30"])[0])
                self._changed.wait_for(lambda: self._flags.get(instance, False) != current, timeout=timeout_s)
                current = self._flags.get(instance, False)
        self._reply(request, 200, "TRUE" if current else "FALSE")

    @staticmethod
    def _etag(value: bool) -> str:
        return "etag-true" if value else "etag-false"

    @classmethod
    def _reply(cls, request: http.server.BaseHTTPRequestHandler, status: int, body: str) -> None:
        payload = body.encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/text")
            request.send_header("Metadata-Flavor", "Google")
            request.send_header("ETag", cls._etag(body == "TRUE"))
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except OSError:  # the worker went away mid-wait (kill -9)
            pass

    def close(self) -> None:
        with self._changed:
            self._changed.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
