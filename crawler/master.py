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
from .ledger import Ledger
from .messages import Outcome, Policy, Result, Task
from .monitor import Monitor
from .outcomes import Retry, judge_expired, judge_result, links_to_follow, refused
from .output import CrawlOutput
from .progress import Progress
from .robots import MAX_CRAWL_DELAY, RobotsGate
from .rules import Scope
from .shards import ShardGate, sweep_shards
from .state import FinalRecord

__all__ = ["Master", "MasterConfig"]

logger = logging.getLogger(__name__)

LOOP_WAIT_SECONDS = 0.05
SPACE_CHECK_SECONDS = 1.0
LINGER_POLL_SECONDS = 0.01
"""Workers hear the end within milliseconds; the master's exit should not wait a whole loop turn more."""


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
        self.ledger = Ledger(output)
        self.counts = self.ledger.counts
        self.progress = Progress(self.counts, enabled=config.show_progress)
        self.monitor = Monitor(output.root, self.ledger, broker, self.policy)
        self.shards = ShardGate()
        self._watchdog: Callable[[], None] = _nothing
        self._space_checked = 0.0
        self._load_seeds()  # the first chunk now: a list without a valid URL fails before serving

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
            self.monitor.tick(running=False)
        self.broker.finish()
        self._linger()
        if self.policy.output_format == "webdataset":
            # Nothing is in play now: a shard not accepted can no longer be, and must not be counted.
            removed = sweep_shards(self.output.root, self.output.state.accepted_shards())
            if removed:
                logger.info("master: removed %d shards that were not accepted (their samples are in others)", removed)
        return 1 if self.counts.failed else 0

    def step(self) -> None:
        """One turn of the loop: seeds in, the window refilled, results collected (waits up to 50 ms)."""
        self._watchdog()
        self._check_space()
        self._load_seeds()
        self._refill_window()
        self.broker.wait_for_results(LOOP_WAIT_SECONDS)
        self._collect()
        self.progress.tick()
        self.monitor.tick()

    def _check_space(self) -> None:
        now = time.monotonic()
        if now - self._space_checked >= SPACE_CHECK_SECONDS:
            self._space_checked = now
            self.output.check_free_space(self.policy.min_free)

    def is_over(self) -> bool:
        """The backlog is exhausted and nothing is in play or waiting for its robots.txt."""
        held = self.robots.held_count() if self.robots is not None else 0
        return self.backlog.exhausted and self.broker.counts().in_play == 0 and not held and not self.shards.waiting

    def _load_seeds(self) -> None:
        if self.backlog.seeds_done:
            return
        chunk = self.backlog.load_seeds()
        self.counts.known(chunk.added)
        self.ledger.record_invalid_seeds(chunk.refused, chunk.last)

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
        deliveries = self.shards.sort(self.broker.take_results())
        decisions = [self._on_result(task, result) for task, result in deliveries]
        accepted: list[tuple[str, int, str]] = []
        if self.shards.waiting and self.broker.drained:
            verdict = self.shards.decide()
            for name, samples, worker, shard_deliveries in verdict.accepted:
                decisions += [self._on_result(task, result) for task, result in shard_deliveries]
                accepted.append((name, samples, worker))
            # Same attempt again: the samples were fetched; the shard holding them was one too many.
            decisions += [Retry(task, 0.0) for task, _result in verdict.refused]
        expired = self.broker.expire_leases()
        decisions += [self._on_expired(lease.task) for lease in expired]
        _log_expired(expired)
        self.broker.promote_due()
        finals = [decision for decision in decisions if isinstance(decision, FinalRecord)]
        retries = [decision for decision in decisions if isinstance(decision, Retry)]
        for retry in retries:
            if retry.delay:
                self.broker.retry_later(retry.task, retry.delay)
            else:
                self.broker.add([retry.task])
        self.ledger.record(finals, retries, accepted)
        self.broker.acknowledge()

    def _on_result(self, task: Task, result: Result) -> Retry | FinalRecord | None:
        """Judge a result; queue the links of a page. None: a robots.txt, applied at once."""
        self.monitor.observe(result)
        decision = judge_result(task, result, self.policy, self._rng)
        if isinstance(decision, Retry):
            logger.debug("master: %s: %s; retry %d in %.1f s", task.url, result.error, task.attempt, decision.delay)
            return decision
        if task.robots:
            self._apply_robots(result)
            return None
        room = self.config.max_urls - self.counts.total if self.config.max_urls else None
        links = links_to_follow(task, result, self.policy, self.scope, room)
        if links:
            self.counts.known(self.backlog.add_links(links, task.depth + 1, task.url))
        return decision

    def _on_expired(self, task: Task) -> Retry | FinalRecord | None:
        decision = judge_expired(task, self.policy)
        if task.robots and isinstance(decision, FinalRecord):
            self._apply_robots(Result(task.id, task.url, Outcome.FAILED, error=decision.error))
            return None
        return decision

    def _apply_robots(self, result: Result) -> None:
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

    def _refuse(self, refusals: list[tuple[Task, str]]) -> None:
        """Record URLs robots.txt does not allow: failed, never fetched, logged as skipped."""
        for task, reason in refusals:
            logger.info("skipped: %s: %s", task.url, reason)
        self.ledger.record([refused(task, reason) for task, reason in refusals], log_failures=False)

    # --- the end -------------------------------------------------------------

    def _linger(self) -> None:
        """Give active workers a moment to hear that the crawl is over.

        The broker keeps serving until it is shut down, so workers that ask
        later are told too.
        """
        deadline = time.monotonic() + self.config.linger_seconds
        while time.monotonic() < deadline and self.broker.workers_not_told(self.policy.lease_seconds):
            time.sleep(LINGER_POLL_SECONDS)

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
