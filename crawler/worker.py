"""A worker: drain the master's task queue, download, report what was saved.

The seed design's loop, made correct::

    while not task.empty():          # True only once the master says the crawl is over
        batch = task.get(True, timeout)   # leased to this worker; raises queue.Empty
        ... download each URL, put Result(path, ...) on the result queue

Downloads run on ``threads`` threads, one ``requests.Session`` each. A sender
thread delivers results in batches and renews this worker's leases (the
heartbeat), so a slow download is not handed to someone else. When the
master goes away the worker reconnects with backoff for a bounded time;
results it could not deliver wait for the new connection.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import queue
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .broker import Connector, WorkerLink
from .errors import ConnectionLost, MasterUnreachable, OutputError
from .fetch import fetch, make_session
from .messages import Outcome, Policy, Result, Task
from .shards import ShardBook, clear_stale_staging, is_sample, staging_folder
from .storage import OutputFolder, check_output_folder, free_bytes
from .transfer import Watchdog

__all__ = ["Worker", "WorkerConfig"]

logger = logging.getLogger(__name__)

# How long one get may block: also how soon a busy worker hears that the crawl is over.
GET_TIMEOUT = 1.0
# Results wait at most this long to be sent, so one round trip carries many at full speed.
SEND_EVERY_SECONDS = 0.01
SEND_BATCH = 256
RECONNECT_BACKOFF_MAX = 5.0
# After the end, or Ctrl-C: how long downloads already started may take to be reported.
FINISH_SECONDS = 3.0
# Short of space: how often to look again, and how long to wait before giving up (exit 2).
SPACE_POLL_SECONDS = 1.0
SPACE_WAIT_SECONDS = 600.0
# Nothing in hand and nothing from the master for this long: close the shard (the crawl may be ending).
SHARD_IDLE_SECONDS = 0.25


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What a worker needs besides its way to the master: where to write, how many threads."""

    output: Path
    threads: int = 16
    connect_seconds: float = 60.0
    """How long to keep trying to reach the master, at start and after losing it."""
    name: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


class _TaskQueue:
    """The master's task queue as this worker's loop uses it: the link, minus a round trip.

    Right after a ``get`` that returned tasks the crawl cannot be over (those
    tasks are in play until their results arrive), so ``empty()`` answers
    False without asking. The shortcut ends when a ``get`` comes back empty,
    and after ``GET_TIMEOUT`` anyway: a worker busy for longer asks again,
    in case its leases expired meanwhile.
    """

    def __init__(self, link: WorkerLink) -> None:
        self._link = link
        self._last_batch_at = -GET_TIMEOUT

    def empty(self) -> bool:
        if time.monotonic() - self._last_batch_at < GET_TIMEOUT:
            return False
        return self._link.empty()

    def get(self, block: bool, timeout: float, limit: int, extra: int) -> list[Task]:
        try:
            batch = self._link.get(block, timeout, limit, extra)
        except queue.Empty:
            self._last_batch_at = -GET_TIMEOUT  # nothing came: the next empty() asks the master
            raise
        self._last_batch_at = time.monotonic()
        return batch


class _Slots:
    """The tasks a worker holds: one per download thread, and as many again queued."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._used = 0
        # A Counter: an expired lease can bring a task back to the worker still downloading it.
        self._held: collections.Counter[int] = collections.Counter()
        self._changed = threading.Condition()
        self.empty_since: float | None = None
        """Since when the worker holds no task (None: it holds some, or never had any)."""

    def wait_for_idle(self, timeout: float) -> tuple[int, int]:
        """Wait up to ``timeout`` for an idle thread; return (idle threads, room to queue), or (0, 0).

        Asking only when a thread is idle, and for a queue's worth more,
        keeps one round trip to the master per batch of URLs rather than
        per URL; the master grants the queued part only while work is
        plentiful (see Frontier.take).
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._used < self._threads, timeout):
                return 0, 0
            idle = self._threads - self._used
            return idle, self._threads

    def take(self, tasks: list[Task]) -> None:
        with self._changed:
            if tasks:
                self.empty_since = None
            self._used += len(tasks)
            self._held.update(task.id for task in tasks)

    def give_back(self, task: Task) -> None:
        with self._changed:
            self._used -= 1
            self._held[task.id] -= 1
            if self._held[task.id] <= 0:
                del self._held[task.id]
            if not self._used:
                self.empty_since = time.monotonic()
            if self._used < self._threads:  # above, the tasks queued keep every thread busy: no one to wake
                self._changed.notify()

    def held(self) -> list[int]:
        """The ids of the tasks held: what the heartbeat renews."""
        with self._changed:
            return list(self._held)

    def in_use(self) -> int:
        with self._changed:
            return self._used


