"""The worker against a fake link to an in-process frontier: no sockets, HTTP faked by responses."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import pytest
import responses

from crawler.broker.frontier import Frontier
from crawler.broker.manager import ResultQueueView, TaskQueueView
from crawler.errors import ConnectionLost, MasterUnreachable
from crawler.fetch import fetch as real_fetch
from crawler.fetch import make_session
from crawler.messages import Outcome, Policy, Result, Task
from crawler.worker import Worker, WorkerConfig
from tests.helpers import wait_until

URL = "http://images.example/cat.png"


class FakeLink:
    """A WorkerLink that calls the frontier's views directly; it can be told to break."""

    def __init__(self, frontier: Frontier, policy: Policy, worker: str, capacity: int) -> None:
        self._tasks = TaskQueueView(frontier, policy.to_wire(), worker, capacity)
        self._results = ResultQueueView(frontier, worker)
        self.break_next_get = False
        self.renewals = 0

    def policy(self) -> Policy:
        return Policy.from_wire(self._tasks.policy())

    def empty(self) -> bool:
        return self._tasks.empty()

    def get(self, block: bool, timeout: float, limit: int, extra: int) -> list[Task]:
        if self.break_next_get:
            self.break_next_get = False
            raise ConnectionLost("lost the master at fake: connection reset")
        return self._tasks.get(block, timeout, limit, extra)

    def put(self, results: list[Result]) -> None:
        self._results.put(results)

    def renew(self, task_ids: list[int]) -> int:
        self.renewals += 1
        return self._tasks.renew(task_ids)

    def release_all(self, leaving: bool = True) -> int:
        return self._tasks.release(leaving)


class FakeConnector:
    where = "fake"

    def __init__(self, frontier: Frontier, policy: Policy, unreachable: bool = False) -> None:
        self.frontier = frontier
        self.policy = policy
        self.unreachable = unreachable
        self.links: list[FakeLink] = []

    def __call__(self, worker: str, capacity: int) -> FakeLink:
        if self.unreachable:
            raise MasterUnreachable("cannot reach the master at fake")
        self.links.append(FakeLink(self.frontier, self.policy, worker, capacity))
        return self.links[-1]


def make_worker(tmp_path: Path, connector: FakeConnector | None = None, **config: object) -> Worker:
    connector = connector or FakeConnector(Frontier(30), Policy(min_free=0))
    settings = {"output": tmp_path, "threads": 2, "name": "w1", **config}
    return Worker(WorkerConfig(**settings), connector)  # type: ignore[arg-type]


def images(count: int) -> list[Task]:
    return [Task(number, f"http://images.example/{number}.png", 1) for number in range(1, count + 1)]


def collect_results(frontier: Frontier, count: int) -> dict[int, Result]:
    """Wait for ``count`` results to reach the frontier; return them by task id."""
    results: dict[int, Result] = {}

    def arrived() -> bool:
        results.update((task.id, result) for task, result in frontier.take_results())
        return len(results) >= count

    wait_until(arrived, f"{count} results")
    return results


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list[int]]:
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(worker.run()), daemon=True)
    thread.start()
    return thread, status


@responses.activate
def test_the_worker_downloads_what_it_is_given_and_stops_when_the_crawl_is_over(tmp_path: Path) -> None:
    frontier = Frontier(30)
    tasks = images(5)
    for task in tasks:
        responses.get(task.url, body=f"png {task.id}".encode(), content_type="image/png")
    frontier.add(tasks)
    thread, status = run_in_thread(make_worker(tmp_path, FakeConnector(frontier, Policy(min_free=0))))
    delivered = list(collect_results(frontier, 5).values())
    frontier.finish()
    thread.join(10)
    assert status == [0]
    assert sorted((result.id, result.outcome, result.bytes) for result in delivered) == [
        (number, Outcome.OK, 5) for number in range(1, 6)
    ]
    assert all((tmp_path / str(result.path)).read_bytes() == f"png {result.id}".encode() for result in delivered)


