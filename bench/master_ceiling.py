#!/usr/bin/env python3
"""How many URLs/s one master moves when workers answer instantly (no HTTP).

Everything but the download is real: the seed file is streamed into the
SQLite state, URLs are leased in batches through the manager, results come
back through the result queue, final states are committed and the manifest
is written. K worker processes take batches and answer each URL at once.

    python bench/master_ceiling.py --urls 200000 --workers 4
    python bench/master_ceiling.py --urls 200000 --workers 4 --broker redis://127.0.0.1:6379

With ``--broker`` the queues live in that Redis (the Lua scripts, JSON on the
wire) and Redis's peak ``used_memory`` during the run is reported too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler.backlog import Backlog
from crawler.broker import Broker, Connector
from crawler.broker.manager import ManagerBroker, ManagerConnector
from crawler.broker.redis_broker import RedisBroker, RedisConnector
from crawler.broker.redis_conn import BrokerSpec
from crawler.broker.transport import parse_address
from crawler.master import Master, MasterConfig
from crawler.messages import Outcome, Policy, Result
from crawler.output import CrawlOutput
from crawler.rules import Scope
from crawler.seeds import read_seeds


def instant_worker(address: str, authkey: bytes, name: str, capacity: int, broker_url: str | None) -> None:
    """The worker loop with the download replaced by an immediate answer."""
    connector: Connector
    if broker_url:
        connector = RedisConnector(BrokerSpec(broker_url, "ceiling"))
    else:
        connector = ManagerConnector(parse_address(address), authkey)
    link = connector(name, capacity)
    while not link.empty():
        try:
            batch = link.get(True, 1.0, capacity, 0)
        except queue.Empty:
            continue
        link.put(
            [
                Result(
                    item.id,
                    item.url,
                    Outcome.OK,
                    path=f"x/{item.id}",
                    bytes=1,
                    sha256="0" * 64,
                    content_type="image/png",
                    http_status=200,
                    attempt=item.attempt,
                    worker=name,
                )
                for item in batch
            ]
        )


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries it across exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256, help="URLs per get (a worker's capacity)")
    parser.add_argument("--broker", help="a Redis URL: use the Redis broker instead of the manager")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        seeds = root / "seeds.txt"
        with open(seeds, "w") as file:
            file.writelines(f"http://host{number % 97}.example/img/{number}.jpg\n" for number in range(args.urls))
        policy, authkey = Policy(), os.urandom(16)
        config = MasterConfig(policy=policy, show_progress=False, linger_seconds=2)
        started = time.perf_counter()
        output = CrawlOutput.open(root / "out", policy.depth, policy.lease_seconds)
        broker: Broker
        if args.broker:
            state = output.state
            broker = RedisBroker(BrokerSpec(args.broker, "ceiling"), policy, state.path.parent, state.final_ids)
            memory = RedisMemory(args.broker)
        else:
            broker = ManagerBroker(("127.0.0.1", 0), authkey, policy)
        with open(seeds) as lines:
            scope = Scope()
            master = Master(config, output, broker, Backlog(output.state, read_seeds(lines), scope), scope)
            context = multiprocessing.get_context("spawn")
            workers = [
                context.Process(
                    target=instant_worker, args=(broker.address, authkey, f"w{index}", args.batch, args.broker)
                )
                for index in range(args.workers)
            ]
            for worker in workers:
                worker.start()
            status = master.run()
            elapsed = time.perf_counter() - started
            for worker in workers:
                worker.join(10)
        broker.shutdown()
        output.close()
        peak_mb = peak_rss_mb()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        master_cpu = usage.ru_utime + usage.ru_stime
        redis_note = f" redis_peak_used_memory={memory.stop() / 2**20:.1f}MB" if args.broker else ""
        print(
            f"urls={args.urls} workers={args.workers} batch={args.batch} status={status} "
            f"ok={master.counts.ok} elapsed={elapsed:.2f}s rate={args.urls / elapsed:,.0f} URLs/s "
            f"master_cpu={master_cpu:.1f}s master_peak_rss={peak_mb:.0f}MB{redis_note}"
        )


class RedisMemory:
    """Samples Redis's used_memory every 0.1 s on a thread; ``stop`` returns the peak in bytes."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self._peak = max(self._peak, int(self._client.info("memory")["used_memory"]))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self._peak


if __name__ == "__main__":
    main()