class Worker:
    """One worker process: a task loop, download threads, a sender thread."""

    def __init__(self, config: WorkerConfig, connector: Connector) -> None:
        self.config = config
        self._connector = connector
        check_output_folder(config.output)
        self._downloads: queue.Queue[Task | None] = queue.Queue()
        # A deque, not a Queue: a download thread adds its result without waking the sender,
        # which looks every SEND_EVERY_SECONDS (one wake-up per batch instead of one per URL).
        self._results: collections.deque[Result] = collections.deque()
        self._slots = _Slots(config.threads)
        self._output = OutputFolder(config.output)
        # --output-format webdataset: files are saved in a staging folder, then put into shards.
        self._shards: ShardBook | None = None
        self._shard_batches: collections.deque[list[Result]] = collections.deque()
        """Results of closed shards, each sent whole, in one delivery."""
        self._stopping = threading.Event()
        self._link: WorkerLink | None = None
        self._watchdog: Watchdog | None = None
        self.policy = Policy()

    def run(self) -> int:
        """Work until the master says the crawl is over; return 0, or raise CrawlerError."""
        link = self._connect()
        try:
            self.policy = link.policy()
        except ConnectionLost as error:
            raise MasterUnreachable(str(error)) from None
        staging = None
        if self.policy.output_format == "webdataset":
            clear_stale_staging(self.config.output)
            staging = staging_folder(self.config.output, self.config.name)
            self._output = OutputFolder(staging)
            self._shards = ShardBook(self.config.output, self.policy)
        logger.info(
            "worker %s: connected to %s with %d threads", self.config.name, self._connector.where, self.config.threads
        )
        threads = [
            threading.Thread(target=self._download_loop, daemon=True, name=f"download-{index}")
            for index in range(self.config.threads)
        ]
        threads.append(threading.Thread(target=self._send_loop, daemon=True, name="sender"))
        self._watchdog = Watchdog()
        for thread in threads:
            thread.start()
        try:
            self._work()
            self._finish_in_hand()
        except KeyboardInterrupt:
            self._give_back()
            return 130
        finally:
            self._stopping.set()
            for _download_thread in threads[:-1]:
                self._downloads.put(None)  # idle download threads end now; busy ones after their URL
            self._watchdog.close()
            threads[-1].join(FINISH_SECONDS)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        return 0

    def _finish_in_hand(self) -> None:
        """Let downloads already started end and be reported, for a bounded time.

        When the crawl is over nothing should be in hand; when the master is
        shutting down it still wants the results of the work in flight.
        """
        deadline = time.monotonic() + FINISH_SECONDS
        while self._slots.in_use() and time.monotonic() < deadline:
            time.sleep(SEND_EVERY_SECONDS)
        if self._shards is not None:
            self._queue_shard(self._shards.close())
        while self._in_hand() and time.monotonic() < deadline:
            time.sleep(SEND_EVERY_SECONDS)

    def _in_hand(self) -> bool:
        return bool(self._slots.in_use() or self._results or self._shard_batches)

    def _work(self) -> None:
        while True:
            link = self._link or self._connect()
            try:
                self._drain(link)
                return
            except ConnectionLost as error:
                logger.warning("worker %s: %s; reconnecting", self.config.name, error)
                self._link = None

    def _drain(self, link: WorkerLink) -> None:
        """The seed design's loop: get a batch, hand it to the download threads."""
        task = _TaskQueue(link)
        while not task.empty():
            if self._short_of_space():
                self._wait_for_space(link)
                continue
            # Bounded: a worker busy with long downloads must still hear that the crawl is over.
            idle, extra = self._slots.wait_for_idle(GET_TIMEOUT)
            if not idle:
                continue
            try:
                batch = task.get(True, GET_TIMEOUT, idle, extra)
            except queue.Empty:
                continue
            self._slots.take(batch)
            for item in batch:
                self._downloads.put(item)

    def _short_of_space(self) -> bool:
        floor = self.policy.min_free
        return bool(floor) and free_bytes(self.config.output) < floor

    def _wait_for_space(self, link: WorkerLink) -> None:
        """Below --min-free: hand every URL back, take none, and wait for space (or the end of the crawl).

        Downloads already started finish; if the master gave their URLs to
        another worker meanwhile, the first result it gets is the one kept.
        """
        dropped = self._drop_queued()
        returned = link.release_all(leaving=False)
        logger.warning(
            "worker %s: only %d bytes free in %s (below --min-free, %d bytes); gave %d URLs back, waiting for space",
            self.config.name,
            free_bytes(self.config.output),
            self.config.output,
            self.policy.min_free,
            max(returned, dropped),
        )
        deadline = time.monotonic() + SPACE_WAIT_SECONDS
        while self._short_of_space():
            if link.empty():
                return  # the crawl ended without us: nothing to wait for
            if time.monotonic() > deadline:
                raise OutputError(
                    f"output folder {self.config.output} stayed below --min-free "
                    f"({self.policy.min_free} bytes) for {SPACE_WAIT_SECONDS:g} s"
                )
            time.sleep(SPACE_POLL_SECONDS)
        logger.warning("worker %s: space is back in %s; taking URLs again", self.config.name, self.config.output)

    def _drop_queued(self) -> int:
        """Forget the tasks queued behind busy threads (they were handed back); free their slots."""
        dropped = 0
        while True:
            try:
                task = self._downloads.get_nowait()
            except queue.Empty:
                return dropped
            if task is None:  # a stop signal, not a task: keep it for a download thread
                self._downloads.put(None)
                return dropped
            dropped += 1
            self._slots.give_back(task)

    def _download_loop(self) -> None:
        # The session is made with the thread's first task: a thread that never gets one (a short
        # crawl, -t above what the crawl needs) costs no session, and the worker starts sooner.
        session = None
        try:
            while not self._stopping.is_set():
                task = self._downloads.get()
                if task is None:
                    return
                try:
                    session = session or make_session(self.policy)
                    self._keep(task, self.download(session, task))
                finally:
                    self._slots.give_back(task)
        finally:
            if session is not None:
                session.close()

    def _keep(self, task: Task, result: Result) -> None:
        """Queue a result to send; a sample goes into the open shard instead, until the shard closes."""
        if self._shards is None or not is_sample(result):
            self._results.append(result)
            return
        assert result.path is not None
        self._queue_shard(self._shards.add(task, result, self._output.root / result.path))

    def _queue_shard(self, results: list[Result] | None) -> None:
        if results:
            self._shard_batches.append(results)

    def _idle(self) -> bool:
        """Nothing in hand for a while (the master had nothing to give): time to close the shard."""
        since = self._slots.empty_since
        return since is not None and time.monotonic() - since >= SHARD_IDLE_SECONDS

    def download(self, session: Any, task: Task) -> Result:
        """Fetch one task; whatever happens, return its result.

        fetch itself turns every error into a result; this is the last line,
        so that no download thread can die and leave a lease renewed for ever.
        """
        try:
            return fetch(session, task, self.policy, self._output, self.config.name, self._watchdog)
        except Exception as error:
            logger.exception("worker %s: download of %s raised", self.config.name, task.url)
            reason = f"unexpected error: {type(error).__name__}: {error}"[:300]
            return Result(task.id, task.url, Outcome.FAILED, error=reason, worker=self.config.name)

    def _send_loop(self) -> None:
        """Deliver results in batches and renew leases; survive reconnects."""
        pending: list[Result] = []
        last_renewal = time.monotonic()
        while not self._stopping.is_set() or pending or self._shard_batches:
            pending.extend(self._next_results())
            if self._shards is not None:
                self._queue_shard(self._shards.close_if_due(self._idle()))
            link = self._link
            if link is None:
                if self._stopping.is_set():
                    return
                time.sleep(SEND_EVERY_SECONDS)
                continue
            try:
                if pending:
                    link.put(pending)
                    pending = []
                while self._shard_batches:
                    link.put(self._shard_batches[0])  # a shard's results travel whole (see crawler.shards)
                    self._shard_batches.popleft()
                if time.monotonic() - last_renewal > self.policy.lease_seconds / 3:
                    link.renew(self._held())
                    last_renewal = time.monotonic()
            except ConnectionLost:
                if self._stopping.is_set():
                    return
                time.sleep(SEND_EVERY_SECONDS)
            except Exception:  # the sender must outlive anything, or every lease expires unseen
                logger.exception(
                    "worker %s: could not deliver %d results; trying again", self.config.name, len(pending)
                )
                time.sleep(SEND_EVERY_SECONDS)

    def _held(self) -> list[int]:
        """The tasks whose leases the heartbeat renews: in the download threads, and waiting in shards."""
        held = self._slots.held()
        if self._shards is not None:
            held += self._shards.held_ids()
            held += [result.id for batch in list(self._shard_batches) for result in batch]
        return held

    def _next_results(self) -> list[Result]:
        if not self._results:
            time.sleep(SEND_EVERY_SECONDS)
        batch: list[Result] = []
        with contextlib.suppress(IndexError):
            while len(batch) < SEND_BATCH:
                batch.append(self._results.popleft())
        return batch

    def _connect(self) -> WorkerLink:
        """Connect, retrying with backoff for ``connect_seconds``."""
        deadline = time.monotonic() + self.config.connect_seconds
        delay = 0.05
        while True:
            try:
                self._link = self._connector(self.config.name, self.config.threads)
                return self._link
            except MasterUnreachable as error:
                if time.monotonic() + delay > deadline:
                    raise MasterUnreachable(
                        f"no master at {self._connector.where} after {self.config.connect_seconds:g} s: {error}"
                    ) from None
                logger.debug("worker %s: no master at %s yet", self.config.name, self._connector.where)
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_BACKOFF_MAX)

    def _give_back(self) -> None:
        """On Ctrl-C, hand this worker's leases back so others take them now."""
        if self._shards is not None:
            self._shards.abandon()  # its samples' leases go back with the others
        link = self._link
        if link is None:
            return
        try:
            returned = link.release_all()
            logger.warning("worker %s: interrupted; gave %d URLs back to the master", self.config.name, returned)
        except ConnectionLost as error:
            logger.warning("worker %s: interrupted; could not give URLs back (%s)", self.config.name, error)
