"""The URLs not yet in play: the seed list streaming into the state, then the state's pending rows.

The master takes a window of URLs at a time from here (backpressure: a
million seeds never sit in memory at once). The seed list is read a chunk at
a time; links found in pages join the state as they are discovered; the
window is refilled from the state's pending rows in id order, so a resumed
crawl continues where it was.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple
from urllib.parse import urlsplit

from .broker import WindowCounts
from .errors import UsageError
from .messages import Task
from .rules import Scope
from .seeds import SeedLine
from .shaping import HostCredentials
from .state import CrawlState

__all__ = ["Backlog", "SeedChunk", "window_wants_more"]

SEED_CHUNK = 20_000
WINDOW_LOW = 2_000
WINDOW_REFILL = 10_000
WINDOW_MAX = 100_000


class SeedChunk(NamedTuple):
    """What one chunk of the seed list brought."""

    added: int
    """URLs new to the crawl."""
    refused: list[SeedLine]
    """Its invalid lines."""
    last: bool
    """The list is read to its end."""


def window_wants_more(window: WindowCounts) -> bool:
    """Whether to bring more URLs into play.

    When few are ready; or when politeness holds every ready URL back (one
    busy host), up to ``WINDOW_MAX``, so that other hosts further down the
    list still get served.
    """
    return window.ready < WINDOW_LOW or (window.starved and window.in_play < WINDOW_MAX)


class Backlog:
    """Seeds into the state, pending rows out into the window."""

    def __init__(
        self,
        state: CrawlState,
        seeds: Iterable[SeedLine],
        scope: Scope,
        credentials: HostCredentials | None = None,
    ) -> None:
        self._state = state
        self._seeds: Iterator[SeedLine] = iter(seeds)
        self._scope = scope
        self._credentials = credentials or HostCredentials()
        self.seeds_done = False
        self._valid_seeds = 0
        self._refused_seeds = 0
        self._cursor = 0  # the last id brought into play
        self._rows_left = True  # pending rows may remain past the cursor

    @property
    def exhausted(self) -> bool:
        """Every seed read and every pending row brought into play."""
        return self.seeds_done and not self._rows_left

    def load_seeds(self) -> SeedChunk:
        """Move the next chunk of the seed list into the state.

        A list without any valid URL raises UsageError before anything is
        recorded: a binary file is one line of error, not thousands of
        warnings and manifest lines.
        """
        if self.seeds_done:
            return SeedChunk(0, [], True)
        chunk = list(itertools.islice(self._seeds, SEED_CHUNK))
        self.seeds_done = len(chunk) < SEED_CHUNK
        seeds = [(line.url, line.line_number, line.columns) for line in chunk if line.url]
        urls = [url for url, _row, _columns in seeds]
        if self.seeds_done and not urls and not self._valid_seeds and not self._refused_seeds:
            raise UsageError(_no_valid_url(chunk))
        for url in urls:
            self._scope.add_seed(url)
        for line in chunk:
            if line.url and line.auth:
                self._credentials.learn(urlsplit(line.url).hostname or "", line.auth)
        self._valid_seeds += len(urls)
        refused = [line for line in chunk if line.error]
        self._refused_seeds += len(refused)
        added = self._state.add_seeds(seeds)
        if added:
            self._rows_left = True
        return SeedChunk(added, refused, self.seeds_done)

    def add_links(self, urls: list[str], depth: int, parent: str) -> int:
        """Record links found on ``parent`` as pending at ``depth``; return how many were new."""
        return self._add(urls, depth, parent)

    def _add(self, urls: list[str], depth: int, parent: str | None) -> int:
        added = self._state.add_urls(urls, depth, parent)
        if added:
            self._rows_left = True
        return added

    def next_tasks(self, limit: int = WINDOW_REFILL) -> list[Task]:
        """Return up to ``limit`` pending URLs past the window, as tasks of their next attempt."""
        if not self._rows_left:
            return []
        rows = self._state.pending_after(self._cursor, limit)
        if not rows:
            # Past the end of the state: nothing left unless seeds or links add rows.
            self._rows_left = not self.seeds_done
            return []
        self._cursor = rows[-1].id
        auth = self._credentials.for_url if self._credentials else _no_credentials
        return [
            Task(
                row.id,
                row.url,
                row.attempts + 1,
                row.depth,
                parent=row.parent,
                auth=auth(row.url),
                row=row.row,
                columns=row.columns,
            )
            for row in rows
        ]


def _no_credentials(url: str) -> None:
    return None


def _no_valid_url(lines: list[SeedLine]) -> str:
    if not lines:
        return "no URL in the seeds file"
    first = lines[0]
    return f"no valid URL in the seeds file ({len(lines)} lines refused; line {first.line_number}: {first.error})"
