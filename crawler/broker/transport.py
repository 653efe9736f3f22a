"""The standard library's manager, hardened: serve named callables, connect to them.

With :mod:`crawler.broker.manager`, the only user of ``multiprocessing.managers``.
The master serves two registered named callables, ``get_task_queue`` and
``get_result_queue``, through a ``BaseManager`` server running in a thread
of its process; a worker connects with the address and the authkey and gets
proxies to its own views of them (see :mod:`crawler.broker.manager`).

What this module changes in the stdlib's pattern, and why:

* Sockets get ``TCP_NODELAY``: without it every new manager connection
  stalls about 40 ms in Nagle's algorithm.
* The authkey handshake has a time limit and a cap on how many run at once,
  in all and per peer address, and authenticated connections are capped too:
  the stdlib waits for ever on a client that connects and never speaks, one
  thread each. When the cap is reached the oldest unfinished handshake is
  shed, not the newest: a real worker finishes its handshake in
  milliseconds, so idle connections opened by anyone who can reach the port
  cannot keep workers out.
* A client's connect and handshake have time limits, so a worker facing a
  dead address gives up instead of hanging.
* Reconnecting forgets the proxies' cached per-address connection
  (``BaseProxy._address_to_local``), which otherwise stays dead after the
  master restarts.

Everything sent over these connections is pickled: anyone who holds the
authkey can run code on the master and the workers. See the README.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import AuthenticationError, connection, managers
from typing import Any

from ..errors import AddressInUse, AuthenticationFailed, MasterError, MasterUnreachable

__all__ = [
    "CONNECTION_ERRORS",
    "QueueServer",
    "drop_thread_connection",
    "format_address",
    "open_proxies",
    "parse_address",
]

logger = logging.getLogger(__name__)

TRANSPORT = "crawler"
HANDSHAKE_SECONDS = 5.0
KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 25_000}
"""A peer silent for 25 s is gone: keepalive probes (10 + 3 x 5 s), or unacknowledged data (25,000 ms)."""
CALL_SECONDS = 30.0
"""A worker's call unanswered this long is a lost master (the connection is then dropped)."""
LISTEN_BACKLOG = 256
MAX_HANDSHAKES = 64
MAX_HANDSHAKES_PER_PEER = 16
MAX_CONNECTIONS = 1024
WARN_EVERY_SECONDS = 10.0
# What a broken or vanished master looks like to a proxy call.
CONNECTION_ERRORS = (EOFError, OSError, ConnectionError)


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``HOST:PORT`` (or ``:PORT``) into a socket address."""
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or default_host, int(port))


def format_address(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _tune_socket(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Proxy calls have no timeout: keepalive is what notices a peer whose
    # machine vanished (no reset ever comes) within about half a minute, on an
    # idle connection; on one with a call unanswered, the user timeout does,
    # within the same bound (without it, Linux retransmits for 15 minutes).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE.items():
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _set_receive_timeout(conn: connection.Connection, seconds: float) -> None:
    """Bound blocking reads on a Connection (0 removes the bound).

    Connection reads with os.read on a blocking descriptor, so a socket-level
    timeout (settimeout) would not apply; SO_RCVTIMEO does.
    """
    sock = socket.socket(fileno=conn.fileno())
    try:
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    finally:
        sock.detach()


def _shut(conn: connection.Connection) -> None:
    """Shut a Connection's socket from another thread, which wakes its blocked read."""
    sock = socket.socket(fileno=conn.fileno())
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


