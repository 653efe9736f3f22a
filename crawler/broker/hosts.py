"""Ready URLs, one queue per host, served in turn under per-host caps and pace; retries waiting.

A plain class, not thread-safe: the frontier calls it under its own lock.
Hosts with ready URLs sit in a rotation, each once, so one slow or busy host
cannot hold up the others; a host may be capped (URLs in flight at once) and
paced (seconds between two hand-outs). Only the master can enforce either,
since only it sees every worker.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

__all__ = ["HostQueues"]


class _Host:
    """One host's ready task ids and politeness bookkeeping."""

    __slots__ = ("delay", "in_flight", "in_rotation", "next_time", "ready")

    def __init__(self, delay: float) -> None:
        self.ready: deque[int] = deque()
        self.in_flight = 0
        self.next_time = 0.0
        self.delay = delay
        self.in_rotation = False


class HostQueues:
    """Per-host ready queues and the rotation over them."""

    def __init__(self, per_host: int = 0, delay: float = 0.0) -> None:
        self._per_host = per_host
        self._delay = delay
        self._hosts: dict[str, _Host] = {}
        self._rotation: deque[str] = deque()  # hosts with ready URLs, each once
        self._waiting: list[tuple[float, int, str]] = []  # (due, task id, host): retries, soonest first
        self.ready_total = 0
        self.paced = delay > 0
        """Some host has a delay between hand-outs."""

    @property
    def polite(self) -> bool:
        """Whether any host is capped or paced (then nothing is handed out ahead of need)."""
        return bool(self._per_host) or self.paced

    def push(self, task_id: int, host: str, front: bool = False) -> None:
        entry = self._host(host)
        if front:
            entry.ready.appendleft(task_id)
        else:
            entry.ready.append(task_id)
        self.ready_total += 1
        if not entry.in_rotation:
            entry.in_rotation = True
            self._rotation.append(host)

    @property
    def waiting_count(self) -> int:
        """Retries waiting for their time."""
        return len(self._waiting)

    @property
    def rotation_size(self) -> int:
        """Hosts with URLs ready."""
        return len(self._rotation)

    def busiest(self, count: int) -> list[tuple[str, int]]:
        """The ``count`` hosts with the most URLs ready."""
        ready = ((name, len(host.ready)) for name, host in self._hosts.items() if host.ready)
        return sorted(ready, key=lambda item: -item[1])[:count]

    def push_later(self, task_id: int, host: str, due: float) -> None:
        """Make ``task_id`` ready at time ``due`` (a retry's backoff)."""
        heapq.heappush(self._waiting, (due, task_id, host))

    def promote(self, now: float) -> None:
        """Make ready every waiting id whose time has come."""
        while self._waiting and self._waiting[0][0] <= now:
            _due, task_id, host = heapq.heappop(self._waiting)
            self.push(task_id, host)

    def take(self, limit: int, now: float, is_live: Callable[[int], bool]) -> list[tuple[int, str]]:
        """Take up to ``limit`` ready ids, in turn across hosts, within caps and pace.

        An id for which ``is_live`` is false (finished by a late result while
        it waited) is dropped. Each id taken counts as in flight for its host
        until :meth:`done`.
        """
        taken: list[tuple[int, str]] = []
        held_back = 0
        rotation = self._rotation
        # Stop once every host in the rotation was held back in a row: nothing more can go out now.
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
            self.ready_total -= 1
            # A late result can finish a URL that waits here again (its lease had expired): drop it.
            if not is_live(task_id):
                continue
            host.in_flight += 1
            host.next_time = now + host.delay
            taken.append((task_id, name))
            held_back = 0
            rotation.rotate(-1)
        return taken

    def done(self, host: str) -> None:
        """A URL of ``host`` is no longer in flight."""
        self._hosts[host].in_flight -= 1

    def set_delay(self, host: str, delay: float) -> None:
        entry = self._host(host)
        entry.delay = max(entry.delay, delay)
        self.paced = self.paced or delay > 0

    def _host(self, name: str) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = _Host(self._delay)
        return host
