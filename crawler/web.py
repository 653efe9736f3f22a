"""The ``--metrics`` endpoint: ``/metrics`` for Prometheus, ``/status.json``, and a page for people.

A standard-library HTTP server in a daemon thread of the master, serving the
monitor's latest snapshot: nothing it answers touches the crawl. The page is
drawn here, figures and an inline SVG chart, with no script, no CDN and no
framework, and reloads itself every few seconds; it works offline.
"""

from __future__ import annotations

import errno
import html
import http.server
import json
import threading
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .broker.transport import format_address
from .errors import AddressInUse, UsageError
from .monitor import Monitor
from .progress import format_bytes

__all__ = ["MetricsServer", "render_page"]

REFRESH_SECONDS = 3


class MetricsServer:
    """Serve the monitor on ``address`` until closed; binding fails at once with one clear error."""

    def __init__(self, address: tuple[str, int], monitor: Monitor) -> None:
        try:
            self._server = http.server.ThreadingHTTPServer(address, _Handler)
        except OSError as error:
            where = format_address(address)
            if error.errno == errno.EADDRINUSE:
                raise AddressInUse(f"cannot serve metrics: address {where} is already in use") from None
            raise UsageError(f"cannot serve metrics on {where}: {error.strerror or error}") from None
        self._server.daemon_threads = True
        self._server.monitor = monitor  # type: ignore[attr-defined]
        self.address = format_address(self._server.server_address[:2])  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not news

    def do_GET(self) -> None:
        monitor: Monitor = self.server.monitor  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(generate_latest(monitor.registry), CONTENT_TYPE_LATEST)
        elif path == "/status.json":
            self._answer(json.dumps(monitor.snapshot).encode(), "application/json")
        elif path == "/":
            self._answer(render_page(monitor.snapshot).encode(), "text/html; charset=utf-8")
        else:
            self._answer(b"not found\n", "text/plain", status=404)

    def _answer(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def render_page(snapshot: dict[str, Any]) -> str:
    """The page a person leaves open: the figures, the last hour's rate, the workers, the failures."""
    if not snapshot:
        return _page("<p>The crawl is starting.</p>")
    urls, rate = snapshot["urls"], snapshot["rate"]
    figures = [
        ("ok", urls["ok"]),
        ("failed", urls["failed"]),
        ("pending", urls["pending"]),
        ("leased", urls["leased"]),
        ("retry_waiting", urls["retry_waiting"]),
        ("total", urls["total"]),
        ("bytes", format_bytes(snapshot["bytes"])),
        ("urls_per_second_last_minute", rate["urls_per_second_last_minute"]),
        ("mb_per_second_last_minute", rate["mb_per_second_last_minute"]),
    ]
    rows = "".join(f'<tr><th>{name.replace("_", " ")}</th><td id="{name}">{value}</td></tr>' for name, value in figures)
    workers = "".join(
        f"<tr><td>{html.escape(worker['name'])}</td><td>{worker['threads']}</td><td>{worker['leases']}</td>"
        f"<td>{worker['done']}</td><td>{worker['last_heard_seconds']} s</td></tr>"
        for worker in snapshot["workers"]
    )
    failures = "".join(
        f"<tr><td>{count}</td><td>{html.escape(str(reason))}</td></tr>" for reason, count in snapshot["failures"]
    )
    state = "running" if snapshot["running"] else "finished"
    body = (
        f'<p id="state">{state}, {snapshot["elapsed_seconds"]:.0f} s</p>'
        f"<table>{rows}</table>"
        f"<h2>URLs/s, last hour</h2>{_chart(snapshot['history'])}"
        '<h2>Workers</h2><table id="workers"><tr><th>name</th><th>threads</th><th>leases</th><th>done</th>'
        f"<th>last heard</th></tr>{workers}</table>"
        f'<h2>Commonest failures</h2><table id="failures">{failures or "<tr><td>none</td></tr>"}</table>'
    )
    return _page(body)


def _chart(history: list[list[float]], width: int = 600, height: int = 120) -> str:
    """An inline SVG line of URLs/s per minute, an hour wide."""
    top = max((rate for _minute, rate in history), default=0.0) or 1.0
    points = " ".join(
        f"{width - minute * width / 60:.0f},{height - rate * height / top:.0f}" for minute, rate in history
    )
    return (
        f'<svg id="chart" width="{width}" height="{height + 20}" viewBox="0 0 {width} {height + 20}" role="img">'
        f'<rect width="{width}" height="{height}" fill="#f4f4f4"/>'
        f'<polyline points="{points}" fill="none" stroke="#2a6" stroke-width="2"/>'
        f'<text x="2" y="12" font-size="11">{top:g}/s</text>'
        f'<text x="2" y="{height + 15}" font-size="11">60 min ago</text>'
        f'<text x="{width - 30}" y="{height + 15}" font-size="11">now</text></svg>'
    )


def _page(body: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}"><title>crawler</title>'
        "<style>body{font:14px sans-serif;margin:1em 2em}th{text-align:left;padding-right:1em}"
        "td{padding-right:1em}</style></head>"
        f"<body><h1>crawler</h1>{body}</body></html>"
    )
