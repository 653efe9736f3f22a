"""Whole-download limits and hostile targets, against the real loopback server.

``responses`` fakes requests' adapter, so what happens below it (urllib3
parsing a redirect's host, a socket that trickles) is tested here for real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.fetch import fetch, make_session
from crawler.messages import Policy, Result, Task
from crawler.storage import OutputFolder
from crawler.transfer import Transfer, TransferAborted, Watchdog
from tests.site import Site


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    dog = Watchdog(every=0.1)
    yield dog
    dog.close()


def attempt(url: str, out: Path, watchdog: Watchdog | None = None, **policy: object) -> tuple[Result, float]:
    chosen = Policy(**policy)  # type: ignore[arg-type]
    started = time.monotonic()
    with make_session(chosen) as session:
        result = fetch(session, Task(1, url, 1), chosen, OutputFolder(out), "w1", watchdog)
    return result, time.monotonic() - started


def test_a_body_trickled_inside_the_read_timeout_stops_at_max_time(tmp_path: Path, site: Site) -> None:
    url = site.add("/slow.bin", body=b"x" * 1000, trickle=0.05)  # 50 s in all; each byte well inside --timeout
    result, took = attempt(url, tmp_path, timeout=3, max_time=1.5)
    assert (result.outcome, result.error) == ("retry", "took longer than --max-time 1.5 s")
    assert 1.5 <= took < 4
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


def test_headers_trickled_a_byte_at_a_time_are_cut_by_the_watchdog(
    tmp_path: Path, site: Site, watchdog: Watchdog
) -> None:
    url = site.add("/slow-head.bin", body=b"x" * 10, trickle=0.05, trickle_headers=True)
    result, took = attempt(url, tmp_path, watchdog, timeout=3, max_time=1.0)
    assert (result.outcome, result.error) == ("retry", "took longer than --max-time 1 s")
    assert 1.0 <= took < 3


def test_a_transfer_below_min_speed_is_stopped(tmp_path: Path, site: Site, watchdog: Watchdog) -> None:
    url = site.add("/crawl.bin", body=b"x" * 1000, trickle=0.02)  # about 50 bytes/s
    result, took = attempt(url, tmp_path, watchdog, min_speed=500, min_speed_time=1)
    assert (result.outcome, result.error) == ("retry", "slower than --min-speed 500 bytes/s for 1 s")
    assert 1 <= took < 3


def test_a_fast_transfer_is_untouched_by_the_limits(tmp_path: Path, site: Site, watchdog: Watchdog) -> None:
    url = site.add("/fast.bin", body=b"y" * 200_000)
    result, _took = attempt(url, tmp_path, watchdog, max_time=5, min_speed=1000, min_speed_time=0.5)
    assert (result.outcome, result.bytes) == ("ok", 200_000)


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://:8080/x", "bad redirect target: "),
        ("http://[::1", "bad redirect target: "),
        (f"http://{'a' * 64}.example/", ""),
    ],
)
def test_a_redirect_that_can_never_be_followed_fails_at_once(
    tmp_path: Path, site: Site, location: str, reason: str
) -> None:
    url = site.add("/moved", status=302, headers={"Location": location})
    result, _took = attempt(url, tmp_path)
    assert result.outcome == "failed", result.error
    assert result.error is not None and result.error.startswith(reason), result.error


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_min_speed_is_measured_over_a_window_not_from_the_start() -> None:
    clock = Clock()
    transfer = Transfer(0, 100, 10, clock=clock)
    for _ in range(10):  # 10 s at 1,000 bytes/s
        clock.now += 1
        transfer.received(1000)
    assert transfer.check() is None
    clock.now += 9.9  # then nearly nothing: the fast start must not hide the stall
    transfer.received(10)
    clock.now += 0.2
    assert transfer.check() == "slower than --min-speed 100 bytes/s for 10 s"
    with pytest.raises(TransferAborted):
        transfer.received(1)


def test_a_cut_after_the_transfer_ended_touches_nothing() -> None:
    class Connection:
        sock = None

    transfer = Transfer(1, 0, 30, clock=Clock())
    with transfer:
        transfer.attach(Connection())
    transfer.cut("too late")
    assert transfer.aborted is None
