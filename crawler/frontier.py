"""The master's live frontier: URLs ready to hand out, leased, or waiting to retry.

Shared by the manager's server threads (workers calling ``get``, ``put`` and
``renew`` through their proxies) and the master's loop, behind one lock.
Every URL handed out is leased to the worker that took it until a deadline;
a result ends the lease, a heartbeat extends it, and an expired lease puts
the URL back. Only URLs "in play" are kept in memory: the rest wait in the
crawl state on disk.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .messages import Result, Task

__all__ = ["Frontier", "Lease", "ResultQueueView", "TaskQueueView"]

# Server threads never block longer than this, whatever a worker asks:
# a blocked thread whose worker died would otherwise hold a task hostage.
MAX_BLOCK_SECONDS = 1.0


class Lease(NamedTuple):
    worker: str
    deadline: float
    task: Task


class Frontier:
    """Tasks in play and their leases; thread-safe."""

    def __init__(self, lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._changed = threading.Condition()
        self._in_play: dict[int, Task] = {}
        self._ready: deque[int] = deque()
        self._delayed: list[tuple[float, int]] = []
        self._leases: dict[int, Lease] = {}
        self._inbox: list[Result] = []
        self._workers_seen: dict[str, float] = {}
        self._workers_told_over: set[str] = set()
        self._closed = False
        self.over = False

    # --- called by the server threads, for one worker -------------------

    def take(self, worker: str, limit: int, timeout: float) -> list[Task]:
        """Lease up to ``limit`` ready tasks to ``worker``, waiting up to ``timeout``."""
        deadline = self._clock() + min(max(timeout, 0.0), MAX_BLOCK_SECONDS)
        with self._changed:
            self._workers_seen[worker] = self._clock()
            while not self._ready and not self._closed and not self.over:
                remaining = deadline - self._clock()
                if remaining <= 0 or not self._changed.wait(remaining):
                    break
            return self._lease_ready(worker, limit) if not self._closed else []

    def _lease_ready(self, worker: str, limit: int) -> list[Task]:
        taken: list[Task] = []
        lease_deadline = self._clock() + self.lease_seconds
        while self._ready and len(taken) < limit:
            task = self._in_play.get(self._ready.popleft())
            if task is None or task.id in self._leases:
                continue  # finished by a late result while it waited
            self._leases[task.id] = Lease(worker, lease_deadline, task)
            taken.append(task)
        return taken

    def deliver(self, worker: str, results: list[Result]) -> None:
        """Accept results; a result for a URL no longer in play is a late duplicate."""
        with self._changed:
            self._workers_seen[worker] = self._clock()
            for result in results:
                if self._in_play.pop(result.id, None) is None:
                    continue
                self._leases.pop(result.id, None)
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
            held = [task_id for task_id, lease in self._leases.items() if lease.worker == worker]
            for task_id in held:
                del self._leases[task_id]
                self._ready.appendleft(task_id)
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
                self._ready.append(task.id)
            self._changed.notify_all()

    def retry_later(self, task: Task, delay: float) -> None:
        with self._changed:
            self._in_play[task.id] = task
            heapq.heappush(self._delayed, (self._clock() + delay, task.id))

    def promote_due(self) -> None:
        """Move delayed tasks whose time has come to the ready queue."""
        with self._changed:
            now = self._clock()
            while self._delayed and self._delayed[0][0] <= now:
                self._ready.append(heapq.heappop(self._delayed)[1])
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

    def expire_leases(self) -> list[Task]:
        """End overdue leases; return their tasks, which are no longer in play."""
        with self._changed:
            now = self._clock()
            expired = [lease.task for lease in self._leases.values() if lease.deadline <= now]
            for task in expired:
                del self._leases[task.id]
                del self._in_play[task.id]
            return expired

    def ready_count(self) -> int:
        with self._changed:
            return len(self._ready)

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

    def empty(self) -> bool:
        return self._frontier.is_over_for(self._worker)

    def get(self, block: bool = True, timeout: float | None = None, limit: int | None = None) -> list[Task]:
        """Return a batch of leased tasks, or raise queue.Empty like queue.Queue.get."""
        wait = (MAX_BLOCK_SECONDS if timeout is None else timeout) if block else 0.0
        tasks = self._frontier.take(self._worker, min(limit or self._capacity, self._capacity), wait)
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
