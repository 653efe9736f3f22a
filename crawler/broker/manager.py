"""The manager broker: the in-memory frontier, served to workers over the standard library's manager.

The master side, :class:`ManagerBroker`, is a :class:`Frontier` that also
serves each worker two views of it (the seed design's task and result
queues) through :mod:`crawler.broker.transport`. The worker side,
:class:`ManagerLink`, holds the proxies to those views and turns a broken
connection into :class:`~crawler.errors.ConnectionLost`.

Everything sent here is pickled: anyone who holds the authkey can run code
on the master and the workers (see the README's Security section).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConnectionLost
from ..messages import Policy, Result, Task
from . import WorkerLink
from .frontier import MAX_BLOCK_SECONDS, Frontier
from .transport import CONNECTION_ERRORS, QueueServer, drop_thread_connection, format_address, open_proxies

__all__ = ["ManagerBroker", "ManagerConnector", "ManagerLink", "ResultQueueView", "TaskQueueView"]


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
        # queue.Queue.get's signature, so the seed design's call reads the same; the frontier caps the wait.
        wait = (MAX_BLOCK_SECONDS if timeout is None else timeout) if block else 0.0
        capacity = self._capacity
        tasks = self._frontier.take(self._worker, min(limit or capacity, capacity), wait, min(extra, capacity))
        if not tasks:
            raise queue.Empty
        return tasks

    def renew(self, task_ids: list[int]) -> int:
        return self._frontier.renew(self._worker, task_ids)

    def release(self, leaving: bool = True) -> int:
        return self._frontier.release(self._worker, leaving)

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


class ManagerBroker(Frontier):
    """A frontier that workers reach through a ``BaseManager`` server in this process.

    Binding happens here, so a busy port fails before the crawl starts;
    serving starts with :meth:`start`.
    """

    def __init__(
        self,
        bind: tuple[str, int],
        authkey: bytes,
        policy: Policy,
        *,
        per_host: int = 0,
        host_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(policy.lease_seconds, clock=clock, per_host=per_host, host_delay=host_delay)
        self._policy = policy.to_wire()
        # Named methods, never lambdas: the manager's registry must stay picklable.
        self._server = QueueServer(
            bind,
            authkey,
            {
                "get_task_queue": (self.task_queue_for, TaskQueueView.exposed),
                "get_result_queue": (self.result_queue_for, ResultQueueView.exposed),
            },
        )

    @property
    def address(self) -> str:
        return format_address(self._server.address)

    def start(self) -> None:
        self._server.start()

    def shutdown(self) -> None:
        self._server.close()

    def task_queue_for(self, worker: str, capacity: int) -> TaskQueueView:
        return TaskQueueView(self, self._policy, worker, capacity)

    def result_queue_for(self, worker: str) -> ResultQueueView:
        return ResultQueueView(self, worker)


class ManagerLink:
    """A worker's link to a manager broker: proxies to its task and result queue views."""

    def __init__(self, address: tuple[str, int], authkey: bytes, worker: str, capacity: int) -> None:
        self._where = format_address(address)
        self._task, self._result = open_proxies(address, authkey, worker, capacity)

    def policy(self) -> Policy:
        return Policy.from_wire(self._call(self._task.policy))

    def empty(self) -> bool:
        return bool(self._call(self._task.empty))

    def get(self, block: bool, timeout: float, limit: int, extra: int) -> list[Task]:
        tasks: list[Task] = self._call(self._task.get, block, timeout, limit, extra)
        return tasks

    def put(self, results: list[Result]) -> None:
        self._call(self._result.put, results)

    def renew(self, task_ids: list[int]) -> int:
        return int(self._call(self._task.renew, task_ids))

    def release_all(self, leaving: bool = True) -> int:
        # Called after Ctrl-C, which may have cut a call short on this thread's connection.
        drop_thread_connection(self._task)
        return int(self._call(self._task.release, leaving))

    def _call(self, method: Callable[..., Any], *args: object) -> Any:
        try:
            return method(*args)
        except CONNECTION_ERRORS as error:
            raise ConnectionLost(f"lost the master at {self._where}: {error or type(error).__name__}") from None


class ManagerConnector:
    """Makes :class:`ManagerLink` objects for one master address and key."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self._address = address
        self._authkey = authkey

    @property
    def where(self) -> str:
        return format_address(self._address)

    def __call__(self, worker: str, capacity: int) -> WorkerLink:
        return ManagerLink(self._address, self._authkey, worker, capacity)
