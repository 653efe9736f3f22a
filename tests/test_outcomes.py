"""What a result or an expired lease becomes: plain decisions, no sockets, threads or clock."""

from __future__ import annotations

import random

from crawler.messages import Outcome, Policy, Result, Status, Task
from crawler.outcomes import Retry, judge_expired, judge_result, links_to_follow, refused, retry_delay
from crawler.rules import Scope
from crawler.state import FinalRecord

PAGE = Task(4, "http://example.com/dir/page", 2, depth=1, parent="http://example.com/")


def test_a_transient_failure_with_attempts_left_is_retried_with_backoff() -> None:
    result = Result(4, PAGE.url, Outcome.RETRY, error="HTTP 503", attempt=2, retry_after=7)
    decision = judge_result(PAGE, result, Policy(retries=3), random.Random(1))
    assert isinstance(decision, Retry)
    assert (decision.task.attempt, decision.attempts_made, decision.delay) == (3, 2, 7)
    assert decision.task._replace(attempt=2) == PAGE


def test_a_transient_failure_on_the_last_attempt_is_final_with_the_count() -> None:
    result = Result(4, PAGE.url, Outcome.RETRY, error="HTTP 503", http_status=503, attempt=2)
    decision = judge_result(PAGE, result, Policy(retries=1), random.Random(1))
    assert isinstance(decision, FinalRecord)
    assert (decision.status, decision.error, decision.attempts) == (
        Status.FAILED,
        "HTTP 503 (gave up after 2 attempts)",
        2,
    )
    assert (decision.depth, decision.parent, decision.bytes) == (1, "http://example.com/", None)


def test_an_ok_page_is_final_and_marks_its_links_followed_only_above_the_depth() -> None:
    result = Result(4, PAGE.url, Outcome.OK, content_type="text/html", bytes=10, attempt=2, worker="w1")
    deeper = judge_result(PAGE, result, Policy(depth=2), random.Random(1))
    at_depth = judge_result(PAGE, result, Policy(depth=1), random.Random(1))
    assert isinstance(deeper, FinalRecord) and isinstance(at_depth, FinalRecord)
    assert (deeper.status, deeper.bytes, deeper.worker, deeper.links_followed) == (Status.OK, 10, "w1", True)
    assert not at_depth.links_followed


def test_an_expired_lease_is_handed_out_again_at_once_then_given_up() -> None:
    again = judge_expired(PAGE, Policy(retries=3))
    assert again == Retry(PAGE._replace(attempt=3), 0.0)
    final = judge_expired(PAGE, Policy(retries=1))
    assert isinstance(final, FinalRecord)
    assert final.status == Status.FAILED and final.attempts == 2 and "died or stalled" in str(final.error)


def test_a_refusal_counts_no_attempt_of_this_run() -> None:
    record = refused(PAGE, "disallowed by robots.txt")
    assert (record.status, record.attempts, record.error, record.kept) == (
        Status.FAILED,
        1,
        "disallowed by robots.txt",
        False,
    )


def test_links_are_followed_in_scope_above_the_depth_within_the_room() -> None:
    page = Result(4, PAGE.url, Outcome.OK, links=("a.png", "b.png", "http://elsewhere.org/c.png"), page_url=PAGE.url)
    scope = Scope(seed_hosts={"example.com"})
    assert links_to_follow(PAGE, page, Policy(depth=2), scope, None) == [
        "http://example.com/dir/a.png",
        "http://example.com/dir/b.png",
    ]
    assert links_to_follow(PAGE, page, Policy(depth=2), scope, 1) == ["http://example.com/dir/a.png"]
    assert links_to_follow(PAGE, page, Policy(depth=1), scope, None) == []  # at the depth: a leaf


def test_retry_delay_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    policy = Policy(backoff_base=1.0, backoff_max=60.0, retry_after_max=120.0)
    rng = random.Random(1)
    for attempt in range(1, 6):
        delay = retry_delay(attempt, None, policy, rng)
        assert 2 ** (attempt - 1) / 2 <= delay <= 2 ** (attempt - 1)
    assert retry_delay(20, None, policy, rng) <= 60.0
    assert retry_delay(1, 90.0, policy, rng) == 90.0
    assert retry_delay(1, 10_000.0, policy, rng) == 120.0
