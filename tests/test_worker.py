"""The worker's download threads, without a master: every task ends in a result."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import responses

from crawler.fetch import make_session
from crawler.messages import Task
from crawler.worker import Worker, WorkerConfig

URL = "http://images.example/cat.png"


def make_worker(tmp_path: Path) -> Worker:
    return Worker(WorkerConfig(connect=("127.0.0.1", 9), authkey=b"k", output=tmp_path, threads=2, name="w1"))


def broken_fetch(*args: object) -> None:
    raise RuntimeError("fetch blew up")


def test_a_download_that_raises_becomes_a_failed_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crawler.worker.fetch", broken_fetch)
    worker = make_worker(tmp_path)
    with make_session(worker.policy) as session:
        result = worker.download(session, Task(3, URL, 2))
    assert (result.id, result.url, result.outcome, result.worker) == (3, URL, "failed", "w1")
    assert result.error == "unexpected error: RuntimeError: fetch blew up"


def test_a_download_thread_survives_a_raising_fetch_and_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fails_once_then_works(session: object, task: Task, *args: object) -> object:
        calls.append(task.id)
        if len(calls) == 1:
            raise RuntimeError("fetch blew up")
        return real_fetch(session, task, *args)

    from crawler.worker import fetch as real_fetch

    monkeypatch.setattr("crawler.worker.fetch", fails_once_then_works)
    worker = make_worker(tmp_path)
    worker._slots.take(2)
    thread = threading.Thread(target=worker._download_loop, daemon=True)
    with responses.RequestsMock() as mock:
        mock.get(URL, body=b"png")
        thread.start()
        worker._downloads.put(Task(1, URL, 1))
        worker._downloads.put(Task(2, URL, 1))
        first = worker._results.get(timeout=10)
        second = worker._results.get(timeout=10)
        worker._downloads.put(None)
        thread.join(10)
    assert (first.id, first.outcome) == (1, "failed")
    assert (second.id, second.outcome, second.bytes) == (2, "ok", 3)  # the same thread went on
    assert not thread.is_alive()
    assert worker._slots.in_use() == 0
