"""The Redis broker against a real redis-server: the frontier's rules in Lua, and its failures.

The in-process tests drive :class:`RedisBroker` (the master's side) and
:class:`RedisLink` (a worker's side) against one server, as two machines
would. The process tests run the command line: restarts, a second master,
two crawls in one Redis, and every way of reaching the broker wrongly.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from crawler.broker import Delivery, Lease
from crawler.broker.redis_broker import RedisBroker, RedisLink
from crawler.broker.redis_conn import BrokerSpec
from crawler.errors import AuthenticationFailed, BrokerRefused, MasterError, MasterUnreachable
from crawler.messages import Outcome, Policy, Result, Task
from tests.conftest import finish, run_crawler, start_crawler
from tests.helpers import (
    assert_each_url_once_and_ok,
    manifest_lines,
    seeds_file,
    slow_site,
    wait_for_text,
    wait_until,
)
from tests.redis_server import RedisServer, free_port, make_certificates
from tests.site import Site

SPEC_TIMEOUT = 2.0


def tasks(count: int, host: str = "a.example", first: int = 1) -> list[Task]:
    return [Task(number, f"http://{host}/{number}.png", 1) for number in range(first, first + count)]


def ok(task: Task, worker: str = "w1") -> Result:
    return Result(task.id, task.url, Outcome.OK, path=f"a/{task.id}.png", bytes=3, attempt=task.attempt, worker=worker)


def turn(master: RedisBroker) -> tuple[list[Delivery], list[Lease]]:
    """What one turn of the master's loop asks of its broker."""
    results = master.take_results()
    expired = master.expire_leases()
    master.promote_due()
    master.acknowledge()
    return results, expired


class Brokers:
    """A master's broker and workers' links on one real Redis."""

    def __init__(self, server: RedisServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.made: list[RedisBroker] = []

    def spec(self, crawl: str = "t", url: str | None = None) -> BrokerSpec:
        return BrokerSpec(url or self.server.url, crawl, None, SPEC_TIMEOUT)

    def master(
        self, policy: Policy | None = None, crawl: str = "t", recorded: frozenset[int] = frozenset(), **options: float
    ) -> RedisBroker:
        folder = self.folder / crawl
        folder.mkdir(exist_ok=True)
        broker = RedisBroker(
            self.spec(crawl),
            policy or Policy(),
            folder,
            lambda ids: {task_id for task_id in ids if task_id in recorded},
            per_host=int(options.get("per_host", 0)),
            host_delay=options.get("host_delay", 0.0),
        )
        self.made.append(broker)
        return broker

    def link(self, worker: str = "w1", capacity: int = 4, crawl: str = "t") -> RedisLink:
        return RedisLink(self.spec(crawl), worker, capacity)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url)


@pytest.fixture
def brokers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Brokers]:
    made = Brokers(redis_server, tmp_path)
    yield made
    for broker in made.made:
        broker.shutdown()


def test_tasks_travel_as_json_are_leased_delivered_and_acknowledged(brokers: Brokers) -> None:
    master = brokers.master(Policy(retries=7))
    master.add(tasks(3))
    link = brokers.link()
    assert link.policy().retries == 7
    taken = link.get(True, 1.0, 2, 0)
    assert [task.id for task in taken] == [1, 2]
    assert turn(master) == ([], [])  # a turn of the master's loop, which counts the window too
    assert master.counts() == (1, 3, 2, False)
    stored = brokers.client().hgetall("crawler:{t}:tasks")
    assert json.loads(stored[b"3"]) == [3, "http://a.example/3.png", 1, 0, False, None, None, None, None]  # data
    assert link.renew([1, 2, 3]) == 2  # 3 is not leased to it
    link.put([ok(taken[0])])
    master.wait_for_results(1.0)
    [(task, result)] = master.take_results()
    assert task == taken[0] and result == ok(taken[0])
    master.acknowledge()
    assert brokers.client().llen("crawler:{t}:inbox") == 1  # recorded: dropped with the next take
    assert master.take_results() == []
    assert brokers.client().llen("crawler:{t}:inbox") == 0
    assert master.counts().in_play == 2
    assert not link.empty()
    master.finish()
    assert link.empty()
    assert master.workers_not_told(30) == []


