"""Bound one download as a whole: a deadline (``--max-time``) and a lowest speed (``--min-speed``).

``--timeout`` bounds each read, so a server that sends a byte just inside it
would hold a download, its thread and its lease for ever. A :class:`Transfer`
follows one attempt: the body loop reports every chunk to it and is stopped
there once a limit is passed. Where no chunk comes back to check (headers
sent a byte at a time, or one large read), the worker's :class:`Watchdog`
thread checks the same limits twice a second and shuts the attempt's socket,
which ends the blocked read at once.

The socket is known through :class:`LimitedAdapter`: its connections attach
themselves to the calling thread's transfer when they wait for a response.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from requests.adapters import HTTPAdapter

__all__ = ["LimitedAdapter", "Transfer", "TransferAborted", "Watchdog"]

WATCH_EVERY_SECONDS = 0.5

_current = threading.local()


class TransferAborted(Exception):
    """The attempt passed ``--max-time`` or fell below ``--min-speed``."""


class Transfer:
    """One attempt at one URL, measured against the policy's limits.

    ``received`` is called from the downloading thread; ``check`` and
    ``cut`` also from the watchdog's. The lock makes sure a cut never hits
    a connection the thread has already moved on with (keep-alive reuses it).
    """

    def __init__(
        self, max_time: float, min_speed: float, min_speed_time: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._max_time = max_time
        self._min_speed = min_speed
        self._min_speed_time = min_speed_time
        self.started = clock()
        self.bytes = 0
        self.responses = 0
        """Responses seen, redirects included: above 0, a failure came after the first hop."""
        self.aborted: str | None = None
        self._window_start = self.started
        self._window_bytes = 0
        self._lock = threading.Lock()
        self._connection: Any = None
        self._done = False

    def __enter__(self) -> Transfer:
        _current.transfer = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._done = True
            self._connection = None
        _current.transfer = None

    def received(self, count: int) -> None:
        """Count ``count`` body bytes; raise TransferAborted past a limit."""
        self.bytes += count
        now = self._clock()
        reason = self.check(now)
        if reason:
            self.aborted = reason
            raise TransferAborted(reason)
        if now - self._window_start >= self._min_speed_time:
            # A new window: a fast start must not hide a later stall, nor a slow start doom a fast body.
            self._window_start, self._window_bytes = now, self.bytes

    def check_not_cut(self) -> None:
        """Raise TransferAborted if the watchdog cut this attempt.

        Called where a body ends: a cut looks like the server closing the
        connection, which may pass for the end of a body without a length,
        or even of the headers.
        """
        if self.aborted:
            raise TransferAborted(self.aborted)

    def saw_response(self, response: object, *args: object, **kwargs: object) -> None:
        """A requests response hook: count each hop."""
        self.responses += 1

    def check(self, now: float | None = None) -> str | None:
        """Return why this attempt must stop now, or None."""
        now = self._clock() if now is None else now
        if self._max_time and now - self.started > self._max_time:
            return f"took longer than --max-time {self._max_time:g} s"
        window = now - self._window_start
        too_slow = self.bytes - self._window_bytes < self._min_speed * window
        if self._min_speed and window >= self._min_speed_time and too_slow:
            return f"slower than --min-speed {self._min_speed:g} bytes/s for {self._min_speed_time:g} s"
        return None

    def attach(self, connection: Any) -> None:
        with self._lock:
            if not self._done:
                self._connection = connection

    def cut(self, reason: str) -> None:
        """Stop the attempt from another thread: shut its socket, remember why."""
        with self._lock:
            if self._done:
                return
            self.aborted = reason
            sock = getattr(self._connection, "sock", None)
            if sock is not None:
                # socket.socket's own shutdown, also under TLS: SSLSocket's would
                # unwrap the TLS object the reading thread is using.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """A thread that cuts the attempts that passed their limits without a chunk to check them."""

    def __init__(self, every: float = WATCH_EVERY_SECONDS) -> None:
        self._every = every
        self._transfers: set[Transfer] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def watching(self, transfer: Transfer) -> Iterator[Transfer]:
        with self._lock:
            self._transfers.add(transfer)
        try:
            yield transfer
        finally:
            with self._lock:
                self._transfers.discard(transfer)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                transfers = list(self._transfers)
            for transfer in transfers:
                reason = transfer.check()
                if reason:
                    transfer.cut(reason)

    def close(self) -> None:
        self._stop.set()


def _attach_to_current(connection: Any) -> None:
    transfer: Transfer | None = getattr(_current, "transfer", None)
    if transfer is not None:
        transfer.attach(connection)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self) -> Any:
        _attach_to_current(self)
        return super().getresponse()


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self) -> Any:
        _attach_to_current(self)
        return super().getresponse()


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class LimitedAdapter(HTTPAdapter):
    """requests' adapter whose connections tell the current :class:`Transfer` their socket.

    Everything else is requests' own (``responses`` fakes ``send`` on the
    base class, so tests still reach it). SOCKS proxies keep urllib3's
    connections: there only the per-chunk checks apply.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.PoolManager:
        manager: urllib3.PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:
            manager.pool_classes_by_scheme = _POOLS
        return manager
