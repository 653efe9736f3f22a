"""The master's live frontier: URLs ready to hand out, leased, or waiting to retry.

Shared by the manager's server threads (workers calling ``get``, ``put`` and
``renew`` through their proxies) and the master's loop, behind one lock.
Every URL handed out is leased to the worker that took it until a deadline;
a result ends the lease, a heartbeat extends it, and an expired lease puts
the URL back. Only URLs "in play" are kept in memory: the rest wait in the
crawl state on disk.

Ready URLs wait in one queue per host, taken round-robin, so one slow host
cannot hold up the others; a host may also be capped (URLs in flight at
once) and paced (seconds between two hand-outs), which only the master can
enforce since only it sees all workers.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .links import host_of
from .messages import Result, Task

__all__ = ["Frontier", "Lease", "ResultQueueView", "TaskQueueView"]

# Server threads never block longer than this, whatever a worker asks:
# a blocked thread whose worker died would otherwise hold a task hostage.
MAX_BLOCK_SECONDS = 1.0
POLITENESS_POLL_SECONDS = 0.02


class Lease(NamedTuple):
    worker: str
    deadline: float
    task: Task
    host: str


class _Host:
    """One host's ready URLs and politeness bookkeeping."""

    __slots__ = ("delay", "in_flight", "in_rotation", "next_time", "ready")

    def __init__(self, delay: float) -> None:
        self.ready: deque[int] = deque()
        self.in_flight = 0
        self.next_time = 0.0
        self.delay = delay
        self.in_rotation = False


class Frontier:
    """Tasks in play and their leases; thread-safe."""

    def __init__(
        self,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        per_host: int = 0,
        host_delay: float = 0.0,
    ) -> None:
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._per_host = per_host
        self._host_delay = host_delay
        self._paced = host_delay > 0  # some host has a delay between hand-outs
        self._changed = threading.Condition()
        self._in_play: dict[int, Task] = {}
        self._hosts: dict[str, _Host] = {}
        self._rotation: deque[str] = deque()  # hosts with ready URLs, each once
        self._ready_total = 0
        self.starved = False  # a get found ready URLs but every one held back by politeness
        self._delayed: list[tuple[float, int, str]] = []
        self._leases: dict[int, Lease] = {}
        self._inbox: list[Result] = []
        self._workers_seen: dict[str, float] = {}
        self._threads: dict[str, int] = {}  # download threads of each worker that connected
        self._workers_told_over: set[str] = set()
        self._closed = False
        self.over = False

    # --- called by the server threads, for one worker -------------------

    def connect(self, worker: str, threads: int) -> None:
        """Note a worker and its number of download threads."""
        with self._changed:
            self._threads[worker] = threads
            self._workers_seen[worker] = self._clock()

    def take(self, worker: str, limit: int, timeout: float, extra: int = 0) -> list[Task]:
        """Lease up to ``limit`` ready tasks to ``worker``, waiting up to ``timeout``.

        Up to ``extra`` more (a worker's prefetch, queued behind its busy
        threads) are leased only while plenty remain for every live worker
        and no host is capped or paced: at the end of a crawl, or on a
        polite crawl, a task must not wait in one worker while another has
        idle threads or while it holds a host's slot.
        """
        deadline = self._clock() + min(max(timeout, 0.0), MAX_BLOCK_SECONDS)
        with self._changed:
            self._workers_seen[worker] = self._clock()
            while not self._closed and not self.over:
                taken = self._lease_ready(worker, limit + self._prefetch_allowed(limit, extra))
                remaining = deadline - self._clock()
                if taken or remaining <= 0:
                    return taken
                # Held back by a host's pace: look again soon even if nothing changes.
                self._changed.wait(min(remaining, POLITENESS_POLL_SECONDS) if self._ready_total else remaining)
            return []

    def _prefetch_allowed(self, limit: int, extra: int) -> int:
        if not extra or self._per_host or self._paced:
            return 0
        since = self._clock() - self.lease_seconds
        live_threads = sum(self._threads.get(name, 1) for name, seen in self._workers_seen.items() if seen >= since)
        return extra if self._ready_total - limit - extra >= live_threads else 0

    def _lease_ready(self, worker: str, limit: int) -> list[Task]:
        taken: list[Task] = []
        now = self._clock()
        lease_deadline = now + self.lease_seconds
        held_back = 0
        rotation = self._rotation
        while rotation and len(taken) < limit and held_back < len(rotation):
            name = rotation[0]
            host = self._hosts[name]
            if not host.ready:
                rotation.popleft()
                host.in_rotation = False
                continue
            if (self._per_host and host.in_flight >= self._per_host) or host.next_time > now:
                rotation.rotate(-1)
                held_back += 1
                continue
            task_id = host.ready.popleft()
            self._ready_total -= 1
            task = self._in_play.get(task_id)
            if task is None or task_id in self._leases:
                continue  # finished by a late result while it waited
            self._leases[task_id] = Lease(worker, lease_deadline, task, name)
            host.in_flight += 1
            host.next_time = now + host.delay
            taken.append(task)
            held_back = 0
            rotation.rotate(-1)
        self.starved = not taken and self._ready_total > 0
        return taken

    def _host(self, name: str) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = _Host(self._host_delay)
        return host

    def _queue(self, task_id: int, name: str, front: bool = False) -> None:
        host = self._host(name)
        if front:
            host.ready.appendleft(task_id)
        else:
            host.ready.append(task_id)
        self._ready_total += 1
        if not host.in_rotation:
            host.in_rotation = True
            self._rotation.append(name)

    def _end_lease(self, task_id: int) -> Lease | None:
        lease = self._leases.pop(task_id, None)
        if lease is not None:
            self._hosts[lease.host].in_flight -= 1
        return lease

    def set_host_delay(self, name: str, delay: float) -> None:
        """Pace a host: at least ``delay`` seconds between two hand-outs (robots.txt Crawl-delay)."""
        with self._changed:
            host = self._host(name)
            host.delay = max(host.delay, delay)
            self._paced = self._paced or delay > 0

    def deliver(self, worker: str, results: list[Result]) -> None:
        """Accept results; a result for a URL no longer in play is a late duplicate."""
        with self._changed:
            self._workers_seen[worker] = self._clock()
            for result in results:
                if self._in_play.pop(result.id, None) is None:
                    continue
                self._end_lease(result.id)
                self._inbox.append(result)
            self._changed.notify_all()

    def renew(self, worker: str) -> int:
        """Extend every lease ``worker`` holds; return how many."""
        with self._changed:
            now = self._clock()
            self._workers_seen[worker] = now
            renewed = 0
            for task_id, lease in self._leases.items():
                if lease.worker == worker:
                    self._leases[task_id] = lease._replace(deadline=now + self.lease_seconds)
                    renewed += 1
            return renewed

    def release(self, worker: str) -> int:
        """Put back, without counting an attempt, every task ``worker`` holds."""
        with self._changed:
            held = [lease for lease in self._leases.values() if lease.worker == worker]
            for lease in held:
                self._end_lease(lease.task.id)
                self._queue(lease.task.id, lease.host, front=True)
            self._workers_seen.pop(worker, None)
            self._changed.notify_all()
            return len(held)

    def is_over_for(self, worker: str) -> bool:
        """Tell a worker whether it may stop: the crawl is over or the master is closing."""
        with self._changed:
            if self.over or self._closed:
                self._workers_told_over.add(worker)
                return True
            return False

    # --- called by the master loop ---------------------------------------

    def add(self, tasks: list[Task]) -> None:
        """Make tasks ready to hand out."""
        with self._changed:
            for task in tasks:
                self._in_play[task.id] = task
                self._queue(task.id, host_of(task.url))
            self._changed.notify_all()

    def retry_later(self, task: Task, delay: float) -> None:
        with self._changed:
            self._in_play[task.id] = task
            heapq.heappush(self._delayed, (self._clock() + delay, task.id, host_of(task.url)))

    def promote_due(self) -> None:
        """Move delayed tasks whose time has come to the ready queue."""
        with self._changed:
            now = self._clock()
            while self._delayed and self._delayed[0][0] <= now:
                _due, task_id, name = heapq.heappop(self._delayed)
                self._queue(task_id, name)
            self._changed.notify_all()

    def wait_for_results(self, timeout: float) -> None:
        """Block until a result arrives or ``timeout`` seconds pass."""
        with self._changed:
            if not self._inbox:
                self._changed.wait(timeout)

    def take_results(self) -> list[Result]:
        with self._changed:
            results, self._inbox = self._inbox, []
            return results

    def expire_leases(self) -> list[Lease]:
        """End overdue leases and return them; their tasks are no longer in play."""
        with self._changed:
            now = self._clock()
            expired = [lease for lease in self._leases.values() if lease.deadline <= now]
            for lease in expired:
                self._end_lease(lease.task.id)
                del self._in_play[lease.task.id]
            return expired

    def ready_count(self) -> int:
        with self._changed:
            return self._ready_total

    def in_play_count(self) -> int:
        with self._changed:
            return len(self._in_play) + len(self._inbox)

    def leased_count(self) -> int:
        with self._changed:
            return len(self._leases)

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
            since = self._clock() - active_within
            return [
                name
                for name, seen in self._workers_seen.items()
                if seen >= since and name not in self._workers_told_over
            ]


