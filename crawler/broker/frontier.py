"""The in-memory frontier: URLs ready to hand out, leased, or waiting to retry.

The window of URLs in play that the manager broker serves, shared by the
manager's server threads (workers calling ``get``, ``put`` and ``renew``
through their proxies) and the master's loop, behind one lock. Every URL
handed out is leased to the worker that took it until a deadline; a result
ends the lease, a heartbeat extends it, and an expired lease puts the URL
back. Only URLs in play are kept here: the rest wait in the crawl state on
disk. The task stays with its lease, so a result comes back to the master
paired with the task it answers.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from ..links import host_of
from ..messages import Result, Task
from . import BrokerStatus, Delivery, Lease, WindowCounts, WorkerRow
from .hosts import HostQueues
from .leases import Leases
from .workers import WorkerRegistry

__all__ = ["MAX_BLOCK_SECONDS", "Frontier"]

# Server threads never block longer than this, whatever a worker asks:
# a blocked thread whose worker died would otherwise hold a task hostage.
MAX_BLOCK_SECONDS = 1.0
POLITENESS_POLL_SECONDS = 0.02


class Frontier:
    """Tasks in play and their leases; thread-safe."""

    def __init__(
        self,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        per_host: int = 0,
        host_delay: float = 0.0,
        max_block: float = MAX_BLOCK_SECONDS,
    ) -> None:
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._max_block = max_block
        self._changed = threading.Condition()
        self._in_play: dict[int, Task] = {}
        self._hosts = HostQueues(per_host, host_delay)
        self._workers = WorkerRegistry()
        self._starved = False  # the last get found ready URLs but politeness held every one back
        self._leases = Leases()
        self._inbox: list[Delivery] = []
        self._closed = False
        self.over = False

    # --- called by the server threads, for one worker -------------------

    def connect(self, worker: str, threads: int) -> None:
        """Note a worker and its number of download threads."""
        with self._changed:
            self._workers.connect(worker, threads, self._clock())

    def take(self, worker: str, limit: int, timeout: float, extra: int = 0) -> list[Task]:
        """Lease up to ``limit`` ready tasks to ``worker``, waiting up to ``timeout``.

        Up to ``extra`` more (a worker's prefetch, queued behind its busy
        threads) are leased only while plenty remain for every live worker
        and no host is capped or paced: at the end of a crawl, or on a
        polite crawl, a task must not wait in one worker while another has
        idle threads or while it holds a host's slot.
        """
        deadline = self._clock() + min(max(timeout, 0.0), self._max_block)
        with self._changed:
            self._workers.heard(worker, self._clock())
            while not self._closed and not self.over and not self._workers.is_gone(worker):
                taken = self._lease_ready(worker, limit + self._prefetch_allowed(limit, extra))
                remaining = deadline - self._clock()
                if taken or remaining <= 0:
                    return taken
                # Held back by a host's pace: look again soon even if nothing changes.
                ready = self._hosts.ready_total
                self._changed.wait(min(remaining, POLITENESS_POLL_SECONDS) if ready else remaining)
            return []

    def _prefetch_allowed(self, limit: int, extra: int) -> int:
        if not extra or self._hosts.polite:
            return 0
        live_threads = self._workers.live_threads(since=self._clock() - self.lease_seconds)
        return extra if self._hosts.ready_total - limit - extra >= live_threads else 0

    def _lease_ready(self, worker: str, limit: int) -> list[Task]:
        now = self._clock()
        taken = self._hosts.take(limit, now, self._is_waiting)
        deadline = now + self.lease_seconds
        tasks = []
        for task_id, host in taken:
            task = self._in_play[task_id]
            self._leases[task_id] = Lease(worker, deadline, task, host, now)
            tasks.append(task)
        self._starved = not tasks and self._hosts.ready_total > 0
        return tasks

    def _is_waiting(self, task_id: int) -> bool:
        """Still in play and not leased: not finished by a late result while it waited."""
        return task_id in self._in_play and task_id not in self._leases

    def _end_lease(self, task_id: int) -> Lease | None:
        lease = self._leases.pop(task_id, None)
        if lease is not None:
            self._hosts.done(lease.host)
        return lease

    def deliver(self, worker: str, results: list[Result]) -> None:
        """Accept results; a result for a URL no longer in play is a late duplicate."""
        with self._changed:
            self._workers.heard(worker, self._clock())
            self._workers.delivered(worker, len(results))
            for result in results:
                task = self._in_play.pop(result.id, None)
                if task is None:
                    continue
                self._end_lease(result.id)
                self._inbox.append(Delivery(task, result))
            self._changed.notify_all()

    def renew(self, worker: str, task_ids: list[int]) -> int:
        """Extend the leases of ``task_ids`` that ``worker`` holds; return how many."""
        with self._changed:
            now = self._clock()
            self._workers.heard(worker, now)
            return self._leases.renew(worker, task_ids, now + self.lease_seconds)

    def release(self, worker: str, leaving: bool = True) -> int:
        """Put back, without counting an attempt, every task ``worker`` holds.

        A worker ``leaving`` is given nothing more; one that only paused
        (its disk is short of space) asks again later.
        """
        with self._changed:
            held = self._leases.held_by(worker)
            for lease in held:
                self._end_lease(lease.task.id)
                self._hosts.push(lease.task.id, lease.host, front=True)
            if leaving:
                self._workers.leave(worker)
            self._changed.notify_all()
            return len(held)

    def is_over_for(self, worker: str) -> bool:
        """Tell a worker whether it may stop: the crawl is over or the master is closing."""
        with self._changed:
            if self.over or self._closed:
                self._workers.told_over(worker)
                return True
            return False

    # --- called by the master loop ---------------------------------------

    def add(self, tasks: list[Task]) -> None:
        """Make tasks ready to hand out."""
        with self._changed:
            for task in tasks:
                self._in_play[task.id] = task
                self._hosts.push(task.id, host_of(task.url))
            self._changed.notify_all()

    def retry_later(self, task: Task, delay: float) -> None:
        with self._changed:
            self._in_play[task.id] = task
            self._hosts.push_later(task.id, host_of(task.url), self._clock() + delay)

    def set_host_delay(self, host: str, delay: float) -> None:
        """Pace a host: at least ``delay`` seconds between two hand-outs (robots.txt Crawl-delay)."""
        with self._changed:
            self._hosts.set_delay(host, delay)

    def promote_due(self) -> None:
        """Move delayed tasks whose time has come to the ready queue."""
        with self._changed:
            self._hosts.promote(self._clock())
            self._changed.notify_all()

    def wait_for_results(self, timeout: float) -> None:
        """Block until a result arrives or ``timeout`` seconds pass."""
        with self._changed:
            if not self._inbox:
                self._changed.wait(timeout)

    # Every call takes the whole inbox.
    drained = True

    def take_results(self) -> list[Delivery]:
        """Return the results delivered since the last call, each with the task it answers."""
        with self._changed:
            deliveries, self._inbox = self._inbox, []
            return deliveries

    def acknowledge(self) -> None:
        """Nothing to do: results taken are gone from here already."""

    def expire_leases(self) -> list[Lease]:
        """End overdue leases and return them; their tasks are no longer in play."""
        with self._changed:
            expired = self._leases.overdue(self._clock())
            for lease in expired:
                self._end_lease(lease.task.id)
                del self._in_play[lease.task.id]
            return expired

    def counts(self) -> WindowCounts:
        with self._changed:
            in_play = len(self._in_play) + len(self._inbox)
            return WindowCounts(self._hosts.ready_total, in_play, len(self._leases), self._starved)

    def status(self) -> BrokerStatus:
        with self._changed:
            now = self._clock()
            held = collections.Counter(lease.worker for lease in self._leases.values())
            workers = [
                WorkerRow(name, threads, held[name], done, idle)
                for name, threads, done, idle in self._workers.rows(now)
            ]
            oldest = min((lease.granted for lease in self._leases.values()), default=None)
            return BrokerStatus(
                workers,
                self._hosts.waiting_count,
                self._hosts.rotation_size,
                self._hosts.busiest(10),
                None if oldest is None else now - oldest,
            )

    def finish(self) -> None:
        """Declare the crawl over: workers asking are told to stop."""
        with self._changed:
            self.over = True
            self._changed.notify_all()

    def close(self) -> None:
        """Stop handing out work (the master is shutting down)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def workers_not_told(self, active_within: float) -> list[str]:
        """Workers seen in the last ``active_within`` seconds that have not been told to stop."""
        with self._changed:
            return self._workers.not_told(since=self._clock() - active_within)
