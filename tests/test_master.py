"""The master's bookkeeping, driven without workers on a fake clock."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from crawler.errors import UsageError
from crawler.frontier import Frontier
from crawler.master import SHOWN_BAD_SEEDS, Master, MasterConfig
from crawler.messages import Policy, Result


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_master(tmp_path: Path, seeds: str, **policy: object) -> Master:
    config = MasterConfig(
        output=tmp_path, bind=("127.0.0.1", 0), authkey=b"k", policy=Policy(**policy), show_progress=False
    )  # type: ignore[arg-type]
    return Master(config, io.StringIO(seeds))


def last_lines(root: Path) -> dict[str, dict[str, object]]:
    lines = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    return {str(line["url"]): line for line in lines}


def test_a_url_whose_leases_keep_expiring_ends_failed_after_capped_attempts(tmp_path: Path) -> None:
    clock = Clock()
    with make_master(tmp_path, "http://example.com/poison\n", retries=2, lease_seconds=1) as master:
        master.frontier = Frontier(1, clock=clock)
        master._refill_window()
        for attempt in (1, 2, 3):
            [task] = master.frontier.take("doomed-worker", 1, 0)
            assert task.attempt == attempt
            clock.now += 2
            master._collect()
        assert master.frontier.in_play_count() == 0
        assert master.counts.failed == 1
    record = last_lines(tmp_path)["http://example.com/poison"]
    assert record["status"] == "failed" and record["attempts"] == 3
    assert "died or stalled" in str(record["error"])


def test_retry_results_are_rescheduled_then_fail_with_the_reason(tmp_path: Path) -> None:
    clock = Clock()
    with make_master(tmp_path, "http://example.com/busy\n", retries=1, backoff_base=1) as master:
        master.frontier = Frontier(30, clock=clock)
        master._refill_window()
        for attempt in (1, 2):
            [task] = master.frontier.take("w", 1, 0)
            assert task.attempt == attempt
            master.frontier.deliver(
                "w",
                [Result(task.id, task.url, "retry", http_status=503, error="HTTP 503", attempt=attempt, retry_after=5)],
            )
            master._collect()
            assert master.frontier.ready_count() == 0  # waiting for its retry time
            clock.now += 6
            master.frontier.promote_due()
    record = last_lines(tmp_path)["http://example.com/busy"]
    assert record["status"] == "failed" and record["attempts"] == 2
    assert record["error"] == "HTTP 503 (gave up after 2 attempts)"


def test_the_crawl_is_over_only_when_nothing_is_pending_leased_or_waiting(tmp_path: Path) -> None:
    with make_master(tmp_path, "http://example.com/a\n") as master:
        master._refill_window()
        assert not master._is_crawl_over()
        [task] = master.frontier.take("w", 1, 0)
        master._refill_window()
        assert not master._is_crawl_over()  # leased
        master.frontier.deliver("w", [Result(task.id, task.url, "ok", path="a", bytes=1, attempt=1)])
        assert not master._is_crawl_over()  # delivered but not yet recorded
        master._collect()
        master._refill_window()
        assert master._is_crawl_over()


def test_a_seed_list_without_a_valid_url_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    garbage = "".join(f"\x00\x89binary{number}\x07\n" for number in range(5000))
    with pytest.raises(UsageError, match=r"no valid URL in the seeds file \(5000 lines refused; line 1: invalid URL"):
        make_master(tmp_path, garbage)
    assert not (tmp_path / "manifest.jsonl").read_text()


def test_a_flood_of_bad_seed_lines_is_summarised_in_the_log_but_each_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seeds = "http://example.com/ok\n" + "".join(f"junk {number}\n" for number in range(50))
    with caplog.at_level(logging.WARNING, logger="crawler"), make_master(tmp_path, seeds) as master:
        assert master.invalid_seeds == 50
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == SHOWN_BAD_SEEDS + 1
    assert warnings[-1] == "seeds: 40 more invalid lines not shown; each is in the manifest as failed"
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 50 and all(line["status"] == "failed" for line in lines)


def test_a_page_whose_base_does_not_parse_cannot_crash_the_master(tmp_path: Path) -> None:
    with make_master(tmp_path, "http://example.com/page\n", depth=1) as master:
        master._refill_window()
        [task] = master.frontier.take("w", 1, 0)
        page = Result(
            task.id,
            task.url,
            "ok",
            content_type="text/html",
            attempt=1,
            links=("a.png", "http://[::1"),
            base="http://[::1",
            page_url=task.url,
        )
        master.frontier.deliver("w", [page])
        master._collect()
        assert master.state.counts() == {"ok": 1, "pending": 1}
        master._refill_window()
        [link] = master.frontier.take("w", 1, 0)
        assert link.url == "http://example.com/a.png" and link.depth == 1
