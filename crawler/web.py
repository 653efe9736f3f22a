"""The ``--metrics`` endpoint: ``/metrics`` for Prometheus, ``/status.json``, and a page for people.

Imported only with ``--metrics``, so a crawl without it never loads prometheus-client.

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
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .broker.transport import format_address
from .errors import AddressInUse, UsageError
from .messages import Result
from .monitor import Monitor
from .progress import format_bytes

__all__ = ["Metrics", "MetricsServer", "render_page"]

REFRESH_SECONDS = 3


class Metrics:
    """The crawl in Prometheus's terms: counters and gauges from the monitor's snapshot, two histograms."""

    def __init__(self, monitor: Monitor) -> None:
        self.registry = CollectorRegistry()
        self._seconds = Histogram(
            "crawler_download_seconds",
            "Time of one attempt at one URL, as its worker measured it.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self._sizes = Histogram(
            "crawler_download_bytes",
            "Size of each body received.",
            buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9),
            registry=self.registry,
        )
        self.registry.register(_Collector(monitor))
        monitor.observers.append(self.observe)

    def observe(self, result: Result) -> None:
        self._seconds.observe(result.elapsed)
        if result.bytes:
            self._sizes.observe(result.bytes)


class _Collector(Collector):
    """Counters and gauges read at scrape time; never a label that grows with the crawl."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        snapshot = self._monitor.snapshot
        urls = snapshot.get("urls", {})
        outcomes = CounterMetricFamily("crawler_urls", "URLs that reached a final state.", labels=["outcome"])
        outcomes.add_metric(["ok"], urls.get("ok", 0))
        outcomes.add_metric(["failed"], urls.get("failed", 0))
        yield outcomes
        yield CounterMetricFamily("crawler_bytes", "Bytes of the files saved.", value=snapshot.get("bytes", 0))
        for name, key in (("pending", "pending"), ("leased", "leased"), ("retry_waiting", "retry_waiting")):
            yield GaugeMetricFamily(f"crawler_urls_{name}", f"URLs {name.replace('_', ' ')}.", value=urls.get(key, 0))
        live = sum(1 for worker in snapshot.get("workers", []) if worker["live"])
        yield GaugeMetricFamily("crawler_workers_live", "Workers heard from within a lease period.", value=live)
        rotation = snapshot.get("hosts_in_rotation", 0)
        yield GaugeMetricFamily("crawler_hosts_in_rotation", "Hosts with URLs ready to hand out.", value=rotation)


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
        self._server.metrics = Metrics(monitor)  # type: ignore[attr-defined]
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
        metrics: Metrics = self.server.metrics  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
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
