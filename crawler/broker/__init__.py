"""The seam between the master and its workers: what each needs of a broker.

The master's decisions (``master``, ``outcomes``, ``backlog``) reach the
workers only through :class:`Broker`; a worker's loop reaches the master
only through :class:`WorkerLink`, made by a :class:`Connector`. Today's
default is :mod:`crawler.broker.manager` (the standard library's
``BaseManager`` serving an in-memory :class:`~crawler.broker.frontier.Frontier`);
:mod:`crawler.broker.redis_broker` keeps the same frontier in Redis, for
workers on any machine, and nothing else changes.

A broker's own failures reach the worker as :class:`~crawler.errors.ConnectionLost`,
never as a transport's exception.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..messages import Policy, Result, Task

__all__ = ["Broker", "BrokerStatus", "Connector", "Delivery", "Lease", "WindowCounts", "WorkerLink", "WorkerRow"]


class Lease(NamedTuple):
    """A task handed to a worker, until ``deadline`` unless renewed."""

    worker: str
    deadline: float
    task: Task
    host: str
    granted: float = 0.0
    """When the task was handed out (renewals keep it)."""


class Delivery(NamedTuple):
    """A worker's result, with the task it answers."""

    task: Task
    result: Result


class WindowCounts(NamedTuple):
    """The window of URLs in play, as the master steers it."""

    ready: int
    in_play: int
    """Ready, leased, waiting to retry, or delivered and not yet collected."""
    leased: int
    starved: bool
    """The last hand-out found ready URLs but politeness held every one back."""


class WorkerRow(NamedTuple):
    """One worker as the broker saw it."""

    name: str
    threads: int
    leases: int
    done: int
    """Results delivered."""
    idle_seconds: float
    """Since it was last heard from."""


class BrokerStatus(NamedTuple):
    """What the broker can tell a person watching the crawl."""

    workers: list[WorkerRow]
    retry_waiting: int
    hosts_in_rotation: int
    busiest_hosts: list[tuple[str, int]]
    """Hosts with the most URLs ready, and how many."""
    oldest_lease_seconds: float | None


class Broker(Protocol):
    """What the master needs to reach its workers."""

    @property
    def address(self) -> str:
        """Where workers reach this broker, for logs."""

    def start(self) -> None:
        """Start serving workers."""

    def add(self, tasks: list[Task]) -> None:
        """Make tasks ready to hand out."""

    def retry_later(self, task: Task, delay: float) -> None:
        """Hand ``task`` out again after ``delay`` seconds."""

    def promote_due(self) -> None:
        """Make ready the retries whose time has come."""

    def set_host_delay(self, host: str, delay: float) -> None:
        """Leave at least ``delay`` seconds between two hand-outs to ``host``."""

    def wait_for_results(self, timeout: float) -> None:
        """Block until a result arrives or ``timeout`` seconds pass."""

    def take_results(self) -> list[Delivery]:
        """Return the results delivered since the last call, each with its task.

        The results of one ``put`` may come over several calls, in order;
        :attr:`drained` tells when every result delivered so far was taken.
        """

    @property
    def drained(self) -> bool:
        """The last :meth:`take_results` left nothing delivered behind (a whole shard's results are in)."""

    def acknowledge(self) -> None:
        """The results last taken are recorded: a broker that outlives the master may forget them now."""

    def expire_leases(self) -> list[Lease]:
        """End and return the leases past their deadline; their tasks leave play."""

    def counts(self) -> WindowCounts: ...

    def status(self) -> BrokerStatus:
        """Workers, hosts and leases, for ``crawler status`` and the metrics."""

    def finish(self) -> None:
        """Say the crawl is over: every worker that asks is told to stop."""

    def close(self) -> None:
        """Stop handing out work: the master is shutting down."""

    def workers_not_told(self, active_within: float) -> list[str]:
        """Workers heard from lately that have not yet been told the crawl is over."""

    def shutdown(self) -> None:
        """Stop serving workers and free what serving holds."""


class WorkerLink(Protocol):
    """What a worker needs of the master: the seed design's two queues, and its leases.

    Every method may raise :class:`~crawler.errors.ConnectionLost`.
    """

    def policy(self) -> Policy: ...

    def empty(self) -> bool:
        """True only once the master says the crawl is over."""

    def get(self, block: bool, timeout: float, limit: int, extra: int) -> list[Task]:
        """Take a batch of leased tasks, or raise queue.Empty."""

    def put(self, results: list[Result]) -> None:
        """Deliver results."""

    def renew(self, task_ids: list[int]) -> int:
        """Extend the leases of ``task_ids``, the tasks this worker holds (the heartbeat); return how many.

        Only those: a lease granted in a reply the worker never read must expire, not live for ever.
        """

    def release_all(self, leaving: bool = True) -> int:
        """Hand back every lease this worker holds; return how many.

        ``leaving``: the worker is going away and is given nothing more.
        """


class Connector(Protocol):
    """Makes a worker's link to the master; raises MasterUnreachable or AuthenticationFailed."""

    @property
    def where(self) -> str:
        """The master's address, for messages."""

    def __call__(self, worker: str, capacity: int) -> WorkerLink: ...
