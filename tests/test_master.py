"""The master's loop, driven turn by turn on a fake clock, with a real broker and no workers."""

from __future__ import annotations

import io
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from crawler.backlog import Backlog
from crawler.broker.manager import ManagerBroker
from crawler.errors import UsageError
from crawler.ledger import SHOWN_BAD_SEEDS
from crawler.master import Master, MasterConfig, _stop_requests
from crawler.messages import Outcome, Policy, Result, Task
from crawler.output import CrawlOutput
from crawler.rules import Scope
from crawler.seeds import read_seeds
from tests.helpers import Clock, final_states, manifest_lines


@contextmanager
def make_master(
    tmp_path: Path, seeds: str, clock: Clock | None = None, max_urls: int = 0, **policy: object
) -> Iterator[tuple[Master, ManagerBroker]]:
    chosen = Policy(**{"min_free": 0, **policy})  # type: ignore[arg-type]
    output = CrawlOutput.open(tmp_path, chosen.depth, chosen.lease_seconds)
    broker = ManagerBroker(("127.0.0.1", 0), b"k", chosen, clock=clock or Clock())
    scope = Scope()
    try:
        backlog = Backlog(output.state, read_seeds(io.StringIO(seeds)), scope)
        config = MasterConfig(policy=chosen, show_progress=False, max_urls=max_urls)
        yield Master(config, output, broker, backlog, scope), broker
    finally:
        broker.shutdown()
        output.close()


def test_a_url_whose_leases_keep_expiring_ends_failed_after_capped_attempts(tmp_path: Path) -> None:
    clock = Clock()
    with make_master(tmp_path, "http://example.com/poison\n", clock, retries=2, lease_seconds=1) as (master, broker):
        for attempt in (1, 2, 3):
            master.step()
            [task] = broker.take("doomed-worker", 1, 0)
            assert task.attempt == attempt
            clock.now += 2
        master.step()
        assert master.is_over()
        assert master.counts.failed == 1
    record = final_states(tmp_path)["http://example.com/poison"]
    assert record["status"] == "failed" and record["attempts"] == 3
    assert "died or stalled" in str(record["error"])


def test_retry_results_are_rescheduled_then_fail_with_the_reason(tmp_path: Path) -> None:
    clock = Clock()
    with make_master(tmp_path, "http://example.com/busy\n", clock, retries=1, backoff_base=1) as (master, broker):
        for attempt in (1, 2):
            master.step()
            [task] = broker.take("w", 1, 0)
            assert task.attempt == attempt
            busy = Result(task.id, task.url, Outcome.RETRY, http_status=503, error="HTTP 503", attempt=attempt)
            broker.deliver("w", [busy._replace(retry_after=5)])
            master.step()
            assert master.broker.counts().ready == 0  # waiting for its retry time
            clock.now += 6
        assert master.is_over()
    record = final_states(tmp_path)["http://example.com/busy"]
    assert record["status"] == "failed" and record["attempts"] == 2
    assert record["error"] == "HTTP 503 (gave up after 2 attempts)"


def test_the_crawl_is_over_only_when_nothing_is_pending_leased_or_waiting(tmp_path: Path) -> None:
    with make_master(tmp_path, "http://example.com/a\n") as (master, broker):
        master.step()
        assert not master.is_over()  # ready
        [task] = broker.take("w", 1, 0)
        master.step()
        assert not master.is_over()  # leased
        broker.deliver("w", [Result(task.id, task.url, Outcome.OK, path="a", bytes=1, attempt=1)])
        assert not master.is_over()  # delivered but not yet recorded
        master.step()
        assert master.is_over()
    assert final_states(tmp_path)["http://example.com/a"]["status"] == "ok"


def test_a_seed_list_without_a_valid_url_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    garbage = "".join(f"\x00\x89binary{number}\x07\n" for number in range(5000))
    with (
        pytest.raises(UsageError, match=r"no valid URL in the seeds file \(5000 lines refused; line 1: invalid URL"),
        make_master(tmp_path, garbage),
    ):
        pass
    assert manifest_lines(tmp_path) == []


