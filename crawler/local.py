"""Worker processes on this machine: how many, and how they start fast.

How many: a download thread costs little while it waits on the network,
but every thread of a process shares one interpreter lock, and past 32 or
so threads a process spends more CPU handing the lock around than
downloading (measured in bench/RESULTS.md). So ``-t`` downloads at once
are split by :func:`split_downloads` over enough processes to keep each at
32 threads or fewer, at least one per core for ``run``, and at most four
per core, where memory and context switches start to cost more than the
lock saved.

How they start: a worker's cost at start-up is its imports (requests alone
is a tenth of a second), not its work. One process, the *zygote*, is forked
first, while this process has no thread, socket or database yet; it
imports the worker's modules on another core while the master opens the
crawl, then waits on a pipe. The master writes where it serves; the zygote
forks every worker from its imported self (the imports are paid once, not
once per worker) and waits for them. A zygote that reads the end of the
pipe instead (the master could not open the crawl, or died) exits at once,
so no worker ever joins a crawl that is not its master's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .broker.redis_conn import BrokerSpec
from .errors import EXIT_CANNOT_RUN, EXIT_INTERRUPTED, CrawlerError

__all__ = ["LocalWorkers", "WorkerSetup", "split_downloads"]

THREADS_PER_PROCESS = 32
PROCESSES_PER_CORE = 4
STOP_SECONDS = 10.0


def split_downloads(downloads: int, processes: int | None = None, at_least: int = 1) -> list[int]:
    """Download threads per worker process for ``downloads`` at once: one number per process.

    ``processes`` forces the count (``run -w``); each process runs at least
    one thread. Otherwise: one process per 32 downloads, at least
    ``at_least`` (``run`` asks for one per core) and at most four per core.
    """
    if processes is None:
        cores = os.cpu_count() or 1
        wanted = min(math.ceil(downloads / THREADS_PER_PROCESS), PROCESSES_PER_CORE * cores)
        processes = max(min(at_least, downloads), wanted, 1)
    base, extra = divmod(max(downloads, processes), processes)
    return [base + 1 if index < extra else base for index in range(processes)]


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
    """What every local worker shares: where to write, how to reach the master, how to log."""

    output: Path
    authkey: bytes
    spec: BrokerSpec | None
    connect_seconds: float
    setup_logging: Callable[[], None]


class LocalWorkers:
    """One worker process per entry of ``threads``, forked (through the zygote) by :meth:`start`."""

    def __init__(self, threads: list[int], setup: WorkerSetup) -> None:
        self.count = len(threads)
        # Whatever sits in this process's buffers would otherwise be written again by every child.
        sys.stdout.flush()
        sys.stderr.flush()
        go_read, self._go = os.pipe()
        self._pids_read, pids_write = os.pipe()
        self._zygote = os.fork()
        if self._zygote == 0:
            os.close(self._go)
            os.close(self._pids_read)
            os._exit(_as_child(functools.partial(_zygote_main, go_read, pids_write, threads, setup)))
        os.close(go_read)
        os.close(pids_write)
        self.status: int | None = None
        self._workers: list[int] | None = None

    def start(self, address: str) -> None:
        """Tell the zygote where the master serves (for the manager; Redis needs no address)."""
        with contextlib.suppress(OSError):  # a zygote that died already is seen by check()
            os.write(self._go, address.encode() + b"\n")
        self._close_go()

    def poll(self) -> int | None:
        """The zygote's exit status once every worker has exited, else None."""
        if self.status is None:
            pid, wait_status = os.waitpid(self._zygote, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(wait_status)
        return self.status

    def check(self) -> None:
        """Raise CrawlerError once every worker has exited (the crawl cannot go on without one)."""
        if self.poll() is not None:
            raise CrawlerError(f"all {self.count} workers exited before the crawl ended (status {self.status})")

    def wait(self) -> int:
        """Wait for every worker to exit; return the first failing status, or 0."""
        if self.status is None:
            # Blocking: a signal's handler still runs (waitpid is retried), and Ctrl-C still raises.
            self.status = os.waitstatus_to_exitcode(os.waitpid(self._zygote, 0)[1])
        return self.status

    def stop(self) -> None:
        """Let the workers exit by themselves for a while (they hear the crawl is over), then kill them."""
        self._close_go()  # never started: the zygote hears there is nothing to do
        deadline = time.monotonic() + STOP_SECONDS
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.poll() is None:
            for pid in self._worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._zygote, signal.SIGKILL)
            os.waitpid(self._zygote, 0)
            self.status = -signal.SIGKILL

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to every worker."""
        for pid in self._worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _close_go(self) -> None:
        if self._go != -1:
            os.close(self._go)
            self._go = -1

    def _worker_pids(self) -> list[int]:
        """The pids the zygote reported after forking (none if it never got that far)."""
        if self._workers is None:
            self._workers = []
            if select.select([self._pids_read], [], [], 1.0)[0]:
                with os.fdopen(self._pids_read, "rb") as pipe:
                    self._workers = [int(pid) for pid in pipe.readline().split()]
                self._pids_read = -1
        return self._workers


def _as_child(body: Callable[[], int]) -> int:
    """Run a forked process's body; whatever happens, return an exit status and flush the output."""
    try:
        return body()
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


def _zygote_main(go: int, pids: int, threads: list[int], setup: WorkerSetup) -> int:
    """Import, wait for the word, fork the workers and wait for them; return the first failing status."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    setup.setup_logging()
    _import_worker(setup.spec)
    with os.fdopen(go, "rb") as pipe:
        address = pipe.readline().decode().strip()
    if not address:
        return EXIT_CANNOT_RUN  # the master did not open the crawl; it says why
    children = []
    for count in threads:
        child = os.fork()
        if child == 0:
            os.close(pids)
            os._exit(_as_child(functools.partial(_worker_main, address, count, setup)))
        children.append(child)
    os.write(pids, " ".join(map(str, children)).encode() + b"\n")
    os.close(pids)
    # Ctrl-C reaches every process of the terminal's group (and a service manager's SIGTERM
    # every process of the unit): the workers hand back their URLs and exit, and the zygote
    # must outlive them to tell how they ended.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    codes = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in children]
    return next((128 - code if code < 0 else code for code in codes if code), 0)


def _import_worker(spec: BrokerSpec | None) -> None:
    """Everything a worker imports, loaded once here so that every fork of the zygote has it."""
    from . import worker  # noqa: F401

    if spec is not None:
        from .broker import redis_broker  # noqa: F401
    else:
        from .broker import manager, transport  # noqa: F401


def _worker_main(address: str, threads: int, setup: WorkerSetup) -> int:
    """The body of one forked worker: run until the crawl is over; return the exit status."""
    from .broker import Connector
    from .worker import Worker, WorkerConfig

    connector: Connector
    if setup.spec is not None:
        from .broker.redis_broker import RedisConnector

        connector = RedisConnector(setup.spec)
    else:
        from .broker.manager import ManagerConnector
        from .broker.transport import parse_address

        connector = ManagerConnector(parse_address(address), setup.authkey)
    config = WorkerConfig(output=setup.output, threads=threads, connect_seconds=setup.connect_seconds)
    return Worker(config, connector).run()