@responses.activate
def test_a_lost_connection_is_reconnected_and_the_work_goes_on(tmp_path: Path) -> None:
    frontier = Frontier(30)
    [task] = images(1)
    responses.get(task.url, body=b"png")
    connector = FakeConnector(frontier, Policy(min_free=0))
    worker = make_worker(tmp_path, connector)
    thread, status = run_in_thread(worker)
    wait_until(lambda: len(connector.links) == 1, "the first connection")
    connector.links[0].break_next_get = True
    wait_until(lambda: len(connector.links) == 2, "a reconnection")
    frontier.add([task])
    collect_results(frontier, 1)  # over the new link
    frontier.finish()
    thread.join(10)
    assert status == [0]


def test_a_master_never_reached_is_one_error_after_the_connect_timeout(tmp_path: Path) -> None:
    connector = FakeConnector(Frontier(30), Policy(min_free=0), unreachable=True)
    with pytest.raises(MasterUnreachable, match=r"no master at fake after 0\.2 s"):
        make_worker(tmp_path, connector, connect_seconds=0.2).run()


def test_leases_are_renewed_while_a_download_lasts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def slow_fetch(session: object, task: Task, *args: object) -> Result:
        release.wait(20)
        return Result(task.id, task.url, Outcome.OK, attempt=task.attempt)

    monkeypatch.setattr("crawler.worker.fetch", slow_fetch)
    frontier = Frontier(0.3)
    frontier.add(images(1))
    connector = FakeConnector(frontier, Policy(lease_seconds=0.3, min_free=0))
    thread, status = run_in_thread(make_worker(tmp_path, connector))
    wait_until(lambda: bool(connector.links) and connector.links[0].renewals >= 3, "three heartbeats")
    assert frontier.expire_leases() == []  # renewed, so never overdue
    release.set()
    collect_results(frontier, 1)
    frontier.finish()
    thread.join(10)
    assert status == [0]


def broken_fetch(*args: object) -> None:
    raise RuntimeError("fetch blew up")


def test_a_download_that_raises_becomes_a_failed_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crawler.worker.fetch", broken_fetch)
    worker = make_worker(tmp_path)
    with make_session(worker.policy) as session:
        result = worker.download(session, Task(3, URL, 2))
    assert (result.id, result.url, result.outcome, result.worker) == (3, URL, "failed", "w1")
    assert result.error == "unexpected error: RuntimeError: fetch blew up"


@responses.activate
def test_a_download_thread_survives_a_raising_fetch_and_the_crawl_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    calls: queue.Queue[int] = queue.Queue()

    def fails_once_then_works(session: object, task: Task, *args: object) -> object:
        calls.put(task.id)
        if task.id == 1:
            raise RuntimeError("fetch blew up")
        return real_fetch(session, task, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("crawler.worker.fetch", fails_once_then_works)
    responses.get("http://images.example/2.png", body=b"png")
    frontier = Frontier(30)
    frontier.add(images(2))
    # One thread: the second URL is fetched by the thread the first one's error went through.
    thread, status = run_in_thread(make_worker(tmp_path, FakeConnector(frontier, Policy(min_free=0)), threads=1))
    results = collect_results(frontier, 2)
    frontier.finish()
    thread.join(10)
    assert status == [0]
    assert (results[1].outcome, results[1].error) == (Outcome.FAILED, "unexpected error: RuntimeError: fetch blew up")
    assert (results[2].outcome, results[2].bytes) == (Outcome.OK, 3)


@responses.activate
def test_a_worker_short_of_space_hands_its_urls_back_and_resumes_when_space_returns(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 700 * 1024)  # of 1 MiB: below a floor of 512 KiB
    frontier = Frontier(30)
    tasks = images(3)
    for task in tasks:
        responses.get(task.url, body=b"png")
    frontier.add(tasks)
    worker = make_worker(small_disk, FakeConnector(frontier, Policy(min_free=512 * 1024)))
    with caplog.at_level(logging.WARNING, logger="crawler"):
        thread, status = run_in_thread(worker)
        wait_until(lambda: "waiting for space" in caplog.text, "the worker to pause")
        assert frontier.counts()[:3] == (3, 3, 0)  # all ready for others, none leased, none fetched
        assert len(responses.calls) == 0
        filler.unlink()
        results = collect_results(frontier, 3)
        frontier.finish()
        thread.join(10)
    assert status == [0]
    assert all(result.outcome == Outcome.OK for result in results.values())
    assert "space is back" in caplog.text
