"""The workers a frontier has heard from: when, with how many threads, told to stop or not.

A plain class, not thread-safe: the frontier calls it under its own lock.
"""

from __future__ import annotations

__all__ = ["WorkerRegistry"]


class WorkerRegistry:
    """Last time each worker was heard from, its download threads, and who knows the crawl is over."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._threads: dict[str, int] = {}
        self._told_over: set[str] = set()
        self._gone: set[str] = set()
        self._done: dict[str, int] = {}
        self._last_heard: dict[str, float] = {}  # of every worker ever seen, for a person watching

    def connect(self, worker: str, threads: int, now: float) -> None:
        self._threads[worker] = threads
        self.heard(worker, now)

    def heard(self, worker: str, now: float) -> None:
        self._seen[worker] = now
        self._last_heard[worker] = now

    def leave(self, worker: str) -> None:
        """``worker`` handed its leases back and is leaving: it is given nothing more.

        A get it sent before (cut short by its Ctrl-C) may still be waiting
        here; without this it would lease the URLs just handed back to a
        worker that will never read the reply.
        """
        self._seen.pop(worker, None)
        self._gone.add(worker)

    def is_gone(self, worker: str) -> bool:
        return worker in self._gone

    def delivered(self, worker: str, count: int) -> None:
        self._done[worker] = self._done.get(worker, 0) + count

    def rows(self, now: float) -> list[tuple[str, int, int, float]]:
        """(name, threads, results delivered, seconds since heard) of every worker seen, gone ones too."""
        return [
            (name, self._threads.get(name, 0), self._done.get(name, 0), now - at)
            for name, at in self._last_heard.items()
        ]

    def live_threads(self, since: float) -> int:
        """Download threads of the workers heard from since ``since``."""
        return sum(self._threads.get(name, 1) for name, seen in self._seen.items() if seen >= since)

    def told_over(self, worker: str) -> None:
        self._told_over.add(worker)

    def not_told(self, since: float) -> list[str]:
        """Workers heard from since ``since`` that have not been told the crawl is over."""
        return [name for name, seen in self._seen.items() if seen >= since and name not in self._told_over]
