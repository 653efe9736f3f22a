"""robots.txt on the master: hold a host's URLs until its rules are known.

The first URL of a host makes a robots task (a negative id), fetched by any
worker like a file; until it answers, that host's URLs wait here. Then each
is let through or refused, and the host's Crawl-delay paces the frontier.
Rules follow RFC 9309: no robots.txt (4xx) allows everything; one that cannot
be fetched (5xx, network errors, after retries) disallows everything. A
Crawl-delay is capped at ``MAX_CRAWL_DELAY``: a site may ask for patience,
not park its URLs, and so the crawl, for ever.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple
from urllib.parse import urlsplit

from protego import Protego

from .links import host_of
from .messages import Outcome, Result, Task

__all__ = ["MAX_CRAWL_DELAY", "RobotsGate", "RobotsVerdict"]

MAX_CRAWL_DELAY = 60.0


class RobotsVerdict(NamedTuple):
    """What a host's robots.txt decided for the URLs that waited for it."""

    host: str
    allowed: list[Task]
    refused: list[tuple[Task, str]]
    crawl_delay: float


class RobotsGate:
    """Per-host robots.txt rules and the URLs waiting for them."""

    def __init__(self, user_agent: str) -> None:
        self._user_agent = user_agent
        self._rules: dict[str, Protego | None] = {}  # None: robots.txt unreachable, all refused
        self._unreachable_reason: dict[str, str] = {}
        self._held: defaultdict[str, list[Task]] = defaultdict(list)
        self._robots_ids: dict[int, str] = {}
        self._next_id = -1  # robots tasks count down from -1: state ids are positive, so they never meet

    def admit(self, tasks: list[Task]) -> tuple[list[Task], list[tuple[Task, str]], list[Task]]:
        """Sort tasks into (allowed now, refused with a reason, robots tasks to fetch first)."""
        allowed: list[Task] = []
        refused: list[tuple[Task, str]] = []
        fetch_first: list[Task] = []
        for task in tasks:
            host = host_of(task.url)
            if host in self._rules:
                reason = self._refusal(host, task.url)
                if reason:
                    refused.append((task, reason))
                else:
                    allowed.append(task)
                continue
            if host not in self._held:
                fetch_first.append(self._robots_task(task.url, host))
            self._held[host].append(task)
        return allowed, refused, fetch_first

    def learn(self, result: Result) -> RobotsVerdict:
        """Take a robots task's final result; release that host's waiting URLs."""
        host = self._robots_ids.pop(result.id)
        if result.outcome == Outcome.OK and result.robots is not None:
            self._rules[host] = Protego.parse(result.robots)
        else:
            self._rules[host] = None  # RFC 9309: unreachable robots.txt (5xx, network) means complete disallow
            self._unreachable_reason[host] = f"robots.txt could not be fetched ({result.error}): all disallowed"
        allowed: list[Task] = []
        refused: list[tuple[Task, str]] = []
        for task in self._held.pop(host, []):
            reason = self._refusal(host, task.url)
            if reason:
                refused.append((task, reason))
            else:
                allowed.append(task)
        return RobotsVerdict(host, allowed, refused, self._crawl_delay(host))

    def held_count(self) -> int:
        return sum(len(tasks) for tasks in self._held.values())

    def _robots_task(self, url: str, host: str) -> Task:
        task_id = self._next_id
        self._next_id -= 1
        self._robots_ids[task_id] = host
        return Task(task_id, f"{urlsplit(url).scheme}://{host}/robots.txt", 1, robots=True)

    def _refusal(self, host: str, url: str) -> str | None:
        rules = self._rules[host]
        if rules is None:
            return self._unreachable_reason[host]
        if not rules.can_fetch(url, self._user_agent):
            return "disallowed by robots.txt"
        return None

    def _crawl_delay(self, host: str) -> float:
        rules = self._rules.get(host)
        delay = float(rules.crawl_delay(self._user_agent) or 0.0) if rules is not None else 0.0
        return min(delay, MAX_CRAWL_DELAY) if math.isfinite(delay) and delay > 0 else 0.0
