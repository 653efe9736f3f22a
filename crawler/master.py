"""The master: the loop that feeds the broker from the backlog, applies results, and decides the end.

Each turn of the loop brings URLs into play a window at a time (see
:mod:`crawler.backlog`), waits briefly for results, turns each result and
each expired lease into a final record or a retry (see
:mod:`crawler.outcomes`), records finals (manifest first, then the state),
queues the links pages led to, and lets robots.txt verdicts through (see
:mod:`crawler.robots`). The crawl is over when the backlog is exhausted and
nothing is in play. The collaborators are built by the CLI and passed in.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator

from .backlog import Backlog, window_wants_more
from .broker import Broker, Lease
from .errors import CrawlerError
from .messages import Outcome, Policy, Result, Status, Task
from .outcomes import Retry, judge_expired, judge_result, links_to_follow, refused
from .output import CrawlOutput
from .progress import CrawlCounts, Progress
from .robots import MAX_CRAWL_DELAY, RobotsGate
from .rules import Scope
from .seeds import SeedLine
from .state import FinalRecord

__all__ = ["Master", "MasterConfig"]

logger = logging.getLogger(__name__)

LOOP_WAIT_SECONDS = 0.05
SHOWN_BAD_SEEDS = 10
"""Bad seed lines logged one by one; past this, one summary line (all are in the manifest)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MasterConfig:
    """How the master runs a crawl, besides the policy it hands to workers."""

    policy: Policy
    linger_seconds: float = 5.0
    """After the end, how long to wait for active workers to hear it."""
    drain_seconds: float = 5.0
    """After Ctrl-C, how long to wait for the work in flight."""
    show_progress: bool = True
    max_urls: int = 0
    """Stop adding discovered links once the crawl knows this many URLs; 0: no cap."""


def _nothing() -> None:
    pass