class _ThrottledWarning:
    """A warning logged at once, then at most every ``every`` seconds with a count.

    Hundreds of hostile connections a second must not become hundreds of log lines.
    """

    def __init__(self, every: float = WARN_EVERY_SECONDS) -> None:
        self._every = every
        self._last = -every
        self._suppressed = 0
        self._lock = threading.Lock()

    def warn(self, message: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._every:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            message += f" ({suppressed} more like this in the last {self._every:g} s)"
        logger.warning(message, *args)


class _Handshakes:
    """Connections still authenticating, oldest first, with a bound in all and per peer."""

    def __init__(self) -> None:
        self._pending: collections.OrderedDict[int, tuple[connection.Connection, str]] = collections.OrderedDict()
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def admit(self, conn: connection.Connection, peer: str) -> bool:
        """Register a new connection; shed the oldest one in the way; False if none could be."""
        with self._lock:
            if self._per_peer[peer] >= MAX_HANDSHAKES_PER_PEER and not self._shed_oldest(peer):
                return False
            if len(self._pending) >= MAX_HANDSHAKES and not self._shed_oldest(None):
                return False
            self._pending[id(conn)] = (conn, peer)
            self._per_peer[peer] += 1
            return True

    def done(self, conn: connection.Connection) -> None:
        with self._lock:
            entry = self._pending.pop(id(conn), None)
            if entry is not None:
                self._per_peer[entry[1]] -= 1

    def _shed_oldest(self, peer: str | None) -> bool:
        for key, (conn, owner) in self._pending.items():
            if peer is None or owner == peer:
                del self._pending[key]
                self._per_peer[owner] -= 1
                _shut(conn)  # its thread's read ends now and the thread exits
                return True
        return False


def _handshake(conn: connection.Connection, authkey: bytes, serving: bool) -> None:
    _set_receive_timeout(conn, HANDSHAKE_SECONDS)
    if serving:
        connection.deliver_challenge(conn, authkey)
        connection.answer_challenge(conn, authkey)
    else:
        connection.answer_challenge(conn, authkey)
        connection.deliver_challenge(conn, authkey)
    _set_receive_timeout(conn, 0)


class _Listener:
    """A TCP listener whose accepted connections have TCP_NODELAY and no handshake yet."""

    def __init__(self, address: tuple[str, int], backlog: int = 1, authkey: bytes | None = None) -> None:
        self._socket = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            self._socket.listen(max(backlog, LISTEN_BACKLOG))
        except OSError:
            self._socket.close()
            raise
        self.address = self._socket.getsockname()[:2]
        self.last_peer: Any = None

    def accept(self) -> connection.Connection:
        sock, self.last_peer = self._socket.accept()
        _tune_socket(sock)
        return connection.Connection(sock.detach())

    def close(self) -> None:
        self._socket.close()


def _client(address: tuple[str, int], family: object = None, authkey: bytes | None = None) -> connection.Connection:
    """Open an authenticated manager connection, bounded in time."""
    sock = socket.create_connection(address, timeout=HANDSHAKE_SECONDS)
    sock.settimeout(None)
    _tune_socket(sock)
    conn = connection.Connection(sock.detach())
    try:
        if authkey is not None:
            _handshake(conn, authkey, serving=False)
    except BaseException:
        conn.close()
        raise
    # A call's answer comes within a second or two (a get blocks at most MAX_BLOCK_SECONDS on the
    # master). One that never comes (the master's process stopped, or a proxy between that holds the
    # connection while the master's host is gone) ends the call here, not never.
    _set_receive_timeout(conn, CALL_SECONDS)
    return conn


managers.listener_client[TRANSPORT] = (_Listener, _client)  # type: ignore[attr-defined]


class _Server(managers.Server):
    """The stdlib manager server with bounded handshakes and connections."""

    # A worker has no business stopping the master's server.
    public = [name for name in managers.Server.public if name != "shutdown"]

    def __init__(self, registry: dict[str, Any], address: tuple[str, int], authkey: bytes) -> None:
        super().__init__(registry, address, authkey, TRANSPORT)
        self.stop_event = threading.Event()
        self._handshakes = _Handshakes()
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._refused = _ThrottledWarning()
        self._full = _ThrottledWarning()

    def accepter(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn = self.listener.accept()  # type: ignore[attr-defined]
            except OSError:
                continue  # a client that reset before accept; closing the listener ends the loop
            peer = str(self.listener.last_peer[0])  # type: ignore[attr-defined]
            if not self._handshakes.admit(conn, peer):
                conn.close()
                continue
            threading.Thread(target=self.handle_request, args=(conn,), daemon=True).start()

    def _handle_request(self, c: connection.Connection) -> None:
        try:
            _handshake(c, bytes(self.authkey), serving=True)  # type: ignore[attr-defined]
        except (AuthenticationError, OSError, EOFError) as error:
            self._refused.warn("master: refused a connection: %s", _handshake_failure(error))
            return
        finally:
            self._handshakes.done(c)
        if not self._connections.acquire(blocking=False):
            self._full.warn("master: connection limit %d reached; dropped one", MAX_CONNECTIONS)
            return
        try:
            self._dispatch(c)
        finally:
            self._connections.release()

    def _dispatch(self, c: connection.Connection) -> None:
        """Answer the connection's first request, as the stdlib server does after its handshake."""
        try:
            _ignored, name, args, kwargs = c.recv()
            if name not in self.public:
                raise ValueError(f"{name!r} unrecognized")
            message = ("#RETURN", getattr(self, name)(c, *args, **kwargs))
        except (EOFError, OSError):
            return
        except Exception:  # the stdlib sends any failure back to the client
            message = ("#TRACEBACK", traceback.format_exc())
        with contextlib.suppress(OSError):
            c.send(message)


def _handshake_failure(error: BaseException) -> str:
    if isinstance(error, AuthenticationError):
        return "authentication failed (wrong authkey)"
    if isinstance(error, BlockingIOError) or getattr(error, "errno", None) == errno.EAGAIN:
        return f"no handshake within {HANDSHAKE_SECONDS:g} s"
    return f"connection lost during handshake ({error.__class__.__name__})"


class QueueServer:
    """Serve named callables to workers from a thread of this process."""

    def __init__(
        self, address: tuple[str, int], authkey: bytes, callables: dict[str, tuple[Callable[..., Any], tuple[str, ...]]]
    ) -> None:
        registry = {name: (function, exposed, None, None) for name, (function, exposed) in callables.items()}
        try:
            self._server = _Server(registry, address, authkey)
        except OSError as error:
            raise _bind_error(address, error) from None
        self.address: tuple[str, int] = self._server.address  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.accepter, name="accepter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.stop_event.set()
        self._server.listener.close()  # type: ignore[attr-defined]


def _bind_error(address: tuple[str, int], error: OSError) -> MasterError:
    where = format_address(address)
    if error.errno == errno.EADDRINUSE:
        return AddressInUse(f"address {where} is already in use (is another master running?)")
    if error.errno == errno.EADDRNOTAVAIL:
        return MasterError(f"cannot listen on {where}: no such local address")
    return MasterError(f"cannot listen on {where}: {error.strerror}")


class _MasterClient(managers.BaseManager):
    """Client side of the master's manager: proxies only, no callables."""


_MasterClient.register("get_task_queue")
_MasterClient.register("get_result_queue")


def open_proxies(address: tuple[str, int], authkey: bytes, worker: str, capacity: int) -> tuple[Any, Any]:
    """Connect to a master and return proxies to this worker's task and result queue views."""
    # Proxies cache one connection per address and thread and never drop
    # it, so after a master restart they would keep using a dead socket.
    with managers.BaseProxy._mutex:
        managers.BaseProxy._address_to_local.pop(address, None)
    manager = _MasterClient(address=address, authkey=authkey, serializer=TRANSPORT)
    try:
        manager.connect()
        task = manager.get_task_queue(worker, capacity)  # type: ignore[attr-defined]
        result = manager.get_result_queue(worker)  # type: ignore[attr-defined]
    except AuthenticationError:
        raise AuthenticationFailed(
            f"authentication failed: the authkey does not match the master's at {format_address(address)}"
        ) from None
    except CONNECTION_ERRORS as error:
        raise MasterUnreachable(f"cannot reach the master at {format_address(address)}: {error}") from None
    return task, result


def drop_thread_connection(proxy: Any) -> None:
    """Forget this thread's connection behind ``proxy``; the next call opens a fresh one.

    An interrupted call (Ctrl-C in ``get``) leaves its reply unread on the
    connection, and the next call on it would take that reply for its own.
    """
    local = proxy._tls
    stale = getattr(local, "connection", None)
    if stale is not None:
        del local.connection
        with contextlib.suppress(OSError):
            stale.close()
