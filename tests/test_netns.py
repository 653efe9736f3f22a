"""Multi-host tests: a master, two workers, a web server (and a Redis) on their own network namespaces.

Each host has its own address on a private bridge; links between them get
real faults (see tests/netns.py): delay and jitter through a relay, packet
loss, a partition, a host that vanishes. Every scenario runs on both
brokers. The output folder is shared, as it would be on NFS.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import LOGS, finish
from tests.helpers import wait_for_text, wait_until
from tests.netns import Host, Network, wait_for_port
from tests.redis_server import redis_binary

AUTHKEY = "netns-test-key"
MASTER_PORT, REDIS_PORT, WEB_PORT = 5000, 6379, 8080
RELAYED = {"master": 15000, "redis": 16379, "web": 18080}


class Cluster:
    """The hosts of one scenario and the processes on them."""

    def __init__(self, network: Network, tmp: Path, broker: str, files: int, size: int = 20_000) -> None:
        self.network = network
        self.tmp = tmp
        self.broker = broker
        self.master = network.host("master")
        self.w1, self.w2 = network.host("w1"), network.host("w2")
        self.web = network.host("web")
        self.redis = network.host("redis") if broker == "redis" else None
        self.out = tmp / "out"
        self.corpus = self._make_corpus(files, size)
        self.hits_log = tmp / "hits.log"
        self.web.python("-m", "tests.web_server", "--bind", self.web.address, "--port", str(WEB_PORT),
                        "--root", str(tmp / "www"), "--log", str(self.hits_log), log=tmp / "web.log")  # fmt: skip
        wait_for_port(self.web, WEB_PORT)
        if self.redis is not None:
            command = [redis_binary(), "--port", str(REDIS_PORT), "--bind", self.redis.address,
                       "--protected-mode", "no", "--save", "", "--appendonly", "no"]  # fmt: skip
            self.redis.start(command, log=tmp / "redis.log")
            wait_for_port(self.redis, REDIS_PORT)
        self.relay: Host | None = None

    def _make_corpus(self, files: int, size: int) -> dict[str, str]:
        folder = self.tmp / "www" / "f"
        folder.mkdir(parents=True)
        sums = {}
        for number in range(files):
            body = os.urandom(size)
            (folder / f"{number}.bin").write_bytes(body)
            sums[f"/f/{number}.bin"] = hashlib.sha256(body).hexdigest()
        return sums

    def delay(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Route the master, Redis and web links through a relay that holds each chunk ``ms`` each way."""
        routes = {
            RELAYED["master"]: f"{self.master.address}:{MASTER_PORT}",
            RELAYED["web"]: f"{self.web.address}:{WEB_PORT}",
        }
        if self.redis is not None:
            routes[RELAYED["redis"]] = f"{self.redis.address}:{REDIS_PORT}"
        self.relay = self.network.relay(routes, ms, jitter_ms, log=self.tmp / "relay.log")

    def _where(self, service: str) -> str:
        """HOST:PORT of a service as the others reach it: through the relay if there is one."""
        if self.relay is not None:
            return f"{self.relay.address}:{RELAYED[service]}"
        host = {"master": self.master, "redis": self.redis, "web": self.web}[service]
        assert host is not None
        return f"{host.address}:{ {'master': MASTER_PORT, 'redis': REDIS_PORT, 'web': WEB_PORT}[service] }"

    @property
    def urls(self) -> list[str]:
        return [f"http://{self._where('web')}{path}" for path in self.corpus]

    def start_master(self, *options: str, log: str = "master.log") -> subprocess.Popen[str]:
        seeds = self.tmp / "seeds.txt"
        seeds.write_text("\n".join(self.urls) + "\n")
        where = ["--bind", f"0.0.0.0:{MASTER_PORT}"] if self.broker == "manager" else self._broker_args()
        process = self.master.python("-m", "crawler", "master", str(seeds), "-o", str(self.out), *where, *options,
                                     log=self.tmp / log, env={"CRAWLER_AUTHKEY": AUTHKEY})  # fmt: skip
        LOGS[process.pid] = self.tmp / log  # for finish(), which returns the log's text
        wait_for_text(self.tmp / log, "serving on")
        return process

    def start_worker(self, host: Host, *options: str, log: str) -> subprocess.Popen[str]:
        where = ["--connect", self._where("master")] if self.broker == "manager" else self._broker_args()
        process = host.python("-m", "crawler", "worker", *where, "-o", str(self.out), "-v", *options,
                              log=self.tmp / log, env={"CRAWLER_AUTHKEY": AUTHKEY})  # fmt: skip
        LOGS[process.pid] = self.tmp / log  # for finish(), which returns the log's text
        return process

    def _broker_args(self) -> list[str]:
        return ["--broker", f"redis://{self._where('redis')}/0", "--crawl", "netns"]

    def hits(self) -> collections.Counter[str]:
        lines = self.hits_log.read_text().splitlines() if self.hits_log.exists() else []
        return collections.Counter(line.split()[1] for line in lines if line.startswith("GET "))

    def manifest(self) -> list[dict[str, object]]:
        path = self.out / "manifest.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def assert_every_url_once(self, *, all_ok: bool = True) -> None:
        """One final line per URL; every ok file whole and identical to the corpus; nothing half-written."""
        lines = self.manifest()
        per_url = collections.Counter(str(line["url"]) for line in lines)
        assert set(per_url) == set(self.urls), set(self.urls) ^ set(per_url)
        assert all(count == 1 for count in per_url.values()), per_url.most_common(3)
        for line in lines:
            if all_ok:
                assert line["status"] == "ok", line
            if line["status"] == "ok":
                body = (self.out / str(line["path"])).read_bytes()
                assert hashlib.sha256(body).hexdigest() == self.corpus["/" + str(line["url"]).split("/", 3)[3]]
            else:
                assert line["error"], line
        assert not list(self.out.rglob("*.part"))