def test_a_per_host_cap_and_a_pace_hold_across_workers(brokers: Brokers) -> None:
    master = brokers.master(per_host=1)
    master.add(tasks(3, "a.example") + tasks(1, "b.example", first=10))
    first, second = brokers.link("w1"), brokers.link("w2")
    assert sorted(task.id for task in first.get(False, 0, 4, 0)) == [1, 10]  # one of each host
    with pytest.raises(queue.Empty):
        second.get(True, 0.2, 4, 0)  # both hosts are at their cap
    turn(master)
    assert master.counts().starved
    first.put([ok(Task(1, "http://a.example/1.png", 1))])
    assert [task.id for task in second.get(True, 1.0, 4, 0)] == [2]
    paced = brokers.master(crawl="paced")
    paced.add(tasks(2, "slow.example"))
    paced.set_host_delay("slow.example", 0.5)
    link = brokers.link(crawl="paced")
    started = time.monotonic()
    assert len(link.get(True, 1.0, 4, 0)) == 1
    assert len(link.get(True, 2.0, 4, 0)) == 1
    assert time.monotonic() - started >= 0.45  # on the server's clock, whatever this machine's says


def test_an_expired_lease_comes_back_and_a_late_result_is_dropped(brokers: Brokers) -> None:
    master = brokers.master(Policy(lease_seconds=0.3))
    master.add(tasks(2))
    slow, dead = brokers.link("slow", capacity=1), brokers.link("dead", capacity=1)
    [kept] = slow.get(False, 0, 1, 0)
    [lost] = dead.get(False, 0, 1, 0)
    time.sleep(0.2)
    assert slow.renew([kept.id, lost.id]) == 1  # the dead worker's lease is not another's to renew
    time.sleep(0.2)
    _results, expired = turn(master)
    assert [(lease.task, lease.worker) for lease in expired] == [(lost, "dead")]
    dead.put([ok(lost, "dead")])  # out of play now: a late duplicate
    assert turn(master) == ([], [])
    assert master.counts() == (0, 1, 1, False)


def test_a_worker_leaving_hands_back_its_urls_at_the_front(brokers: Brokers) -> None:
    master = brokers.master()
    master.add(tasks(4))
    quitter = brokers.link("quitter")
    assert len(quitter.get(False, 0, 2, 0)) == 2
    assert quitter.release_all() == 2
    with pytest.raises(queue.Empty):
        quitter.get(False, 0, 2, 0)  # it is leaving: given nothing more
    assert [task.id for task in brokers.link("other").get(False, 0, 4, 0)] == [1, 2, 3, 4]


def test_a_retry_waits_for_its_time(brokers: Brokers) -> None:
    master = brokers.master()
    master.retry_later(Task(5, "http://a.example/5.png", 2), 0.3)
    link = brokers.link()
    turn(master)  # promotes the retries that are due
    with pytest.raises(queue.Empty):
        link.get(False, 0, 1, 0)
    time.sleep(0.35)
    turn(master)
    assert link.get(False, 0, 1, 0) == [Task(5, "http://a.example/5.png", 2)]