def test_a_flood_of_bad_seed_lines_is_summarised_in_the_log_but_each_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seeds = "http://example.com/ok\n" + "".join(f"junk {number}\n" for number in range(50))
    with caplog.at_level(logging.WARNING, logger="crawler"), make_master(tmp_path, seeds) as (master, _broker):
        assert master.ledger.invalid_seeds == 50
        assert master.counts.total == 51 and master.counts.failed == 50
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == SHOWN_BAD_SEEDS + 1
    assert warnings[-1] == "seeds: 40 more invalid lines not shown; each is in the manifest as failed"
    lines = manifest_lines(tmp_path)
    assert len(lines) == 50 and all(line["status"] == "failed" for line in lines)


def test_a_page_whose_base_does_not_parse_cannot_crash_the_master(tmp_path: Path) -> None:
    with make_master(tmp_path, "http://example.com/page\n", depth=1) as (master, broker):
        master.step()
        [task] = broker.take("w", 1, 0)
        page = Result(
            task.id,
            task.url,
            Outcome.OK,
            content_type="text/html",
            attempt=1,
            links=("a.png", "http://[::1"),
            base="http://[::1",
            page_url=task.url,
        )
        broker.deliver("w", [page])
        master.step()
        master.step()
        [link] = broker.take("w", 1, 0)
        assert (link.url, link.depth, link.parent) == ("http://example.com/a.png", 1, "http://example.com/page")
    assert final_states(tmp_path)["http://example.com/page"]["status"] == "ok"


def test_links_past_max_urls_are_not_queued(tmp_path: Path) -> None:
    with make_master(tmp_path, "http://example.com/page\n", max_urls=3, depth=1) as (master, broker):
        master.step()
        [task] = broker.take("w", 1, 0)
        links = tuple(f"/{number}.png" for number in range(10))
        page = Result(task.id, task.url, Outcome.OK, content_type="text/html", attempt=1, links=links)
        broker.deliver("w", [page])
        master.step()
        assert master.counts.total == 3


def test_a_first_stop_signal_is_a_request_and_a_second_quits_now() -> None:
    with _stop_requests() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # handled between bytecodes, here and now
        assert stop.wait(5)  # asked to stop, and nothing raised in the middle of a turn
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises long before this ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was


def test_a_shard_is_accepted_whole_and_one_missing_a_sample_is_refused_and_refetched(tmp_path: Path) -> None:
    seeds = "".join(f"http://example.com/{number}.png\n" for number in range(4))
    clock = Clock()
    with make_master(tmp_path, seeds, clock, output_format="webdataset", lease_seconds=5) as (master, broker):
        master.step()
        tasks = broker.take("a", 4, 0)
        assert len(tasks) == 4

        def sample(task: Task, shard: str, count: int, worker: str) -> Result:
            return Result(
                task.id, task.url, Outcome.OK, path=f"{shard}#{task.key}", bytes=1, shard=shard,
                shard_samples=count, worker=worker,
            )  # fmt: skip

        # Worker a's shard of 0 and 1 comes whole: accepted, with its samples, in one record.
        broker.deliver("a", [sample(task, "shards/a.tar", 2, "a") for task in tasks[:2]])
        master.step()
        assert master.counts.ok == 2 and master.output.state.accepted_shards() == {"shards/a.tar"}
        # Worker b's shard of 1, 2 and 3: 1 is already final, so the broker drops it and b's shard
        # is one short. Refused whole: 2 and 3 are handed out again, at the same attempt.
        broker.deliver("b", [sample(task, "shards/b.tar", 3, "b") for task in tasks[1:]])
        master.step()
        assert master.counts.ok == 2 and master.output.state.accepted_shards() == {"shards/a.tar"}
        again = broker.take("c", 4, 0)
        assert sorted(task.id for task in again) == [tasks[2].id, tasks[3].id]
        assert {task.attempt for task in again} == {1}
        broker.deliver("c", [sample(task, "shards/c.tar", 2, "c") for task in again])
        master.step()
        assert master.is_over() and master.counts.ok == 4
        assert master.output.state.accepted_shards() == {"shards/a.tar", "shards/c.tar"}
    paths = {str(line["url"]): str(line["path"]) for line in manifest_lines(tmp_path)}
    assert {path.partition("#")[0] for path in paths.values()} == {"shards/a.tar", "shards/c.tar"}
