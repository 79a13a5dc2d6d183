"""A tiny JSON-over-HTTP admin endpoint (fault injection, stats) shared by the local emulators.

Server side: ``serve_admin(routes, host, port)`` starts a daemon ``ThreadingHTTPServer`` whose routes are
``{("GET", "/faults"): fn}`` with ``fn(body: dict, query: dict) -> dict``. Client side: ``AdminClient``
(what ``FLEET_PUBSUB_ADMIN_URL`` / ``FLEET_GCS_ADMIN_URL`` point at), used by tests and chaos scripts
from another process.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

Route = Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]


def make_handler(routes: Mapping[tuple[str, str], Route], prefix: str = "") -> type[BaseHTTPRequestHandler]:
    """A request handler class dispatching ``(method, path)`` to JSON routes."""

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _dispatch(self, method: str) -> None:
            parsed = urlparse(self.path)
            path = parsed.path[len(prefix) :] if prefix and parsed.path.startswith(prefix) else parsed.path
            route = routes.get((method, path))
            if route is None:
                self._reply(404, {"error": f"no route {method} {parsed.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
                self._reply(200, route(body, query))
            except (ValueError, TypeError, KeyError) as exc:
                self._reply(400, {"error": str(exc)})

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, sort_keys=True).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats often
            return

    return _Handler


def serve_admin(
    routes: Mapping[tuple[str, str], Route], host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """Start the admin server on a daemon thread; ``server.server_address[1]`` is the bound port."""
    server = ThreadingHTTPServer((host, port), make_handler(routes))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="admin-http", daemon=True).start()
    return server


class AdminClient:
    """Client of an emulator's admin endpoint: ``set_faults(...)``, ``faults()``, ``stats()``."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None, **query: Any) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urlencode({key: value for key, value in query.items() if value is not None})
        data = json.dumps(body or {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read())

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/faults")
        return result

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge the given fault settings; returns the faults now in force."""
        result: dict[str, Any] = self._call("POST", "/faults", faults)
        return result

    def clear_faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/faults", {"reset": True})
        return result

    def stats(self, **query: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats", None, **query)
        return result

    def reset_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/stats/reset")
        return result

    def pause_delivery(self, subscription: str, *, paused: bool = True) -> dict[str, Any]:
        """Pub/Sub emulator only: stop (or resume) delivering from one subscription."""
        result: dict[str, Any] = self._call(
            "POST", "/subscriptions/pause", {"subscription": subscription, "paused": paused}
        )
        return result
