"""The worker processes of ``crawler run``: forked at once, started when the master serves.

A worker's cost at start-up is its imports (requests alone is a tenth of a
second), not its work; a fresh interpreter started once the master is ready
pays them after the master's own, one after the other. Here each worker is
forked before the master opens the crawl, while this process has no thread,
socket or database yet: it imports the worker's modules on another core
while the master opens the crawl, then waits on a pipe. The master writes
where it serves; a worker that reads the end of the pipe instead (the master
could not open the crawl, or died) exits at once, so no worker ever joins a
crawl that is not its master's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .broker.redis_conn import BrokerSpec
from .errors import EXIT_CANNOT_RUN, EXIT_INTERRUPTED, CrawlerError

__all__ = ["LocalWorkers"]

CONNECT_SECONDS = 10.0
"""How long a local worker keeps trying to reach its master (it is on this machine)."""
STOP_SECONDS = 10.0


class _Child:
    """One forked worker: its pid, the pipe it waits on, and its exit status once reaped."""

    def __init__(self, pid: int, go: int) -> None:
        self.pid = pid
        self.go = go
        self.status: int | None = None

    def poll(self) -> int | None:
        if self.status is None:
            pid, wait_status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(wait_status)
        return self.status


class LocalWorkers:
    """``count`` worker processes on this machine, forked now and started by :meth:`start`."""

    def __init__(
        self,
        count: int,
        output: Path,
        threads: int,
        authkey: bytes,
        spec: BrokerSpec | None,
        setup_logging: Callable[[], None],
    ) -> None:
        self._children: list[_Child] = []
        # Whatever sits in this process's buffers would otherwise be written again by every child.
        sys.stdout.flush()
        sys.stderr.flush()
        for _ in range(count):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(write_end)
                os._exit(_worker_main(read_end, output, threads, authkey, spec, setup_logging))
            os.close(read_end)
            self._children.append(_Child(pid, write_end))

    def start(self, address: str) -> None:
        """Tell every worker where the master serves (for the manager; Redis needs no address)."""
        for child in self._children:
            with contextlib.suppress(OSError):  # one that died already is seen by check()
                os.write(child.go, address.encode() + b"\n")
            os.close(child.go)
            child.go = -1

    def check(self) -> None:
        """Raise CrawlerError once every worker has exited (the crawl cannot go on without one)."""
        codes = [child.poll() for child in self._children]
        if all(code is not None for code in codes):
            raise CrawlerError(f"all {len(codes)} workers exited before the crawl ended (status {codes[0]})")

    def stop(self) -> None:
        """Let each worker exit by itself for a while (it hears the crawl is over), then kill it."""
        for child in self._children:
            if child.go != -1:  # never started: tell it there is nothing to do
                os.close(child.go)
                child.go = -1
        deadline = time.monotonic() + STOP_SECONDS
        for child in self._children:
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)
                child.status = -signal.SIGKILL


def _worker_main(
    go: int, output: Path, threads: int, authkey: bytes, spec: BrokerSpec | None, setup_logging: Callable[[], None]
) -> int:
    """The body of a forked worker: import, wait for the word, run; return the exit status."""
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        setup_logging()
        from .broker import Connector
        from .worker import Worker, WorkerConfig

        connector: Connector
        if spec is not None:
            from .broker.redis_broker import RedisConnector

            connector = RedisConnector(spec)
        else:
            from .broker.manager import ManagerConnector
            from .broker.transport import parse_address

        with os.fdopen(go, "rb") as pipe:
            address = pipe.readline().decode().strip()
        if not address:
            return EXIT_CANNOT_RUN  # the master did not open the crawl; it says why
        if spec is None:
            connector = ManagerConnector(parse_address(address), authkey)
        config = WorkerConfig(output=output, threads=threads, connect_seconds=CONNECT_SECONDS)
        return Worker(config, connector).run()
    except CrawlerError as error:
        print(f"crawler: error: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException:  # a forked child must never return into the parent's code
        logging.getLogger("crawler").exception("worker: unexpected error")
        return EXIT_CANNOT_RUN
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