class TaskQueueView:
    """What a worker's ``get_task_queue`` proxy talks to: the task queue as that worker sees it.

    ``empty()`` is True only once the master says the crawl is over (nothing
    ready, leased or waiting to retry), so the seed design's
    ``while not task.empty()`` loop ends exactly when it should.
    """

    exposed = ("empty", "get", "renew", "release", "policy")

    def __init__(self, frontier: Frontier, policy: dict[str, object], worker: str, capacity: int) -> None:
        self._frontier = frontier
        self._policy = policy
        self._worker = worker
        self._capacity = max(1, capacity)
        frontier.connect(worker, self._capacity)

    def empty(self) -> bool:
        return self._frontier.is_over_for(self._worker)

    def get(
        self, block: bool = True, timeout: float | None = None, limit: int | None = None, extra: int = 0
    ) -> list[Task]:
        """Return a batch of leased tasks, or raise queue.Empty like queue.Queue.get.

        ``limit`` is what the worker's idle threads can start now, ``extra``
        what it would queue behind its busy ones (see :meth:`Frontier.take`).
        """
        wait = (MAX_BLOCK_SECONDS if timeout is None else timeout) if block else 0.0
        capacity = self._capacity
        tasks = self._frontier.take(self._worker, min(limit or capacity, capacity), wait, min(extra, capacity))
        if not tasks:
            raise queue.Empty
        return tasks

    def renew(self) -> int:
        return self._frontier.renew(self._worker)

    def release(self) -> int:
        return self._frontier.release(self._worker)

    def policy(self) -> dict[str, object]:
        return self._policy


class ResultQueueView:
    """What a worker's ``get_result_queue`` proxy talks to."""

    exposed = ("put",)

    def __init__(self, frontier: Frontier, worker: str) -> None:
        self._frontier = frontier
        self._worker = worker

    def put(self, results: list[Result]) -> None:
        self._frontier.deliver(self._worker, results)
