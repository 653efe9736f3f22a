"""Progress on the master's stderr: a live bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["CrawlCounts", "Progress", "format_bytes"]

logger = logging.getLogger(__name__)

REDRAW_SECONDS = 0.2  # five redraws a second: the eye sees it live, the terminal is not flooded
LOG_EVERY_SECONDS = 10.0  # off a terminal, a log line every 10 s: a file grows by little, a stall shows


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


@dataclass
class CrawlCounts:
    """What the crawl has done so far; ``total`` grows while seeds stream in."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    bytes: int = 0
    done_this_run: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def known(self, count: int) -> None:
        """Count URLs the crawl has just learnt of (seeds, links)."""
        self.total += count

    def finished(self, ok: bool, size: int | None = None) -> None:
        """Count one URL that reached its final state in this run."""
        if ok:
            self.ok += 1
            self.bytes += size or 0
        else:
            self.failed += 1
        self.done_this_run += 1

    def refused_lines(self, count: int) -> None:
        """Count invalid seed lines: known, failed, done in this run."""
        self.total += count
        self.failed += count
        self.done_this_run += count

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> str:
        elapsed = self.elapsed()
        rate = self.done_this_run / elapsed if elapsed > 0 else 0.0
        earlier = self.done - self.done_this_run
        resumed = f" ({earlier} done by an earlier run)" if earlier else ""
        return (
            f"done: {self.ok} ok, {self.failed} failed of {self.total} URLs{resumed}; "
            f"{format_bytes(self.bytes)} in {elapsed:.1f} s ({rate:.1f} URLs/s)"
        )


class Progress:
    """Show the counts now and then; never more often than the eye can read."""

    def __init__(self, counts: CrawlCounts, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.counts = counts
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._live = enabled and self._stream.isatty()
        self._last_draw = 0.0
        self._last_log = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if self._live and now - self._last_draw >= REDRAW_SECONDS:
            self._last_draw = now
            self._stream.write("\r" + self._bar() + "\x1b[K")
            self._stream.flush()
        elif self._enabled and not self._live and now - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = now
            logger.info("master: %s", self._line())

    def clear(self) -> None:
        if self._live:
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def _line(self) -> str:
        counts = self.counts
        elapsed = counts.elapsed()
        rate = counts.done_this_run / elapsed if elapsed > 0 else 0.0
        return (
            f"{counts.done}/{counts.total} done, {counts.failed} failed, "
            f"{rate:.1f} URLs/s, {format_bytes(counts.bytes)}"
        )

    def _bar(self, width: int = 30) -> str:
        counts = self.counts
        share = counts.done / counts.total if counts.total else 0.0
        filled = int(width * share)
        return f"[{'#' * filled}{'.' * (width - filled)}] {share:4.0%} {self._line()}"
