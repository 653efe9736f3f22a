"""A loopback HTTP server for end-to-end and fault tests.

Serves in-memory bodies on 127.0.0.1 at a free port, counts hits per path,
and can misbehave on request: fail N times before succeeding, stall, send a
truncated body, reset the connection mid-body, or trickle its headers or body
a byte at a time. Runs in a thread of the
test process; every wait is bounded.
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    fail_first: int = 0
    """Answer 503 to this many requests before serving the body."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    delay_hits: int = 0
    """Wait only on this many first requests (0: on every request)."""
    truncate: bool = False
    """Announce the full length, send half, close."""
    trickle: float = 0.0
    """Send the body one byte every this many seconds."""
    trickle_headers: bool = False
    """Send the status line and headers a byte at a time too (at the ``trickle`` pace)."""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


class Site:
    """Routes by path, hit counts, and the server thread."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.received: list[tuple[str, dict[str, str]]] = []
        """(path, headers) of every request, in order."""
        self.started_at: list[float] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer((address, 0), _Handler)
        self._server.daemon_threads = True
        self._server.site = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"

    def page(self, path: str, html: str) -> str:
        return self.add(path, body=html.encode(), content_type="text/html; charset=utf-8")

    def add(self, path: str, **route: object) -> str:
        self.routes[path] = Route(**route)  # type: ignore[arg-type]
        return self.url(path)

    def hit(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            self.started_at.append(time.monotonic())
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return self.hits[path]

    def done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def start(self) -> Site:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        site: Site = self.server.site  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        site.received.append((path, dict(self.headers.items())))
        count = site.hit(path)
        try:
            self._serve(site, path, count)
        finally:
            site.done()

    def _serve(self, site: Site, path: str, count: int) -> None:
        route = site.routes.get(path)
        if route is None:
            self._answer(404, b"not found", "text/plain")
            return
        if route.delay and (not route.delay_hits or count <= route.delay_hits):
            time.sleep(route.delay)
        if count <= route.fail_first:
            self._answer(503, b"try later", "text/plain")
            return
        if route.truncate:
            self._send_truncated(route)
            return
        if route.trickle:
            self._send_trickling(route)
            return
        self._answer(route.status, route.body, route.content_type, route.headers)

    def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_trickling(self, route: Route) -> None:
        """Send a byte at a time, until the body ends or the client goes away."""
        head = (
            f"HTTP/1.1 {route.status} OK\r\nContent-Type: {route.content_type}\r\n"
            f"Content-Length: {len(route.body)}\r\n\r\n"
        ).encode()
        self.close_connection = True
        try:
            if not route.trickle_headers:
                self.wfile.write(head)
                self.wfile.flush()
            for byte in (head if route.trickle_headers else b"") + route.body:
                time.sleep(route.trickle)
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            pass

    def _send_truncated(self, route: Route) -> None:
        self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body[: len(route.body) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
