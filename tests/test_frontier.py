"""Leases, results and the end of the crawl, on a fake clock."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from crawler.broker.frontier import Frontier
from crawler.broker.manager import ResultQueueView, TaskQueueView
from crawler.messages import Outcome, Result, Task


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tasks(count: int) -> list[Task]:
    return [Task(number, f"http://example.com/{number}", 1) for number in range(1, count + 1)]


def ok(task: Task) -> Result:
    return Result(task.id, task.url, Outcome.OK, attempt=task.attempt)


def test_get_hands_out_a_batch_and_leases_it() -> None:
    frontier = Frontier(lease_seconds=30)
    frontier.add(tasks(5))
    view = TaskQueueView(frontier, {}, "w1", capacity=3)
    assert [task.id for task in view.get(True, 0)] == [1, 2, 3]
    assert [task.id for task in view.get(True, 0, 1)] == [4]
    assert frontier.counts().leased == 4


def test_get_raises_queue_empty_when_nothing_is_ready() -> None:
    view = TaskQueueView(Frontier(lease_seconds=30), {}, "w1", capacity=3)
    with pytest.raises(queue.Empty):
        view.get(True, 0.01)
    with pytest.raises(queue.Empty):
        view.get(False)


def test_empty_is_false_until_the_master_says_the_crawl_is_over() -> None:
    frontier = Frontier(lease_seconds=30)
    view = TaskQueueView(frontier, {}, "w1", capacity=3)
    assert not view.empty()  # nothing queued, but the master has not said it is over
    frontier.finish()
    assert view.empty()


class WatchedClock:
    """The real clock, which also says when the frontier last read it."""

    def __init__(self) -> None:
        self.read = threading.Event()

    def __call__(self) -> float:
        self.read.set()
        return time.monotonic()


def test_a_blocked_get_wakes_when_the_crawl_ends() -> None:
    clock = WatchedClock()
    # Gets may block a minute here: only finish()'s wake-up can end this one within the test.
    frontier = Frontier(lease_seconds=30, clock=clock, max_block=60)
    view = TaskQueueView(frontier, {}, "w1", capacity=1)
    raised: list[BaseException] = []

    def blocked_get() -> None:
        try:
            view.get(True, 60)
        except queue.Empty as error:
            raised.append(error)

    clock.read.clear()
    thread = threading.Thread(target=blocked_get)
    thread.start()
    # get reads the clock holding the frontier's lock, which it lets go only to wait:
    # finish() below can only run once get is waiting.
    assert clock.read.wait(5)
    frontier.finish()
    thread.join(5)
    assert not thread.is_alive() and raised


def test_an_expired_lease_comes_back_and_renewal_prevents_it() -> None:
    clock = Clock()
    frontier = Frontier(lease_seconds=30, clock=clock)
    frontier.add(tasks(2))
    slow = TaskQueueView(frontier, {}, "slow", capacity=1)
    dead = TaskQueueView(frontier, {}, "dead", capacity=1)
    [held] = slow.get(True, 0)
    dead.get(True, 0)
    clock.now += 20
    assert slow.renew([held.id, 2]) == 1  # 2 is dead's: not renewed by another worker
    clock.now += 20
    expired = frontier.expire_leases()
    assert [(lease.task.id, lease.worker) for lease in expired] == [(2, "dead")]
    assert frontier.counts().leased == 1


def test_a_late_result_after_expiry_is_still_taken_once() -> None:
    clock = Clock()
    frontier = Frontier(lease_seconds=30, clock=clock)
    [task] = tasks(1)
    frontier.add([task])
    TaskQueueView(frontier, {}, "stopped", capacity=1).get(True, 0)
    clock.now += 31
    [expired] = frontier.expire_leases()
    frontier.add([expired.task._replace(attempt=2)])
    second = TaskQueueView(frontier, {}, "second", capacity=1).get(True, 0)
    ResultQueueView(frontier, "stopped").put([ok(task)])  # the stopped worker wakes up
    ResultQueueView(frontier, "second").put([ok(second[0])])  # a duplicate now
    [(answered, result)] = frontier.take_results()
    assert (answered.id, answered.attempt, result.attempt) == (task.id, 2, 1)  # in place of the re-issued attempt
    assert frontier.take_results() == [] and frontier.counts().in_play == 0


def test_results_for_unknown_ids_are_ignored() -> None:
    frontier = Frontier(lease_seconds=30)
    ResultQueueView(frontier, "w").put([Result(99, "http://x/", Outcome.OK)])
    assert frontier.take_results() == []


def test_release_gives_tasks_back_at_the_front_without_an_attempt() -> None:
    frontier = Frontier(lease_seconds=30)
    frontier.add(tasks(3))
    quitter = TaskQueueView(frontier, {}, "quitter", capacity=2)
    quitter.get(True, 0)
    assert quitter.release() == 2
    taken = TaskQueueView(frontier, {}, "other", capacity=3).get(True, 0)
    assert sorted(task.id for task in taken) == [1, 2, 3]
    assert all(task.attempt == 1 for task in taken)


def test_retries_wait_for_their_time() -> None:
    clock = Clock()
    frontier = Frontier(lease_seconds=30, clock=clock)
    frontier.retry_later(Task(1, "http://x/", 2), delay=5)
    frontier.promote_due()
    assert frontier.counts()[:2] == (0, 1)  # ready, in play
    clock.now += 5
    frontier.promote_due()
    assert frontier.counts().ready == 1


def test_workers_not_told_lists_active_workers_until_they_ask() -> None:
    frontier = Frontier(lease_seconds=30)
    view = TaskQueueView(frontier, {}, "w1", capacity=1)
    with pytest.raises(queue.Empty):
        view.get(False)
    frontier.finish()
    assert frontier.workers_not_told(active_within=30) == ["w1"]
    assert view.empty()
    assert frontier.workers_not_told(active_within=30) == []


def host_tasks(host: str, first: int, count: int) -> list[Task]:
    return [Task(number, f"http://{host}/{number}", 1) for number in range(first, first + count)]


def test_hosts_are_served_round_robin() -> None:
    frontier = Frontier(lease_seconds=30)
    frontier.add(host_tasks("slow.example", 1, 5) + host_tasks("a.example", 10, 2) + host_tasks("b.example", 20, 2))
    taken = frontier.take("w", 6, 0)
    assert [task.url.split("/")[2] for task in taken] == [
        "slow.example", "a.example", "b.example", "slow.example", "a.example", "b.example",
    ]  # fmt: skip


def test_per_host_cap_counts_leases_of_all_workers() -> None:
    frontier = Frontier(lease_seconds=30, per_host=2)
    frontier.add(host_tasks("h.example", 1, 5) + host_tasks("other.example", 10, 1))
    first = frontier.take("w1", 10, 0)
    assert sorted(task.id for task in first) == [1, 2, 10]
    assert frontier.take("w2", 10, 0) == [] and frontier.counts().starved
    ResultQueueView(frontier, "w1").put([ok(first[0])])
    assert [task.id for task in frontier.take("w2", 10, 0)] == [3]
    frontier.release("w1")  # gives back task 2 and the other host's task
    assert sorted(task.id for task in frontier.take("w3", 10, 0)) == [2, 10]


def test_a_host_delay_spaces_hand_outs() -> None:
    clock = Clock()
    frontier = Frontier(lease_seconds=30, clock=clock)
    frontier.set_host_delay("h.example", 2.0)
    frontier.add(host_tasks("h.example", 1, 3))
    assert [task.id for task in frontier.take("w", 10, 0)] == [1]
    clock.now += 1.0
    assert frontier.take("w", 10, 0) == []
    clock.now += 1.0
    assert [task.id for task in frontier.take("w", 10, 0)] == [2]


def test_prefetch_is_granted_only_while_every_live_worker_can_still_fill_its_threads() -> None:
    frontier = Frontier(lease_seconds=30)
    frontier.connect("w1", 4)
    frontier.connect("w2", 4)
    frontier.add(tasks(20))
    # 20 ready: after 4 + 4, 12 remain for the 8 threads of the live workers.
    assert len(TaskQueueView(frontier, {}, "w1", 4).get(True, 0, 4, 4)) == 8
    # 12 ready: after 4 + 4, only 4 would remain: the queued part is refused.
    assert len(TaskQueueView(frontier, {}, "w2", 4).get(True, 0, 4, 4)) == 4
    # The end of the crawl: what is left goes to idle threads only, never queued behind busy ones.
    assert len(frontier.take("w1", 2, 0, 4)) == 2


@pytest.mark.parametrize("politeness", [{"per_host": 8}, {"host_delay": 0.5}])
def test_no_prefetch_under_politeness(politeness: dict[str, float]) -> None:
    frontier = Frontier(lease_seconds=30, **politeness)  # type: ignore[arg-type]
    frontier.connect("w", 2)
    for host in range(10):  # enough hosts that the cap or the pace alone would allow more
        frontier.add(host_tasks(f"h{host}.example", 100 * host, 10))
    assert len(frontier.take("w", 2, 0, 2)) == 2


def test_a_crawl_delay_from_robots_turns_prefetch_off() -> None:
    frontier = Frontier(lease_seconds=30)
    frontier.connect("w", 2)
    frontier.add(tasks(100))
    assert len(frontier.take("w", 2, 0, 2)) == 4
    frontier.set_host_delay("elsewhere.example", 1.0)
    assert len(frontier.take("w", 2, 0, 2)) == 2


def test_a_result_comes_back_with_the_task_it_answers() -> None:
    frontier = Frontier(lease_seconds=30)
    page = Task(5, "http://example.com/p", 1, depth=2, parent="http://example.com/")
    frontier.add([page])
    [taken] = frontier.take("w", 1, 0)
    frontier.deliver("w", [ok(taken)])
    [(task, result)] = frontier.take_results()
    assert (task.depth, task.parent, result.outcome) == (2, "http://example.com/", Outcome.OK)


def test_a_lease_the_worker_does_not_know_it_holds_expires_despite_its_heartbeat() -> None:
    # The reply of a get was lost on the way (a connection cut): the worker never saw task 2.
    clock = Clock()
    frontier = Frontier(lease_seconds=30, clock=clock)
    frontier.add(tasks(2))
    view = TaskQueueView(frontier, {}, "w1", capacity=2)
    known, _lost_in_transit = view.get(True, 0)
    for _ in range(3):
        clock.now += 20
        assert view.renew([known.id]) == 1  # the heartbeat names what the worker holds
    assert [lease.task.id for lease in frontier.expire_leases()] == [2]