def test_malformed_entries_fail_their_url_and_crash_nothing(brokers: Brokers) -> None:
    master = brokers.master()
    master.add(tasks(3))
    client = brokers.client()
    client.hset("crawler:{t}:tasks", "1", b"\x80cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle, as an attacker's
    link = brokers.link()
    assert [task.id for task in link.get(False, 0, 4, 0)] == [2, 3]  # 1 is failed at once, not run
    # Another program delivers garbage for 2 through the same script a worker uses.
    link._scripts.deliver(args=["crawler:{t}:", "w1", 2, '{"not": "a result"}'])
    link.put([ok(Task(3, "http://a.example/3.png", 1))])
    master.wait_for_results(1.0)
    results = {task.id: result for task, result in master.take_results()}
    assert results[1].outcome == Outcome.FAILED and "malformed task in the broker" in str(results[1].error)
    assert results[2].outcome == Outcome.FAILED and "malformed result in the broker" in str(results[2].error)
    assert results[3].outcome == Outcome.OK


def test_a_new_master_takes_over_what_the_first_left_in_redis(brokers: Brokers) -> None:
    first = brokers.master()
    first.add(tasks(5))
    link = brokers.link()
    held = link.get(False, 0, 3, 0)
    link.put([ok(held[0]), ok(held[1])])
    first._lock.release()  # as if it died: its lock lapses, its keys stay
    # The result for 1 was recorded before the crash, not yet acknowledged.
    second = brokers.master(recorded=frozenset({1}))
    assert second.counts().in_play == 4  # 2 waiting in the inbox, 3 still leased, 4 and 5 ready
    second.add(tasks(4, first=2))  # the backlog offers every pending URL again: those in Redis are skipped
    [(task, result)], _expired = turn(second)
    assert task.id == 2 and result.outcome == Outcome.OK
    assert second.counts().ready == 2
    assert link.renew([held[2].id]) == 1  # its lease survived the change of master


def test_redis_emptied_mid_crawl_gets_every_url_in_play_again(brokers: Brokers) -> None:
    master = brokers.master()
    master.add(tasks(3))
    link = brokers.link()
    link.get(False, 0, 1, 0)
    brokers.server.restart_empty()
    with pytest.raises(MasterError):  # a link to the emptied crawl says so
        brokers.link()
    turn(master)  # the master's turn notices, and publishes the crawl again
    again = brokers.link("w2")
    assert sorted(task.id for task in again.get(False, 0, 4, 0)) == [1, 2, 3]


def test_a_second_master_refuses_while_the_first_renews_its_lock(brokers: Brokers) -> None:
    brokers.master()
    started = time.monotonic()
    with pytest.raises(MasterError, match="already has a live master"):
        brokers.master()
    assert time.monotonic() - started >= 5  # it waited for a dead master's lock to lapse


def test_wrong_password_unreachable_and_forbidden_are_errors_of_their_own(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="right-password").start()
    try:
        wrong = BrokerSpec(server.url.replace("right-password", "wrong-password"), "t", None, SPEC_TIMEOUT)
        with pytest.raises(AuthenticationFailed, match="refused the login") as refused:
            RedisLink(wrong, "w1", 1)
        assert "wrong-password" not in str(refused.value)
        server.command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+info", "+ping", "+client")
        reader = BrokerSpec(f"unix://reader@{server.socket}?password=pw", "t", None, SPEC_TIMEOUT)
        with pytest.raises(BrokerRefused, match="does not let this user"):
            RedisBroker(reader, Policy(), tmp_path, set)
    finally:
        server.close()
    nobody = BrokerSpec(f"redis://127.0.0.1:{free_port()}", "t", None, 0.5)
    with pytest.raises(MasterUnreachable, match="no broker answered"):
        RedisLink(nobody, "w1", 1)


# --- the command line -----------------------------------------------------


def test_run_over_redis_with_the_url_in_the_environment(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port(), password="s3cret-pw").start()
    try:
        urls = slow_site(site, 30, delay=0.01)
        out = tmp_path / "out"
        monkeypatch.setenv("CRAWLER_BROKER", server.url)
        status, log = finish(start_crawler("run", str(seeds_file(tmp_path, urls)), "-o", str(out), "-w", "2", "-v"))
        assert status == 0, log
        assert_each_url_once_and_ok(out, urls)
        assert "redis://:***@127.0.0.1" in log
        assert "s3cret-pw" not in log and "s3cret-pw" not in (out / "manifest.jsonl").read_text()
        assert "s3cret-pw" not in (out / ".crawler" / "status.json").read_text()
    finally:
        server.close()


def test_redis_restarted_empty_mid_crawl_loses_nothing(tmp_path: Path, site: Site, redis_server: RedisServer) -> None:
    urls = slow_site(site, 60, delay=0.1)
    out = tmp_path / "out"
    log = tmp_path / "master.log"
    broker = ["--broker", redis_server.url, "--crawl", "photos"]
    master = start_crawler("master", str(seeds_file(tmp_path, urls)), "-o", str(out), *broker, log=log)
    wait_for_text(log, "serving on")
    workers = [start_crawler("worker", *broker, "-o", str(out), "-t", "4", "--connect-timeout", "20") for _ in "ab"]
    wait_until(lambda: len(manifest_lines(out)) >= 10, "ten URLs to be done")
    redis_server.restart_empty()
    for worker in workers:
        assert finish(worker)[0] == 0
    status, error = finish(master)
    assert status == 0, error
    assert "lost the crawl" in error and "feeding" in error
    assert_each_url_once_and_ok(out, urls)


def test_a_second_master_for_a_live_crawl_exits_2_and_another_crawl_runs_beside(
    tmp_path: Path, site: Site, redis_server: RedisServer
) -> None:
    urls = slow_site(site, 40, delay=0.1)
    other_urls = [site.add(f"/other/{number}.png", body=bytes(3000)) for number in range(20)]
    broker = ["--broker", redis_server.url]
    first_log = tmp_path / "first.log"
    first = start_crawler(
        "master", str(seeds_file(tmp_path, urls)), "-o", str(tmp_path / "out"), *broker, "--crawl", "one", log=first_log
    )
    wait_for_text(first_log, "serving on")
    (tmp_path / "b").mkdir()
    second = run_crawler("master", str(seeds_file(tmp_path / "b", urls)), "-o", str(tmp_path / "b"), *broker,
                         "--crawl", "one")  # fmt: skip
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == (
        f"crawler: error: crawl one already has a live master at {redis_server.url} (crawl one)"
    )
    # Another name is another crawl: its run, on the same Redis, sees none of crawl one's URLs.
    beside = run_crawler("run", str(seeds_file(tmp_path / "b", other_urls)), "-o", str(tmp_path / "other"),
                         *broker, "--crawl", "two", "-w", "1")  # fmt: skip
    assert beside.returncode == 0, beside.stderr
    assert_each_url_once_and_ok(tmp_path / "other", other_urls)
    worker = start_crawler("worker", *broker, "--crawl", "one", "-o", str(tmp_path / "out"), "-t", "4")
    assert finish(worker)[0] == 0
    assert finish(first)[0] == 0
    assert_each_url_once_and_ok(tmp_path / "out", urls)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1/", "not a broker URL: http://127.0.0.1:1/ (expected redis://, rediss:// or unix://)"),
        ("redis://:pw@127.0.0.1:notaport", "not a broker URL: redis://:***@127.0.0.1:notaport"),
        ("unix://", "not a broker URL: unix:// (expected unix:///path/to/redis.sock)"),
    ],
)
def test_a_url_that_is_no_broker_exits_2_with_one_line(tmp_path: Path, url: str, message: str) -> None:
    result = run_crawler("worker", "--broker", url, "-o", str(tmp_path / "out"), "--connect-timeout", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"crawler: error: {message}"


def test_unreachable_wrong_password_and_not_redis_exit_2_with_one_line(tmp_path: Path, site: Site) -> None:
    port = free_port()
    unreachable = run_crawler("worker", "--broker", f"redis://127.0.0.1:{port}", "--connect-timeout", "1", "-o",
                              str(tmp_path / "out"))  # fmt: skip
    assert unreachable.returncode == 2
    assert (
        unreachable.stderr.strip()
        .splitlines()[-1]
        .startswith(f"crawler: error: no master at redis://127.0.0.1:{port} (crawl default) after 1 s: no broker")
    )
    server = RedisServer(tmp_path / "redis", password="right").start()
    try:
        wrong = run_crawler("master", str(seeds_file(tmp_path, ["http://a.example/"])), "-o", str(tmp_path / "out"),
                            "--broker", f"unix://{server.socket}?password=wrong-pw")  # fmt: skip
    finally:
        server.close()
    assert wrong.returncode == 2
    [line] = wrong.stderr.strip().splitlines()[-1:]
    assert "refused the login" in line and "wrong-pw" not in wrong.stderr and "Traceback" not in wrong.stderr
    web = run_crawler("worker", "--broker", f"redis://127.0.0.1:{site.port}", "--connect-timeout", "1", "-o",
                      str(tmp_path / "out"))  # fmt: skip
    # An HTTP server answers the first command with an error page, or closes the connection first:
    # which one redis-py sees first depends on timing.
    assert web.returncode == 2 and "Traceback" not in web.stderr
    last = web.stderr.strip().splitlines()[-1]
    assert f"redis://127.0.0.1:{site.port} (crawl default) does not answer like Redis" in last or (
        f"no broker answered at redis://127.0.0.1:{site.port}" in last
    )


def test_a_redis_older_than_6_2_is_refused(tmp_path: Path) -> None:
    """A server that answers like Redis 6.0 (a few lines of RESP on a real socket): no such binary here."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(4096):
                if data.upper().startswith(b"*2\r\n$5\r\nHELLO"):  # RESP3's handshake, as Redis 6.0 answers it
                    connection.sendall(b"%3\r\n+server\r\n+redis\r\n+version\r\n+6.0.16\r\n+proto\r\n:3\r\n")
                elif b"INFO" in data.upper():
                    body = b"# Server\r\nredis_version:6.0.16\r\n"
                    connection.sendall(b"$%d\r\n%s\r\n" % (len(body), body))
                else:
                    connection.sendall(b"+OK\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    result = run_crawler("worker", "--broker", f"redis://127.0.0.1:{port}", "-o", str(tmp_path / "out"))
    listener.close()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"crawler: error: the broker at redis://127.0.0.1:{port} (crawl default) runs Redis 6.0.16; "
        "crawler needs Redis 6.2 or newer"
    )


def test_a_tls_broker_with_a_private_ca(tmp_path: Path, site: Site) -> None:
    certificates = make_certificates(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis", port=free_port(), tls=certificates).start()
    try:
        urls = slow_site(site, 10, delay=0.0)
        seeds, out = seeds_file(tmp_path, urls), tmp_path / "out"
        untrusted = run_crawler("run", str(seeds), "-o", str(out), "--broker", server.url, "--connect-timeout", "1")
        assert untrusted.returncode == 2 and "Traceback" not in untrusted.stderr
        assert "certificate verify failed" in untrusted.stderr.strip().splitlines()[-1]
        ca = str(certificates / "ca.crt")
        trusted = run_crawler("run", str(seeds), "-o", str(out), "--broker", server.url, "--broker-ca", ca, "-w", "1")
        assert trusted.returncode == 0, trusted.stderr
        assert_each_url_once_and_ok(out, urls)
    finally:
        server.close()