class Master:
    """One crawl, from seeds to final states."""

    def __init__(
        self,
        config: MasterConfig,
        output: CrawlOutput,
        broker: Broker,
        backlog: Backlog,
        scope: Scope,
        robots: RobotsGate | None = None,
    ) -> None:
        self.config = config
        self.policy = config.policy
        self.output = output
        self.broker = broker
        self.backlog = backlog
        self.scope = scope
        self.robots = robots
        self._rng = random.Random()
        self.invalid_seeds = 0
        self.counts = self._counts_so_far()
        self.progress = Progress(self.counts, enabled=config.show_progress)
        self._watchdog: Callable[[], None] = _nothing
        self._load_seeds()  # the first chunk now: a list without a valid URL fails before serving

    def _counts_so_far(self) -> CrawlCounts:
        by_status = self.output.state.counts()
        counts = CrawlCounts(ok=by_status.get(Status.OK, 0), failed=by_status.get(Status.FAILED, 0))
        counts.known(sum(by_status.values()))
        return counts

    def watch(self, check: Callable[[], None]) -> None:
        """Call ``check`` on every turn of the loop; it raises to abort the crawl."""
        self._watchdog = check

    # --- the loop -----------------------------------------------------------

    def run(self) -> int:
        """Crawl until every URL is final; return the exit status (0, 1, or 130 when stopped)."""
        self.broker.start()
        logger.debug("master: serving on %s", self.broker.address)
        try:
            with _stop_requests() as stop:
                while not self.is_over():
                    if stop.is_set():
                        return self._stop_early()
                    self.step()
        except KeyboardInterrupt:  # a second Ctrl-C, or run() outside the main thread
            return self._stop_early()
        except CrawlerError:  # a write failed (a full disk), or every local worker quit
            self.broker.close()  # workers that ask now are told to stop
            raise
        finally:
            self.progress.clear()
        self.broker.finish()
        self._linger()
        return 1 if self.counts.failed else 0

    def step(self) -> None:
        """One turn of the loop: seeds in, the window refilled, results collected (waits up to 50 ms)."""
        self._watchdog()
        self._load_seeds()
        self._refill_window()
        self.broker.wait_for_results(LOOP_WAIT_SECONDS)
        self._collect()
        self.progress.tick()

    def is_over(self) -> bool:
        """The backlog is exhausted and nothing is in play or waiting for its robots.txt."""
        held = self.robots.held_count() if self.robots is not None else 0
        return self.backlog.exhausted and self.broker.counts().in_play == 0 and not held

    def _load_seeds(self) -> None:
        if self.backlog.seeds_done:
            return
        chunk = self.backlog.load_seeds()
        self.counts.known(chunk.added)
        if chunk.refused:
            self._record_invalid_seeds(chunk.refused)
        if chunk.last and self.invalid_seeds > SHOWN_BAD_SEEDS:
            logger.warning(
                "seeds: %d more invalid lines not shown; each is in the manifest as failed",
                self.invalid_seeds - SHOWN_BAD_SEEDS,
            )

    def _record_invalid_seeds(self, lines: list[SeedLine]) -> None:
        for line in lines:
            self.invalid_seeds += 1
            if self.invalid_seeds <= SHOWN_BAD_SEEDS:
                logger.warning("seeds line %d: %s: %s", line.line_number, line.error, line.text[:200])
        self.counts.refused_lines(len(lines))
        # Not in the state (they have no URL to key on): a rebuilt manifest leaves them out.
        self.output.manifest.write(
            FinalRecord.failure(line.text, line.error or "invalid URL", attempts=0).to_manifest() for line in lines
        )

    def _refill_window(self) -> None:
        if self.backlog.exhausted or not window_wants_more(self.broker.counts()):
            return
        tasks = self.backlog.next_tasks()
        if not tasks:
            return
        if self.robots is None:
            self.broker.add(tasks)
            return
        admitted, refusals, fetch_first = self.robots.admit(tasks)
        self._refuse(refusals)
        self.broker.add(fetch_first + admitted)

    # --- results --------------------------------------------------------

    def _collect(self) -> None:
        """Turn results and expired leases into final records and retries, recorded in one batch."""
        decisions: list[Retry | FinalRecord] = []
        for task, result in self.broker.take_results():
            decisions += self._on_result(task, result)
        expired = self.broker.expire_leases()
        for lease in expired:
            decisions += self._on_expired(lease.task)
        _log_expired(expired)
        self.broker.promote_due()
        finals = [decision for decision in decisions if isinstance(decision, FinalRecord)]
        retries = [decision for decision in decisions if isinstance(decision, Retry)]
        for retry in retries:
            if retry.delay:
                self.broker.retry_later(retry.task, retry.delay)
            else:
                self.broker.add([retry.task])
        self._record(finals, retries)

    def _on_result(self, task: Task, result: Result) -> list[Retry | FinalRecord]:
        decision = judge_result(task, result, self.policy, self._rng)
        if isinstance(decision, Retry):
            logger.debug("master: %s: %s; retry %d in %.1f s", task.url, result.error, task.attempt, decision.delay)
            return [decision]
        if task.robots:
            return self._apply_robots(result)
        room = self.config.max_urls - self.counts.total if self.config.max_urls else None
        links = links_to_follow(task, result, self.policy, self.scope, room)
        if links:
            self.counts.known(self.backlog.add_links(links, task.depth + 1, task.url))
        return [decision]

    def _on_expired(self, task: Task) -> list[Retry | FinalRecord]:
        decision = judge_expired(task, self.policy)
        if task.robots and isinstance(decision, FinalRecord):
            return self._apply_robots(Result(task.id, task.url, Outcome.FAILED, error=decision.error))
        return [decision]

    def _apply_robots(self, result: Result) -> list[Retry | FinalRecord]:
        """A host's robots.txt is known: release its waiting URLs, refuse the others (recorded now)."""
        assert self.robots is not None
        verdict = self.robots.learn(result)
        if verdict.crawl_delay:
            logger.info(
                "master: %s: %.1f s between requests (robots.txt Crawl-delay, at most %g)",
                verdict.host,
                verdict.crawl_delay,
                MAX_CRAWL_DELAY,
            )
            self.broker.set_host_delay(verdict.host, verdict.crawl_delay)
        self.broker.add(verdict.allowed)
        self._refuse(verdict.refused)
        return []

    def _refuse(self, refusals: list[tuple[Task, str]]) -> None:
        """Record URLs robots.txt does not allow: failed, never fetched, logged as skipped."""
        for task, reason in refusals:
            logger.info("skipped: %s: %s", task.url, reason)
        self._record([refused(task, reason) for task, reason in refusals], [], log_failures=False)

    def _record(self, finals: list[FinalRecord], retries: list[Retry], log_failures: bool = True) -> None:
        """Record final states and attempts: manifest lines first, then the state.

        In this order a crash between the two leaves the URLs pending, to be
        fetched again and given a newer line; the other order would leave
        final URLs that the manifest never mentions.
        """
        if not finals and not retries:
            return
        self.output.manifest.write(record.to_manifest() for record in finals)
        self.output.state.save(finals, [(retry.task.id, retry.attempts_made) for retry in retries])
        for record in finals:
            self.counts.finished(record.status == Status.OK, record.bytes)
            if log_failures and record.status == Status.FAILED:
                logger.warning("failed: %s: %s", record.url, record.error)

    # --- the end -------------------------------------------------------------

    def _linger(self) -> None:
        """Give active workers a moment to hear that the crawl is over.

        The broker keeps serving until it is shut down, so workers that ask
        later are told too.
        """
        deadline = time.monotonic() + self.config.linger_seconds
        while time.monotonic() < deadline and self.broker.workers_not_told(self.policy.lease_seconds):
            time.sleep(LOOP_WAIT_SECONDS)

    def _stop_early(self) -> int:
        """Ctrl-C: stop handing out work, wait briefly for work in flight, save, exit 130."""
        logger.warning(
            "master: interrupted; waiting up to %.0f s for work in flight (Ctrl-C again to quit now)",
            self.config.drain_seconds,
        )
        self.broker.close()
        try:
            deadline = time.monotonic() + self.config.drain_seconds
            while self.broker.counts().leased and time.monotonic() < deadline:
                self.broker.wait_for_results(LOOP_WAIT_SECONDS)
                self._collect()
            self._collect()
        except KeyboardInterrupt:
            pass
        return 130


@contextlib.contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """Turn the first Ctrl-C or SIGTERM into a request the loop sees between two turns.

    A KeyboardInterrupt raised anywhere could land between the manifest and
    the state (results taken from the broker, recorded in neither); the loop
    stops at a turn's end instead. A second signal raises as usual: quit now.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach the main thread only; nothing to catch here
        return
    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _log_expired(expired: list[Lease]) -> None:
    """One line per worker whose leases ran out, not one per URL."""
    for worker, count in collections.Counter(lease.worker for lease in expired).items():
        logger.info("master: %d leases of %s expired (dead or stalled); handing them out again", count, worker)
