"""Seeds into the state, pending rows out into the window."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from crawler.backlog import SEED_CHUNK, WINDOW_LOW, WINDOW_MAX, Backlog, window_wants_more
from crawler.broker import WindowCounts
from crawler.errors import UsageError
from crawler.rules import Scope
from crawler.seeds import read_seeds
from crawler.state import CrawlState


def backlog(tmp_path: Path, seeds: str) -> tuple[Backlog, CrawlState, Scope]:
    state, scope = CrawlState(tmp_path), Scope()
    return Backlog(state, read_seeds(io.StringIO(seeds)), scope), state, scope


def is_exhausted(seeds: Backlog) -> bool:
    """Read afresh each time: a bare property test would be narrowed by mypy across the calls that change it."""
    return seeds.exhausted


def test_seeds_enter_the_state_a_chunk_at_a_time_and_name_the_scope(tmp_path: Path) -> None:
    urls = "".join(f"http://h{number % 3}.example/{number}\n" for number in range(SEED_CHUNK + 5))
    seeds, state, scope = backlog(tmp_path, urls + "not a url\n")
    first = seeds.load_seeds()
    assert (first.added, first.refused, first.last) == (SEED_CHUNK, [], False)
    second = seeds.load_seeds()
    assert (second.added, [line.line_number for line in second.refused], second.last) == (5, [SEED_CHUNK + 6], True)
    assert scope.seed_hosts == {"h0.example", "h1.example", "h2.example"}
    assert sum(state.counts().values()) == SEED_CHUNK + 5


def test_a_list_without_a_valid_url_records_nothing(tmp_path: Path) -> None:
    seeds, state, _scope = backlog(tmp_path, "ftp://a/\n\x00\x01\n")
    with pytest.raises(UsageError, match=r"\(2 lines refused; line 1: invalid URL: scheme ftp:"):
        seeds.load_seeds()
    assert state.counts() == {}


def test_pending_rows_come_out_in_id_order_then_the_backlog_is_exhausted(tmp_path: Path) -> None:
    seeds, _state, _scope = backlog(tmp_path, "http://a/1\nhttp://a/2\nhttp://a/3\n")
    seeds.load_seeds()
    assert [task.url for task in seeds.next_tasks(2)] == ["http://a/1", "http://a/2"]
    assert [(task.url, task.attempt) for task in seeds.next_tasks(2)] == [("http://a/3", 1)]
    assert not is_exhausted(seeds)  # it has not looked past the end yet
    assert seeds.next_tasks(2) == [] and is_exhausted(seeds)


def test_links_found_later_make_it_not_exhausted_again(tmp_path: Path) -> None:
    seeds, _state, _scope = backlog(tmp_path, "http://a/\n")
    seeds.load_seeds()
    [page] = seeds.next_tasks()
    assert seeds.next_tasks() == [] and is_exhausted(seeds)
    assert seeds.add_links(["http://a/x.png", "http://a/"], 1, page.url) == 1  # the page itself is known
    assert not is_exhausted(seeds)
    [link] = seeds.next_tasks()
    assert (link.url, link.depth, link.parent) == ("http://a/x.png", 1, "http://a/")


def test_the_window_wants_more_when_low_or_when_politeness_starves_it() -> None:
    assert window_wants_more(WindowCounts(ready=WINDOW_LOW - 1, in_play=50_000, leased=0, starved=False))
    assert not window_wants_more(WindowCounts(ready=WINDOW_LOW, in_play=50_000, leased=0, starved=False))
    assert window_wants_more(WindowCounts(ready=WINDOW_LOW, in_play=WINDOW_MAX - 1, leased=0, starved=True))
    assert not window_wants_more(WindowCounts(ready=WINDOW_LOW, in_play=WINDOW_MAX, leased=0, starved=True))
