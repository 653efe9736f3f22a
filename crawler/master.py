"""The master: feed the task queue from the crawl state, collect results, decide the end.

It streams the seed list into the state, serves the queues, keeps a bounded
window of pending URLs in play (backpressure: a million seeds never sit in
memory at once), turns results into final states or scheduled retries, takes
back the URLs of workers whose leases expired, and says when the crawl is
over: when no URL is pending, leased or waiting to retry.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from .errors import CrawlerError, UsageError
from .frontier import Frontier, ResultQueueView, TaskQueueView
from .links import resolve_links
from .messages import Outcome, Policy, Result, Status, Task
from .mime import is_html
from .progress import CrawlCounts, Progress
from .queues import QueueServer, format_address
from .robots import MAX_CRAWL_DELAY, RobotsGate
from .rules import Scope
from .seeds import SeedLine, read_seeds
from .state import CrawlState, FinalRecord, Manifest
from .storage import check_output_folder, output_unusable, remove_temp_files

__all__ = ["Master", "MasterConfig", "retry_delay"]

logger = logging.getLogger(__name__)

SEED_CHUNK = 20_000
SHOWN_BAD_SEEDS = 10
"""Bad seed lines logged one by one; past this, one summary line (all are in the manifest)."""
WINDOW_LOW = 2_000
WINDOW_REFILL = 10_000
WINDOW_MAX = 100_000
LOOP_WAIT_SECONDS = 0.05


@dataclasses.dataclass(frozen=True, kw_only=True)
class MasterConfig:
    """Everything the master needs besides the seeds stream."""

    output: Path
    bind: tuple[str, int]
    authkey: bytes
    policy: Policy
    linger_seconds: float = 5.0
    """After the end, how long to wait for active workers to hear it."""
    drain_seconds: float = 5.0
    """After Ctrl-C, how long to wait for the work in flight."""
    show_progress: bool = True
    scope: Scope = dataclasses.field(default_factory=Scope)
    """Which hosts discovered links may lead to (crawl mode)."""
    max_urls: int = 0
    """Stop adding discovered links once the crawl knows this many URLs; 0: no cap."""
    obey_robots: bool = False
    per_host: int = 0
    """URLs of one host in flight at once, across all workers; 0: no cap."""
    host_delay: float = 0.0
    """Seconds between two requests to one host."""


def retry_delay(attempt: int, retry_after: float | None, policy: Policy, rng: random.Random) -> float:
    """Return the seconds to wait before attempt ``attempt + 1``.

    Exponential backoff with full jitter over the upper half; a server's
    Retry-After wins when longer, up to ``policy.retry_after_max``.
    """
    backoff = min(policy.backoff_max, policy.backoff_base * 2.0 ** (attempt - 1))
    delay = backoff * (0.5 + rng.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.retry_after_max))
    return delay


def _nothing() -> None:
    pass


def _no_valid_url(lines: list[SeedLine]) -> str:
    if not lines:
        return "no URL in the seeds file"
    first = lines[0]
    return f"no valid URL in the seeds file ({len(lines)} lines refused; line {first.line_number}: {first.error})"


class Master:
    """One crawl, from seeds to final states."""

    def __init__(self, config: MasterConfig, seeds: TextIO) -> None:
        self.config = config
        self.policy = config.policy
        self._rng = random.Random()
        self._seed_lines: Iterator[SeedLine] = read_seeds(seeds)
        self._seeds_done = False
        self._valid_seeds = 0
        self.invalid_seeds = 0
        self._cursor = 0
        self._state_exhausted = False
        self.frontier = Frontier(config.policy.lease_seconds, per_host=config.per_host, host_delay=config.host_delay)
        self.scope = config.scope
        self.robots = RobotsGate(config.policy.agent) if config.obey_robots else None
        # depth and parent of every URL in play, for its manifest line and its links
        self._origins: dict[int, tuple[int, str | None]] = {}
        self.state, self.manifest = self._open_output(config.output)
        self.counts = CrawlCounts()
        self.progress = Progress(self.counts, enabled=config.show_progress)
        try:
            self._load_seed_chunk()
        except UsageError:
            self.close()
            raise
        self._init_counts()
        self._watchdog: Callable[[], None] = _nothing
        self.server = QueueServer(
            config.bind,
            config.authkey,
            {
                "get_task_queue": (self.task_queue_for, TaskQueueView.exposed),
                "get_result_queue": (self.result_queue_for, ResultQueueView.exposed),
            },
        )

    def watch(self, check: Callable[[], None]) -> None:
        """Call ``check`` on every turn of the loop; it raises to abort the crawl."""
        self._watchdog = check

    # --- the two callables the manager serves (named, never lambdas) ----

    def task_queue_for(self, worker: str, capacity: int) -> TaskQueueView:
        logger.debug("master: worker %s connected (capacity %d)", worker, capacity)
        return TaskQueueView(self.frontier, self.policy.to_wire(), worker, capacity)

    def result_queue_for(self, worker: str) -> ResultQueueView:
        return ResultQueueView(self.frontier, worker)

    # --- set-up -----------------------------------------------------------

    def _open_output(self, root: Path) -> tuple[CrawlState, Manifest]:
        check_output_folder(root)
        try:
            state = CrawlState(root)
            reopened = state.reopen_for_resume(root, self.policy.depth)
            removed = remove_temp_files(root, older_than=2 * self.policy.lease_seconds)
            manifest = Manifest(root, state)
        except OSError as error:
            raise output_unusable(root, error) from None
        if any(reopened) or removed:
            logger.info(
                "master: resuming: %d failed URLs to retry, %d files missing, %d pages to read for deeper links, "
                "%d temporary files removed",
                *reopened,
                removed,
            )
        return state, manifest

    def _init_counts(self) -> None:
        by_status = self.state.counts()
        self.counts.ok = by_status.get(Status.OK, 0)
        self.counts.failed = by_status.get(Status.FAILED, 0) + self.invalid_seeds
        self.counts.total = sum(by_status.values()) + self.invalid_seeds

    def _load_seed_chunk(self) -> None:
        """Move the next chunk of the seed list into the state."""
        if self._seeds_done:
            return
        chunk = list(itertools.islice(self._seed_lines, SEED_CHUNK))
        self._seeds_done = len(chunk) < SEED_CHUNK
        urls = [line.url for line in chunk if line.url]
        if self._seeds_done and not urls and not self._valid_seeds and not self.invalid_seeds:
            # Checked before anything is recorded: a binary file is one line of
            # error, not thousands of warnings and manifest lines.
            raise UsageError(_no_valid_url(chunk))
        for url in urls:
            self.scope.add_seed(url)
        self._valid_seeds += len(urls)
        added = self.state.add_urls(urls)
        self.counts.total += added
        self._record_invalid_seeds([line for line in chunk if line.error])
        if self._seeds_done and self.invalid_seeds > SHOWN_BAD_SEEDS:
            logger.warning(
                "seeds: %d more invalid lines not shown; each is in the manifest as failed",
                self.invalid_seeds - SHOWN_BAD_SEEDS,
            )
        if added:
            self._state_exhausted = False

    def _record_invalid_seeds(self, lines: list[SeedLine]) -> None:
        for line in lines:
            self.invalid_seeds += 1
            if self.invalid_seeds <= SHOWN_BAD_SEEDS:
                logger.warning("seeds line %d: %s: %s", line.line_number, line.error, line.text[:200])
        self.counts.failed += len(lines)
        self.counts.done_this_run += len(lines)
        self.counts.total += len(lines)
        if lines:
            self.manifest.write(
                FinalRecord.failure(line.text, line.error or "invalid URL", attempts=0).to_manifest() for line in lines
            )

    # --- the loop -----------------------------------------------------------

    def run(self) -> int:
        """Crawl until every URL is final; return the exit status (0 or 1)."""
        self.server.start()
        logger.debug("master: serving on %s", format_address(self.server.address))
        try:
            while not self._is_crawl_over():
                self._step()
        except KeyboardInterrupt:
            return self._stop_early()
        except CrawlerError:  # a write failed (a full disk), or every local worker quit
            self.frontier.close()  # workers that ask now are told to stop
            raise
        self.frontier.finish()
        self._linger()
        return 1 if self.counts.failed else 0

    def _step(self) -> None:
        self._watchdog()
        self._load_seed_chunk()
        self._refill_window()
        self.frontier.wait_for_results(LOOP_WAIT_SECONDS)
        self._collect()
        self.progress.tick()

    def _collect(self) -> None:
        """Turn results and expired leases into state changes, in one transaction."""
        finals: list[FinalRecord] = []
        retries: list[tuple[int, int]] = []
        for result in self.frontier.take_results():
            self._handle_result(result, finals, retries)
        expired = self.frontier.expire_leases()
        for lease in expired:
            self._handle_expired(lease.task, finals, retries)
        for worker, count in collections.Counter(lease.worker for lease in expired).items():
            logger.info("master: %d leases of %s expired (dead or stalled); handing them out again", count, worker)
        self.frontier.promote_due()
        self._save(finals, retries)

    def _save(self, finals: list[FinalRecord], retries: list[tuple[int, int]]) -> None:
        """Record final states: manifest lines first, then the state.

        In this order a crash between the two leaves the URLs pending, to be
        fetched again and given a newer line; the other order would leave
        final URLs that the manifest never mentions.
        """
        if finals or retries:
            self.manifest.write(record.to_manifest() for record in finals)
            self.state.save(finals, retries)

    def _handle_result(self, result: Result, finals: list[FinalRecord], retries: list[tuple[int, int]]) -> None:
        is_robots = self.robots is not None and self.robots.is_robots_task(result.id)
        if result.outcome == Outcome.RETRY and result.attempt < self.policy.max_attempts:
            delay = retry_delay(result.attempt, result.retry_after, self.policy, self._rng)
            logger.debug("master: %s: %s; retry %d in %.1f s", result.url, result.error, result.attempt, delay)
            depth = self._origins.get(result.id, (0, None))[0]
            self.frontier.retry_later(Task(result.id, result.url, result.attempt + 1, depth, is_robots), delay)
            retries.append((result.id, result.attempt))
            return
        if is_robots:
            self._apply_robots(result, finals)
            return
        depth, parent = self._origins.pop(result.id, (0, None))
        if result.links and depth < self.policy.depth:
            self._add_links(result, depth)
        status = Status.OK if result.outcome == Outcome.OK else Status.FAILED
        error = result.error
        if result.outcome == Outcome.RETRY:
            error = f"{error} (gave up after {result.attempt} attempts)"
        finals.append(
            FinalRecord(
                id=result.id,
                url=result.url,
                status=status,
                path=result.path,
                bytes=result.bytes if status == Status.OK else None,
                sha256=result.sha256,
                content_type=result.content_type,
                http_status=result.http_status,
                error=error,
                attempts=result.attempt,
                worker=result.worker,
                depth=depth,
                parent=parent,
                kept=result.kept,
                links_followed=status == Status.OK and depth < self.policy.depth and is_html(result.content_type),
            )
        )
        self._count_final(status, result.bytes)
        if status == Status.FAILED:
            logger.warning("failed: %s: %s", result.url, error)

    def _handle_expired(self, task: Task, finals: list[FinalRecord], retries: list[tuple[int, int]]) -> None:
        if task.attempt < self.policy.max_attempts:
            logger.debug("master: lease on %s expired (attempt %d); handing it out again", task.url, task.attempt)
            self.frontier.add([task._replace(attempt=task.attempt + 1)])
            retries.append((task.id, task.attempt))
            return
        error = f"no result after {task.attempt} attempts: the worker died or stalled each time"
        if self.robots is not None and self.robots.is_robots_task(task.id):
            self._apply_robots(Result(task.id, task.url, Outcome.FAILED, error=error), finals)
            return
        depth, parent = self._origins.pop(task.id, (0, None))
        finals.append(FinalRecord.failure(task.url, error, task.attempt, row_id=task.id, depth=depth, parent=parent))
        self._count_final(Status.FAILED, 0)
        logger.warning("failed: %s: %s", task.url, error)

    def _add_links(self, page: Result, depth: int) -> None:
        """Queue a page's new in-scope links one level deeper, within --max-urls."""
        links = [
            link for link in resolve_links(page.page_url or page.url, page.base, page.links) if self.scope.allows(link)
        ]
        if self.config.max_urls:
            links = links[: max(0, self.config.max_urls - self.counts.total)]
        if links:
            added = self.state.add_urls(links, depth + 1, page.url)
            self.counts.total += added
            self._state_exhausted = self._state_exhausted and not added

    def _apply_robots(self, result: Result, finals: list[FinalRecord]) -> None:
        """A host's robots.txt is known: release its waiting URLs or refuse them."""
        assert self.robots is not None
        verdict = self.robots.learn(result)
        if verdict.crawl_delay:
            logger.info(
                "master: %s: %.1f s between requests (robots.txt Crawl-delay, at most %g)",
                verdict.host,
                verdict.crawl_delay,
                MAX_CRAWL_DELAY,
            )
            self.frontier.set_host_delay(verdict.host, verdict.crawl_delay)
        self._refuse(verdict.refused, finals)
        self.frontier.add(verdict.allowed)

    def _refuse(self, refused: list[tuple[Task, str]], finals: list[FinalRecord]) -> None:
        for task, reason in refused:
            depth, parent = self._origins.pop(task.id, (0, None))
            finals.append(
                FinalRecord.failure(task.url, reason, task.attempt - 1, row_id=task.id, depth=depth, parent=parent)
            )
            self._count_final(Status.FAILED, 0)
            logger.info("skipped: %s: %s", task.url, reason)

    def _count_final(self, status: Status, size: int | None) -> None:
        if status == Status.OK:
            self.counts.ok += 1
            self.counts.bytes += size or 0
        else:
            self.counts.failed += 1
        self.counts.done_this_run += 1

    def _refill_window(self) -> None:
        """Bring pending URLs from the state into play, a window at a time.

        A window held back by politeness (one busy host) is widened up to
        WINDOW_MAX, so other hosts further down the list still get served.
        """
        if self._state_exhausted:
            return
        in_play = self.frontier.in_play_count()
        wanted = self.frontier.ready_count() < WINDOW_LOW or (self.frontier.starved and in_play < WINDOW_MAX)
        if not wanted:
            return
        rows = self.state.pending_after(self._cursor, WINDOW_REFILL)
        if not rows:
            self._state_exhausted = self._seeds_done
            return
        self._cursor = rows[-1].id
        tasks = []
        for row in rows:
            self._origins[row.id] = (row.depth, row.parent)
            tasks.append(Task(row.id, row.url, row.attempts + 1, row.depth))
        self._admit(tasks)

    def _admit(self, tasks: list[Task]) -> None:
        if self.robots is None:
            self.frontier.add(tasks)
            return
        allowed, refused, fetch_first = self.robots.admit(tasks)
        finals: list[FinalRecord] = []
        self._refuse(refused, finals)
        self._save(finals, [])
        self.frontier.add(fetch_first + allowed)

    def _is_crawl_over(self) -> bool:
        held = self.robots.held_count() if self.robots is not None else 0
        return self._seeds_done and self._state_exhausted and self.frontier.in_play_count() == 0 and not held

    # --- the end -------------------------------------------------------------

    def _linger(self) -> None:
        """Give active workers a moment to hear that the crawl is over.

        The queues stay served until :meth:`close`, so workers that connect
        later are told too.
        """
        deadline = time.monotonic() + self.config.linger_seconds
        while time.monotonic() < deadline and self.frontier.workers_not_told(self.policy.lease_seconds):
            time.sleep(LOOP_WAIT_SECONDS)

    def _stop_early(self) -> int:
        """Ctrl-C: stop handing out work, wait briefly for work in flight, save, exit 130."""
        logger.warning(
            "master: interrupted; waiting up to %.0f s for work in flight (Ctrl-C again to quit now)",
            self.config.drain_seconds,
        )
        self.frontier.close()
        try:
            deadline = time.monotonic() + self.config.drain_seconds
            while self.frontier.leased_count() and time.monotonic() < deadline:
                self.frontier.wait_for_results(LOOP_WAIT_SECONDS)
                self._collect()
            self._collect()
        except KeyboardInterrupt:
            pass
        return 130

    def __enter__(self) -> Master:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and close the state and the manifest."""
        self.progress.clear()
        if hasattr(self, "server"):
            self.server.close()
        try:
            self.manifest.close()
        finally:
            self.state.close()
