"""robots.txt rules on the master, without workers."""

from __future__ import annotations

import pytest

from crawler.messages import Outcome, Result, Task
from crawler.robots import MAX_CRAWL_DELAY, RobotsGate

ROBOTS = "User-agent: *\nDisallow: /private/\nDisallow: /*.gif$\nCrawl-delay: 2\n"


def tasks(*paths: str, host: str = "http://h.example") -> list[Task]:
    return [Task(number, host + path, 1, depth=1) for number, path in enumerate(paths, start=1)]


def test_urls_wait_for_robots_then_are_allowed_or_refused() -> None:
    gate = RobotsGate("crawler/test")
    allowed, refused, fetch_first = gate.admit(tasks("/a.png", "/private/x.html", "/b.gif", "/c.gif?x=1"))
    assert allowed == [] and refused == []
    [robots] = fetch_first
    assert robots.robots and robots.url == "http://h.example/robots.txt" and robots.id < 0
    assert gate.held_count() == 4
    verdict = gate.learn(Result(robots.id, robots.url, Outcome.OK, robots=ROBOTS))
    assert [task.url for task in verdict.allowed] == ["http://h.example/a.png", "http://h.example/c.gif?x=1"]
    assert [(task.url, reason) for task, reason in verdict.refused] == [
        ("http://h.example/private/x.html", "disallowed by robots.txt"),
        ("http://h.example/b.gif", "disallowed by robots.txt"),
    ]
    assert verdict.crawl_delay == 2.0 and gate.held_count() == 0
    later = gate.admit(tasks("/private/y", "/d.png"))
    assert [task.url for task in later[0]] == ["http://h.example/d.png"] and len(later[1]) == 1 and not later[2]


def test_one_robots_fetch_per_host() -> None:
    gate = RobotsGate("crawler/test")
    first = gate.admit(tasks("/a", "/b") + tasks("/c", host="http://other.example:81"))
    assert sorted(task.url for task in first[2]) == [
        "http://h.example/robots.txt",
        "http://other.example:81/robots.txt",
    ]
    assert gate.admit(tasks("/d"))[2] == []


def test_missing_robots_allows_everything_and_unreachable_refuses_everything() -> None:
    gate = RobotsGate("crawler/test")
    [missing] = gate.admit(tasks("/a"))[2]
    assert [
        t.url for t in gate.learn(Result(missing.id, missing.url, Outcome.OK, http_status=404, robots="")).allowed
    ] == ["http://h.example/a"]
    [down] = gate.admit(tasks("/b", host="http://down.example"))[2]
    verdict = gate.learn(Result(down.id, down.url, Outcome.RETRY, error="HTTP 503"))
    assert verdict.allowed == [] and "could not be fetched" in verdict.refused[0][1]


@pytest.mark.parametrize(("asked", "applied"), [("1e308", MAX_CRAWL_DELAY), ("61", MAX_CRAWL_DELAY), ("nan", 0.0)])
def test_a_huge_or_meaningless_crawl_delay_is_capped(asked: str, applied: float) -> None:
    gate = RobotsGate("crawler/test")
    [robots] = gate.admit(tasks("/a.png"))[2]
    verdict = gate.learn(Result(robots.id, robots.url, Outcome.OK, robots=f"User-agent: *\nCrawl-delay: {asked}\n"))
    assert verdict.crawl_delay == applied
    assert [task.url for task in verdict.allowed] == ["http://h.example/a.png"]