@pytest.fixture(params=["manager", "redis"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Each scenario runs on both brokers."""
    return str(request.param)


MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(network: Network, tmp_path: Path, broker_kind: str) -> MakeCluster:
    def build(files: int, size: int = 20_000) -> Cluster:
        return Cluster(network, tmp_path, broker_kind, files, size)

    return build


def test_a_crawl_across_hosts_with_delay_and_loss_on_every_link(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(60)
    cluster.delay(50, jitter_ms=10)
    for host in (cluster.master, cluster.w1, cluster.w2, cluster.web, cluster.redis):
        if host is not None:
            host.loss(2)
    # Both workers are up and asking before the master is: neither can miss the whole crawl.
    workers = [cluster.start_worker(host, "-t", "4", log=f"{host.name}.log") for host in (cluster.w1, cluster.w2)]
    for host in (cluster.w1, cluster.w2):
        wait_for_text(cluster.tmp / f"{host.name}.log", "no master at")
    master = cluster.start_master("--lease-seconds", "10")
    for worker in workers:
        assert finish(worker, timeout=120)[0] == 0
    assert finish(master, timeout=60)[0] == 0, (cluster.tmp / "master.log").read_text()[-2000:]
    cluster.assert_every_url_once()
    # Both crossed the lossy network to the master; which one fetched what depends on lost SYNs.
    for host in (cluster.w1, cluster.w2):
        assert "connected to" in (cluster.tmp / f"{host.name}.log").read_text()


def test_a_partitioned_worker_loses_its_urls_to_the_other_and_rejoins(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(60)
    cluster.delay(150)  # every download takes a few round trips of 300 ms: the crawl lasts
    master = cluster.start_master("--lease-seconds", "2")
    cut = cluster.start_worker(cluster.w1, "-t", "2", "--connect-timeout", "60", log="w1.log")
    wait_until(lambda: sum(cluster.hits().values()) >= 2, "the first downloads")
    cluster.w1.down()  # three lease periods without a word from w1
    other = cluster.start_worker(cluster.w2, "-t", "2", log="w2.log")
    wait_for_text(cluster.tmp / "master.log", "expired")
    time.sleep(6 - 2)
    cluster.w1.up()
    assert finish(other, timeout=120)[0] == 0
    status, log = finish(master, timeout=60)
    assert status == 0, log[-2000:]
    # w1's connection outlives a 6 s partition (keepalive and call timeouts are longer): it rejoins,
    # its late results count only for URLs not yet final, and it hears the end like the other.
    assert finish(cut, timeout=90)[0] == 0
    cluster.assert_every_url_once()


def test_the_master_vanishes_and_a_restarted_master_finishes_without_refetching(
    make_cluster: MakeCluster, broker_kind: str
) -> None:
    cluster = make_cluster(40)
    cluster.delay(100)
    master = cluster.start_master()
    workers = [
        cluster.start_worker(host, "-t", "2", "--connect-timeout", "5", log=f"{host.name}.log")
        for host in (cluster.w1, cluster.w2)
    ]
    wait_until(lambda: len(cluster.manifest()) >= 5, "five URLs to be recorded")
    cluster.master.blackhole()
    if broker_kind == "manager":
        # Workers notice within the keepalive bound (25 s), try again for --connect-timeout, and exit 2.
        for worker in workers:
            status, log = finish(worker, timeout=90)
            assert status == 2 and "lost the master" in log, log[-1500:]
    else:
        # The broker is elsewhere: workers go on with the URLs already in Redis, then wait for more.
        wait_until(lambda: sum(cluster.hits().values()) >= 40, "every URL in Redis to be fetched", limit=60)
        assert all(worker.poll() is None for worker in workers)
    master.send_signal(signal.SIGKILL)
    master.wait(10)
    cluster.master.heal()
    ok_before = {str(line["url"]).split("/", 3)[3] for line in cluster.manifest() if line["status"] == "ok"}
    restarted = cluster.start_master(log="restarted.log")
    if broker_kind == "manager":
        workers = [cluster.start_worker(cluster.w1, "-t", "4", log="w1-again.log")]
    for worker in workers:
        assert finish(worker, timeout=90)[0] == 0
    status, log = finish(restarted, timeout=60)
    assert status == 0, log[-2000:]
    cluster.assert_every_url_once()
    hits = cluster.hits()
    assert all(hits["/" + path] == 1 for path in ok_before), {path: hits["/" + path] for path in ok_before}


def test_a_lossy_slow_web_server_ends_every_url_and_leaves_nothing_half_written(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(20, size=50_000)
    cluster.delay(300)
    cluster.web.loss(10)
    cluster.web.slow("4mbit")
    master = cluster.start_master("--timeout", "5", "--retries", "4", "--retry-wait", "0.2", "--max-time", "30")
    workers = [cluster.start_worker(host, "-t", "4", log=f"{host.name}.log") for host in (cluster.w1, cluster.w2)]
    for worker in workers:
        assert finish(worker, timeout=170)[0] == 0
    status, log = finish(master, timeout=60)
    assert status in (0, 1), log[-2000:]  # 1 only if some URL used up its retries: then it says why
    cluster.assert_every_url_once(all_ok=False)
    assert sum(line["status"] == "ok" for line in cluster.manifest()) >= 15
