"""Watch a crawl while it runs: a status snapshot about once a second, and its file.

The master calls :meth:`Monitor.tick` on every turn of its loop. Once a
second the monitor builds a snapshot (a dict of builtins: what
``crawler status --json`` prints and ``/status.json`` serves) from the
ledger's counts and the broker's status, and writes it atomically to
``.crawler/status.json`` so that any shell on the master's host can read it
without touching the master. :func:`read_status` reads it back, or, for a
crawl whose master never wrote one, builds what it can from ``state.db``
opened read-only (WAL lets it sit beside a running master).
"""

from __future__ import annotations

import collections
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .broker import Broker
from .errors import UsageError
from .ledger import Ledger
from .messages import Policy, Result, Status
from .progress import format_bytes
from .state import STATE_FOLDER

__all__ = ["STATUS_FILE", "Monitor", "read_status", "render_status"]

STATUS_FILE = "status.json"
SNAPSHOT_SECONDS = 1.0
HISTORY_SECONDS = 3600
"""How far back the rate chart goes."""
STALE_SECONDS = 10.0
"""A status file not rewritten for this long belongs to a master that is gone."""


class Monitor:
    """The crawl's figures for people and for Prometheus, kept by the master."""

    def __init__(
        self,
        root: Path,
        ledger: Ledger,
        broker: Broker,
        policy: Policy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = root / STATE_FOLDER / STATUS_FILE
        self._ledger = ledger
        self._counts = ledger.counts
        self._broker = broker
        self._policy = policy
        self._clock = clock
        self._started_wall = time.time()
        self._last = -SNAPSHOT_SECONDS
        # (monotonic time, URLs done this run, bytes) once a second, for rates and the chart.
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=HISTORY_SECONDS)
        self.snapshot: dict[str, Any] = {}
        # Who else wants each result (the Prometheus histograms, with --metrics): nothing by default.
        self.observers: list[Callable[[Result], None]] = []

    def observe(self, result: Result) -> None:
        """Pass one attempt's result to the observers."""
        for observer in self.observers:
            observer(result)

    def tick(self, running: bool = True) -> None:
        """Refresh the snapshot and its file, at most once a second (always when the crawl ends)."""
        now = self._clock()
        if running and now - self._last < SNAPSHOT_SECONDS:
            return
        self._last = now
        self._samples.append((now, self._counts.done_this_run, self._counts.bytes))
        self.snapshot = self._build(now, running)
        _write_atomically(self._path, self.snapshot)

    def _build(self, now: float, running: bool) -> dict[str, Any]:
        counts, window, status = self._counts, self._broker.counts(), self._broker.status()
        elapsed = max(now - self._samples[0][0], 1e-9) if self._samples else 0.0
        last_minute = self._rate_since(now - 60)
        remaining = max(counts.total - counts.done, 0)
        live_after = self._policy.lease_seconds
        return {
            "running": running,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "updated": time.time(),
            "started": self._started_wall,
            "elapsed_seconds": round(counts.elapsed(), 1),
            "urls": {
                "total": counts.total,
                "ok": counts.ok,
                "failed": counts.failed,
                "pending": max(remaining - window.leased - status.retry_waiting, 0),
                "leased": window.leased,
                "retry_waiting": status.retry_waiting,
            },
            "bytes": self._ledger.bytes_before + counts.bytes,
            "rate": {
                "urls_per_second": round(counts.done_this_run / elapsed, 2) if elapsed else 0.0,
                "urls_per_second_last_minute": round(last_minute[0], 2),
                "mb_per_second": round(counts.bytes / 1e6 / elapsed, 3) if elapsed else 0.0,
                "mb_per_second_last_minute": round(last_minute[1] / 1e6, 3),
            },
            "eta_seconds": round(remaining / last_minute[0]) if last_minute[0] > 0 and remaining else None,
            "failures": self._ledger.failure_reasons.most_common(10),
            "workers": [
                {
                    "name": row.name,
                    "threads": row.threads,
                    "leases": row.leases,
                    "done": row.done,
                    "last_heard_seconds": round(row.idle_seconds, 1),
                    "live": row.idle_seconds < live_after,
                }
                for row in status.workers
            ],
            "oldest_lease_seconds": None
            if status.oldest_lease_seconds is None
            else round(status.oldest_lease_seconds, 1),
            "crawl_mode": self._policy.depth > 0,
            "depth_reached": self._ledger.depth_reached,
            "hosts_in_rotation": status.hosts_in_rotation,
            "busiest_hosts": status.busiest_hosts,
            "history": self._history(now),
        }

    def _rate_since(self, since: float) -> tuple[float, float]:
        """URLs/s and bytes/s between the first sample after ``since`` and the last one."""
        if len(self._samples) < 2:
            return 0.0, 0.0
        first = next(sample for sample in self._samples if sample[0] >= since)
        last = self._samples[-1]
        span = last[0] - first[0]
        if span <= 0:
            return 0.0, 0.0
        return (last[1] - first[1]) / span, (last[2] - first[2]) / span

    def _history(self, now: float) -> list[list[float]]:
        """[minutes ago, URLs/s in that minute] for the last hour, oldest first: the page's chart."""
        points = []
        by_minute = {int((now - at) // 60): (at, done) for at, done, _bytes in reversed(self._samples)}
        for minute in sorted(by_minute, reverse=True):
            later = by_minute.get(minute - 1)
            at, done = by_minute[minute]
            if later is not None and later[0] > at:
                points.append([minute, round((later[1] - done) / (later[0] - at), 2)])
        return points


def _write_atomically(path: Path, snapshot: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(snapshot), encoding="utf-8")
        temporary.replace(path)
    except OSError:
        pass  # a status nobody could write is no reason to stop the crawl; the state is what counts


def read_status(root: Path) -> dict[str, Any]:
    """The crawl's latest snapshot; from ``state.db`` alone when no master ever wrote one.

    Raise UsageError when ``root`` holds no crawl.
    """
    database = root / STATE_FOLDER / "state.db"
    if not database.is_file():
        raise UsageError(f"no crawl in {root} (expected {database})")
    try:
        snapshot: dict[str, Any] = json.loads((root / STATE_FOLDER / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _from_state(database)
    if snapshot.get("running") and not _master_alive(snapshot):
        snapshot["running"] = False  # its master died without saying so
    return snapshot


def _master_alive(snapshot: dict[str, Any]) -> bool:
    if time.time() - float(snapshot.get("updated", 0)) > STALE_SECONDS:
        return False
    if snapshot.get("host") != socket.gethostname():
        return True  # fresh, and written on another machine (a shared folder): trust it
    try:
        os.kill(int(snapshot.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _from_state(database: Path) -> dict[str, Any]:
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            counts = dict(db.execute("SELECT status, count(*) FROM urls GROUP BY status").fetchall())
            saved = db.execute("SELECT coalesce(sum(bytes), 0) FROM urls WHERE status=?", (Status.OK,)).fetchone()[0]
            failures = db.execute(
                "SELECT error, count(*) FROM urls WHERE status=? GROUP BY error ORDER BY 2 DESC LIMIT 10",
                (Status.FAILED,),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as error:
        raise UsageError(f"cannot read the crawl state {database}: {error}") from None
    ok, failed, pending = (counts.get(status.value, 0) for status in (Status.OK, Status.FAILED, Status.PENDING))
    return {
        "running": False,
        "urls": {"total": ok + failed + pending, "ok": ok, "failed": failed, "pending": pending, "leased": 0,
                 "retry_waiting": 0},
        "bytes": saved,
        "failures": [list(row) for row in failures],
        "workers": [],
    }  # fmt: skip


def render_status(snapshot: dict[str, Any]) -> str:
    """The snapshot as a person reads it in a terminal."""
    urls, rate = snapshot["urls"], snapshot.get("rate", {})
    lines = [
        f"crawl {'running' if snapshot['running'] else 'not running'}"
        + (f", for {_duration(snapshot['elapsed_seconds'])}" if "elapsed_seconds" in snapshot else ""),
        f"URLs: {urls['ok']} ok, {urls['failed']} failed, {urls['pending']} pending, {urls['leased']} leased, "
        f"{urls['retry_waiting']} waiting to retry, of {urls['total']}; {format_bytes(snapshot['bytes'])} saved",
    ]
    if rate:
        lines.append(
            f"rate: {rate['urls_per_second_last_minute']} URLs/s and {rate['mb_per_second_last_minute']} MB/s "
            f"over the last minute, {rate['urls_per_second']} URLs/s since the start"
            + (f"; about {_duration(snapshot['eta_seconds'])} left" if snapshot.get("eta_seconds") else "")
        )
    if snapshot.get("oldest_lease_seconds") is not None:
        lines.append(f"oldest lease: {snapshot['oldest_lease_seconds']} s")
    if snapshot.get("crawl_mode"):
        busiest = ", ".join(f"{host} ({count})" for host, count in snapshot.get("busiest_hosts", []))
        lines.append(f"depth reached: {snapshot['depth_reached']}; most URLs waiting: {busiest or 'none'}")
    if snapshot["workers"]:
        lines.append("workers:")
        for worker in snapshot["workers"]:
            lines.append(
                f"  {worker['name']}: {worker['threads']} threads, {worker['leases']} leases, "
                f"{worker['done']} done, heard {worker['last_heard_seconds']} s ago"
            )
    if snapshot["failures"]:
        lines.append("commonest failures:")
        lines.extend(f"  {count:>6}  {reason}" for reason, count in snapshot["failures"])
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}h{minute:02d}m" if hours else f"{minute}m{second:02d}s"
